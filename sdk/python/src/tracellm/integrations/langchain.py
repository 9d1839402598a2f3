"""LangChain callback handler: chains, chat models and LLMs, tools and retrievers as spans.

    from tracellm.integrations.langchain import TraceLLMCallbackHandler

    handler = TraceLLMCallbackHandler()
    chain.invoke({"question": "..."}, config={"callbacks": [handler]})

Each top-level run becomes one trace (or nests under the current ``@trace``
span when there is one); child runs nest by LangChain's ``parent_run_id``.
Requires ``langchain-core`` (``pip install tracellm[langchain]``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence
from uuid import UUID

try:
    from langchain_core.callbacks.base import BaseCallbackHandler
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracellm.integrations.langchain needs langchain-core: pip install 'tracellm[langchain]'"
    ) from exc

from .._config import get_config
from .._core import _CURRENT, Span, end_span, record_exception, start_span
from .._serialize import capture

logger = logging.getLogger("tracellm")

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function"}
_HIDDEN_TAG = "langsmith:hidden"


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _run_name(serialized: Optional[Dict[str, Any]], kwargs: Dict[str, Any], default: str) -> str:
    name = kwargs.get("name")
    if name:
        return str(name)
    if serialized:
        if serialized.get("name"):
            return str(serialized["name"])
        ident = serialized.get("id")
        if isinstance(ident, (list, tuple)) and ident:
            return str(ident[-1])
    return default


def _message(message: Any) -> Dict[str, Any]:
    """A LangChain message as an OpenAI-style message dict."""
    if isinstance(message, dict):
        return message
    kind = _get(message, "type") or "chat"
    role = _ROLES.get(kind) or _get(message, "role") or kind
    out: Dict[str, Any] = {"role": role, "content": _get(message, "content")}
    tool_calls = _get(message, "tool_calls")
    if tool_calls:
        calls = []
        for call in tool_calls:
            arguments = _get(call, "args")
            try:
                arguments = json.dumps(arguments)
            except (TypeError, ValueError):
                arguments = str(arguments)
            calls.append(
                {"id": _get(call, "id"), "type": "function",
                 "function": {"name": _get(call, "name"), "arguments": arguments}}
            )
        out["tool_calls"] = calls
    tool_call_id = _get(message, "tool_call_id")
    if tool_call_id:
        out["tool_call_id"] = tool_call_id
    name = _get(message, "name")
    if name:
        out["name"] = name
    return out


def _usage_from_message(message: Any) -> Optional[Dict[str, Any]]:
    usage = _get(message, "usage_metadata")
    if not usage:
        return None
    return {
        "prompt": _get(usage, "input_tokens"),
        "completion": _get(usage, "output_tokens"),
        "total": _get(usage, "total_tokens"),
    }


class TraceLLMCallbackHandler(BaseCallbackHandler):  # type: ignore[misc]
    """Records LangChain runs as TraceLLM spans.

    ``trace_name`` names the traces (default: the top-level run's name);
    ``tags``, ``metadata``, ``session_id`` and ``user_id`` are set on each trace;
    ``api_key`` and ``project`` route the traces to another project than the
    configured one. One handler may serve many concurrent runs.
    """

    raise_error = False
    run_inline = True

    def __init__(
        self,
        *,
        trace_name: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        session_id: Optional[str] = None,
        user_id: Optional[str] = None,
        api_key: Optional[str] = None,
        project: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.trace_name = trace_name
        self.tags = list(tags) if tags else None
        self.metadata = dict(metadata) if metadata else None
        self.session_id = session_id
        self.user_id = user_id
        self.api_key = api_key
        self.project = project
        self._lock = threading.Lock()
        self._spans: Dict[UUID, Span] = {}
        self._aliases: Dict[UUID, Optional[UUID]] = {}  # hidden runs -> their parent
        self._started: Dict[UUID, float] = {}
        self._first_token: Dict[UUID, bool] = {}

    # ----- bookkeeping ----------------------------------------------------

    def _parent(self, parent_run_id: Optional[UUID]) -> Optional[Span]:
        with self._lock:
            seen = 0
            while parent_run_id is not None and seen < 100:
                span = self._spans.get(parent_run_id)
                if span is not None:
                    return span
                if parent_run_id not in self._aliases:
                    break
                parent_run_id = self._aliases[parent_run_id]
                seen += 1
        return None

    def _open(
        self,
        run_id: UUID,
        parent_run_id: Optional[UUID],
        name: str,
        kind: str,
        tags: Optional[List[str]],
        metadata: Optional[Dict[str, Any]],
    ) -> Optional[Span]:
        if not get_config().enabled:
            return None
        try:
            parent = self._parent(parent_run_id)
            if parent is None and parent_run_id is None:
                parent = _CURRENT.get()
            if parent is None:
                span = start_span(
                    name,
                    kind,
                    None,
                    trace_name=self.trace_name or name,
                    api_key=self.api_key,
                    project=self.project,
                    tags=self.tags,
                    metadata=self.metadata,
                    session_id=self.session_id,
                    user_id=self.user_id,
                )
            else:
                span = start_span(name, kind, parent)
            if tags:
                visible = [t for t in tags if not str(t).startswith("seq:") and t != _HIDDEN_TAG]
                if visible:
                    span.set_attribute("langchain.tags", visible)
            if metadata:
                shown = {k: v for k, v in metadata.items() if not str(k).startswith("ls_")}
                if shown:
                    span.set_attribute("langchain.metadata", shown)
            span.set_attribute("langchain.run_id", str(run_id))
            with self._lock:
                self._spans[run_id] = span
            return span
        except Exception:
            logger.debug("TraceLLM: could not open a LangChain span", exc_info=True)
            return None

    def _take(self, run_id: UUID) -> Optional[Span]:
        with self._lock:
            self._started.pop(run_id, None)
            self._first_token.pop(run_id, None)
            return self._spans.pop(run_id, None)

    def _close(self, run_id: UUID, output: Any = None, has_output: bool = False) -> None:
        span = self._take(run_id)
        if span is None:
            with self._lock:
                self._aliases.pop(run_id, None)
            return
        try:
            if has_output and get_config().capture_content:
                span.output = capture(output, get_config().max_field_chars)
            end_span(span)
        except Exception:
            logger.debug("TraceLLM: could not close a LangChain span", exc_info=True)

    def _error(self, run_id: UUID, error: BaseException) -> None:
        span = self._take(run_id)
        if span is None:
            with self._lock:
                self._aliases.pop(run_id, None)
            return
        try:
            record_exception(span, error)
            end_span(span)
        except Exception:
            logger.debug("TraceLLM: could not record a LangChain error", exc_info=True)

    def _input(self, span: Optional[Span], value: Any) -> None:
        if span is not None and get_config().capture_content:
            span.input = capture(value, get_config().max_field_chars)

    # ----- chains -----------------------------------------------------------

    def on_chain_start(
        self,
        serialized: Optional[Dict[str, Any]],
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        if tags and _HIDDEN_TAG in tags:
            with self._lock:
                self._aliases[run_id] = parent_run_id
            return
        name = _run_name(serialized, kwargs, "chain")
        kind = "agent" if "agent" in name.lower() else "chain"
        span = self._open(run_id, parent_run_id, name, kind, tags, metadata)
        self._input(span, inputs)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._close(run_id, outputs, True)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(run_id, error)

    def on_agent_action(self, action: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._event(run_id, "agent_action", {"tool": _get(action, "tool"), "tool_input": _get(action, "tool_input"),
                                             "log": _get(action, "log")})

    def on_agent_finish(self, finish: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._event(run_id, "agent_finish", {"return_values": _get(finish, "return_values"),
                                             "log": _get(finish, "log")})

    def on_text(self, text: str, *, run_id: UUID, **kwargs: Any) -> None:
        self._event(run_id, "text", {"text": text})

    def on_retry(self, retry_state: Any, *, run_id: UUID, **kwargs: Any) -> None:
        outcome = _get(retry_state, "outcome")
        error = None
        try:
            error = outcome.exception() if outcome is not None else None
        except Exception:
            pass
        self._event(run_id, "retry", {"attempt": _get(retry_state, "attempt_number"),
                                      "error": repr(error) if error is not None else None})

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._event(run_id, str(name), {"data": data})

    def _event(self, run_id: UUID, name: str, attributes: Dict[str, Any]) -> None:
        with self._lock:
            span = self._spans.get(run_id)
        if span is not None:
            try:
                span.add_event(name, attributes)
            except Exception:
                pass

    # ----- chat models and LLMs -------------------------------------------

    def _open_llm(
        self,
        serialized: Optional[Dict[str, Any]],
        run_id: UUID,
        parent_run_id: Optional[UUID],
        tags: Optional[List[str]],
        metadata: Optional[Dict[str, Any]],
        kwargs: Dict[str, Any],
    ) -> Optional[Span]:
        name = _run_name(serialized, kwargs, "llm")
        span = self._open(run_id, parent_run_id, name, "llm", tags, metadata)
        if span is None:
            return None
        params = kwargs.get("invocation_params") or {}
        meta = metadata or {}
        model = params.get("model") or params.get("model_name") or meta.get("ls_model_name")
        provider = meta.get("ls_provider") or params.get("_type")
        span.set_model(model, provider)
        settings = {k: v for k, v in params.items() if k in ("temperature", "max_tokens", "top_p", "stop", "stream")}
        if settings:
            span.set_attribute("invocation_params", settings)
        with self._lock:
            self._started[run_id] = time.perf_counter()
        return span

    def on_chat_model_start(
        self,
        serialized: Optional[Dict[str, Any]],
        messages: List[List[Any]],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        span = self._open_llm(serialized, run_id, parent_run_id, tags, metadata, kwargs)
        if span is None:
            return
        try:
            batch = messages[0] if len(messages) == 1 else [m for group in messages for m in group]
            self._input(span, {"messages": [_message(m) for m in batch]})
        except Exception:
            self._input(span, {"messages": messages})

    def on_llm_start(
        self,
        serialized: Optional[Dict[str, Any]],
        prompts: List[str],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        span = self._open_llm(serialized, run_id, parent_run_id, tags, metadata, kwargs)
        self._input(span, {"messages": [{"role": "user", "content": p} for p in prompts]})

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            if self._first_token.get(run_id):
                return
            self._first_token[run_id] = True
            started = self._started.get(run_id)
            span = self._spans.get(run_id)
        if span is not None and started is not None:
            span.set_time_to_first_token((time.perf_counter() - started) * 1000.0)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            span = self._spans.get(run_id)
        if span is not None:
            try:
                self._record_llm_result(span, response)
            except Exception:
                logger.debug("TraceLLM: could not record a LangChain LLM result", exc_info=True)
        self._close(run_id)

    def _record_llm_result(self, span: Span, response: Any) -> None:
        messages: List[Dict[str, Any]] = []
        tokens: Optional[Dict[str, Any]] = None
        model = None
        for generations in _get(response, "generations") or []:
            for generation in generations:
                message = _get(generation, "message")
                if message is not None:
                    messages.append(_message(message))
                    tokens = tokens or _usage_from_message(message)
                    metadata = _get(message, "response_metadata") or {}
                    model = model or metadata.get("model_name") or metadata.get("model")
                else:
                    messages.append({"role": "assistant", "content": _get(generation, "text")})
        llm_output = _get(response, "llm_output") or {}
        usage = llm_output.get("token_usage") or llm_output.get("usage") if isinstance(llm_output, dict) else None
        if usage:
            tokens = {
                "prompt": _get(usage, "prompt_tokens", _get(usage, "input_tokens")),
                "completion": _get(usage, "completion_tokens", _get(usage, "output_tokens")),
                "total": _get(usage, "total_tokens"),
            }
        if isinstance(llm_output, dict):
            model = llm_output.get("model_name") or llm_output.get("model") or model
        if model:
            span.set_model(model)
        if tokens:
            span.set_tokens(tokens.get("prompt"), tokens.get("completion"), tokens.get("total"))
        if get_config().capture_content:
            span.output = capture({"messages": messages}, get_config().max_field_chars)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(run_id, error)

    # ----- tools ------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: Optional[Dict[str, Any]],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        inputs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        name = _run_name(serialized, kwargs, "tool")
        span = self._open(run_id, parent_run_id, name, "tool", tags, metadata)
        if span is None:
            return
        arguments: Any = inputs
        if arguments is None:
            try:
                arguments = json.loads(input_str)
            except (TypeError, ValueError):
                arguments = input_str
        span.set_tool(name=name, arguments=arguments)
        self._input(span, arguments)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            span = self._spans.get(run_id)
        if span is not None:
            try:
                result = _get(output, "content") if _get(output, "type") == "tool" else output
                span.set_tool(result=result)
            except Exception:
                pass
        self._close(run_id, output, True)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(run_id, error)

    # ----- retrievers -------------------------------------------------------

    def on_retriever_start(
        self,
        serialized: Optional[Dict[str, Any]],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        span = self._open(run_id, parent_run_id, _run_name(serialized, kwargs, "retriever"), "retriever", tags,
                          metadata)
        self._input(span, {"query": query})

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        docs = [
            {"content": _get(d, "page_content"), "metadata": _get(d, "metadata") or {}}
            for d in documents or []
        ]
        self._close(run_id, {"documents": docs}, True)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(run_id, error)
