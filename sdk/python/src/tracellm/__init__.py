"""TraceLLM Python SDK: record LLM apps and agents as traces in a TraceLLM server.

    from tracellm import trace, trace_tool, wrap_openai

    @trace(name="support-agent")
    def answer(question: str) -> str: ...

Only the standard library is needed; the OpenAI, Groq and LangChain integrations
import their library when they are used.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from ._config import Config, configure, get_config
from ._core import Span, bind_context, current_span, update_trace
from ._decorators import SpanContext, trace, trace_tool
from ._exporter import get_exporter
from ._version import __version__

__all__ = [
    "Config",
    "Span",
    "SpanContext",
    "__version__",
    "bind_context",
    "configure",
    "flush",
    "get_config",
    "get_current_span",
    "get_current_trace_id",
    "shutdown",
    "stats",
    "trace",
    "trace_tool",
    "update_current_trace",
    "wrap_groq",
    "wrap_openai",
]


def flush(timeout: Optional[float] = 10.0) -> bool:
    """Block until every trace finished so far has been exported or dropped.

    Returns ``False`` if ``timeout`` seconds passed first (``None`` waits for ever).
    Traces are exported in the background anyway; call this before a short-lived
    process or a serverless handler returns.
    """
    return get_exporter().flush(timeout)


def shutdown(timeout: Optional[float] = None) -> bool:
    """Export what is pending (within ``timeout``, default ``shutdown_timeout``) and stop.

    Runs by itself at interpreter exit; traces finished afterwards are dropped.
    """
    return get_exporter().shutdown(timeout)


def stats() -> Dict[str, Any]:
    """Exporter counters: queued, enqueued, sent, dropped, rejected, requests, ..."""
    return get_exporter().stats()


def get_current_span() -> Optional[Span]:
    """The span the calling code runs in, or ``None`` outside any trace."""
    return current_span()


def get_current_trace_id() -> Optional[str]:
    """The id of the trace the calling code runs in, or ``None``."""
    span = current_span()
    return None if span is None else span.trace.id


def update_current_trace(
    *,
    name: Optional[str] = None,
    session_id: Optional[str] = None,
    user_id: Optional[str] = None,
    tags: Optional[Iterable[str]] = None,
    metadata: Optional[Dict[str, Any]] = None,
) -> bool:
    """Set trace-level fields (session, user, tags, metadata, name) of the current trace.

    Returns ``False`` when called outside a trace.
    """
    span = current_span()
    if span is None:
        return False
    update_trace(span.trace, name=name, session_id=session_id, user_id=user_id, tags=tags, metadata=metadata)
    return True


def wrap_openai(client: Any, *, stream_usage: bool = False) -> Any:
    """Trace an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` client (returned, patched in place).

    Chat completions, Responses and embeddings calls become ``llm``/``embedding``
    spans with messages, model, tokens, latency and, for streams, time to first
    token. With ``stream_usage=True`` a streamed chat completion that did not ask
    for usage gets ``stream_options={"include_usage": True}`` added, and the
    extra usage-only chunk is consumed by the SDK so the caller's loop sees the
    same chunks as without it.
    """
    from .integrations.openai import wrap_openai as _wrap_openai

    return _wrap_openai(client, stream_usage=stream_usage)


def wrap_groq(client: Any) -> Any:
    """Trace a ``groq.Groq`` or ``groq.AsyncGroq`` client (returned, patched in place)."""
    from .integrations.openai import wrap_groq as _wrap_groq

    return _wrap_groq(client)
