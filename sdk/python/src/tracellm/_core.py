"""Spans, traces and the current-span context.

A trace is the tree of spans of one run. The current span lives in a
``contextvars.ContextVar``: each thread and each asyncio task sees its own value
(tasks inherit a copy of their creator's context), so concurrent work nests
correctly without locks. A trace is handed to the exporter when its root span
ends; a span that ends after that (a thread still running, a generator consumed
late) makes the whole trace be sent again, which the server treats as a replace.
"""

from __future__ import annotations

import contextvars
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, TypeVar

from . import _exporter, _ids
from ._config import get_config
from ._serialize import capture

SPAN_KINDS = frozenset(
    ["llm", "tool", "retriever", "embedding", "agent", "chain", "reranker", "guardrail", "evaluator", "event", "span"]
)

_time_ns = time.time_ns
_CURRENT: "contextvars.ContextVar[Optional[Span]]" = contextvars.ContextVar("tracellm_current_span", default=None)

_STACK_CHARS = 16_000


class TraceData:
    """Trace-level data shared by all spans of one run."""

    __slots__ = (
        "id",
        "name",
        "tags",
        "metadata",
        "session_id",
        "user_id",
        "api_key",
        "project",
        "spans",
        "root",
        "done",
        "pending",
        "dropped_spans",
    )

    def __init__(self, name: str, api_key: Optional[str] = None, project: Optional[str] = None) -> None:
        self.id = _ids.new_trace_id()
        self.name = name
        self.tags: List[str] = []
        self.metadata: Dict[str, Any] = {}
        self.session_id: Optional[str] = None
        self.user_id: Optional[str] = None
        self.api_key = api_key
        self.project = project
        self.spans: List[Span] = []
        self.root: Optional[Span] = None
        self.done = False
        self.pending = False
        self.dropped_spans = 0

    def add_tags(self, tags: Iterable[str]) -> None:
        for tag in tags:
            tag = str(tag)
            if tag not in self.tags:
                self.tags.append(tag)

    def add_metadata(self, metadata: Dict[str, Any]) -> None:
        limit = get_config().max_field_chars
        for key, value in metadata.items():
            self.metadata[str(key)] = capture(value, limit)


class Span:
    """One step of a trace. Returned by ``trace.span(...)`` and :func:`get_current_span`.

    The setters may be called any time before the span ends; values are captured
    (copied into a bounded JSON-compatible form) when they are set.
    """

    __slots__ = (
        "trace",
        "id",
        "parent_id",
        "name",
        "kind",
        "start_ns",
        "end_ns",
        "status",
        "model",
        "provider",
        "input",
        "output",
        "tool",
        "tokens",
        "ttft_ms",
        "error",
        "attributes",
        "events",
    )

    def __init__(self, trace: TraceData, parent_id: Optional[str], name: str, kind: str) -> None:
        self.trace = trace
        self.id = _ids.new_span_id()
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.status = "success"
        self.model: Optional[str] = None
        self.provider: Optional[str] = None
        self.input: Any = None
        self.output: Any = None
        self.tool: Optional[Dict[str, Any]] = None
        self.tokens: Optional[Dict[str, int]] = None
        self.ttft_ms: Optional[float] = None
        self.error: Optional[Dict[str, Any]] = None
        self.attributes: Optional[Dict[str, Any]] = None
        self.events: Optional[List[Dict[str, Any]]] = None
        self.end_ns = 0
        self.start_ns = _time_ns()

    def __repr__(self) -> str:
        return "<tracellm.Span %s %r kind=%s trace=%s>" % (self.id, self.name, self.kind, self.trace.id)

    # ----- identity ------------------------------------------------------

    @property
    def trace_id(self) -> str:
        return self.trace.id

    @property
    def span_id(self) -> str:
        return self.id

    @property
    def ended(self) -> bool:
        return self.end_ns != 0

    # ----- setters ---------------------------------------------------------

    def set_name(self, name: str) -> "Span":
        self.name = str(name)
        return self

    def set_kind(self, kind: str) -> "Span":
        self.kind = kind if kind in SPAN_KINDS else "span"
        return self

    def set_input(self, value: Any) -> "Span":
        if get_config().capture_content:
            self.input = capture(value, get_config().max_field_chars)
        return self

    def set_output(self, value: Any) -> "Span":
        if get_config().capture_content:
            self.output = capture(value, get_config().max_field_chars)
        return self

    def set_attribute(self, key: str, value: Any) -> "Span":
        if self.attributes is None:
            self.attributes = {}
        self.attributes[str(key)] = capture(value, get_config().max_field_chars)
        return self

    def set_attributes(self, attributes: Dict[str, Any]) -> "Span":
        for key, value in attributes.items():
            self.set_attribute(key, value)
        return self

    def set_model(self, model: Optional[str], provider: Optional[str] = None) -> "Span":
        if model is not None:
            self.model = str(model)
        if provider is not None:
            self.provider = str(provider)
        return self

    def set_provider(self, provider: Optional[str]) -> "Span":
        self.provider = None if provider is None else str(provider)
        return self

    def set_tokens(
        self, prompt: Optional[int] = None, completion: Optional[int] = None, total: Optional[int] = None
    ) -> "Span":
        tokens: Dict[str, int] = {}
        for key, value in (("prompt", prompt), ("completion", completion), ("total", total)):
            if value is not None:
                try:
                    tokens[key] = int(value)
                except (TypeError, ValueError):
                    pass
        if "total" not in tokens and "prompt" in tokens and "completion" in tokens:
            tokens["total"] = tokens["prompt"] + tokens["completion"]
        self.tokens = tokens or None
        return self

    def set_time_to_first_token(self, milliseconds: float) -> "Span":
        self.ttft_ms = round(float(milliseconds), 3)
        return self

    def set_tool(self, name: Optional[str] = None, arguments: Any = None, result: Any = None) -> "Span":
        limit = get_config().max_field_chars
        tool = self.tool if self.tool is not None else {"name": self.name}
        if name is not None:
            tool["name"] = str(name)
        if arguments is not None and get_config().capture_content:
            tool["arguments"] = capture(arguments, limit)
        if result is not None and get_config().capture_content:
            tool["result"] = capture(result, limit)
        self.tool = tool
        return self

    def add_event(self, name: str, attributes: Optional[Dict[str, Any]] = None) -> "Span":
        event: Dict[str, Any] = {"name": str(name), "time_ns": _time_ns()}
        if attributes:
            event["attributes"] = capture(attributes, get_config().max_field_chars)
        if self.events is None:
            self.events = []
        self.events.append(event)
        return self

    def set_status(self, status: str) -> "Span":
        self.status = "error" if status == "error" else "success"
        return self

    def record_exception(self, exc: BaseException) -> "Span":
        """Mark the span failed with the exception's type, message and stack."""
        record_exception(self, exc)
        return self

    def update_trace(
        self,
        *,
        name: Optional[str] = None,
        session_id: Optional[str] = None,
        user_id: Optional[str] = None,
        tags: Optional[Iterable[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> "Span":
        """Set trace-level fields of the trace this span belongs to."""
        update_trace(self.trace, name=name, session_id=session_id, user_id=user_id, tags=tags, metadata=metadata)
        return self

    def end(self) -> None:
        """End the span (spans from ``trace.span`` and decorators end by themselves)."""
        end_span(self)


def update_trace(
    trace: TraceData,
    *,
    name: Optional[str] = None,
    session_id: Optional[str] = None,
    user_id: Optional[str] = None,
    tags: Optional[Iterable[str]] = None,
    metadata: Optional[Dict[str, Any]] = None,
) -> None:
    if name is not None:
        trace.name = str(name)
    if session_id is not None:
        trace.session_id = str(session_id)
    if user_id is not None:
        trace.user_id = str(user_id)
    if tags:
        trace.add_tags(tags)
    if metadata:
        trace.add_metadata(metadata)


def exception_info(exc: BaseException) -> Dict[str, Any]:
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable %s>" % type(exc).__name__
    try:
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        stack = ""
    if len(stack) > _STACK_CHARS:
        stack = "…" + stack[-_STACK_CHARS:]
    limit = get_config().max_field_chars
    if len(message) > limit:
        message = message[:limit] + "…[truncated]"
    return {"type": type(exc).__name__, "message": message, "stack": stack}


def record_exception(span: Span, exc: BaseException) -> None:
    try:
        span.status = "error"
        span.error = exception_info(exc)
    except Exception:
        pass


_USE_CURRENT: Any = object()


def start_span(
    name: str,
    kind: str = "span",
    parent: Any = _USE_CURRENT,
    *,
    trace_name: Optional[str] = None,
    api_key: Optional[str] = None,
    project: Optional[str] = None,
    tags: Optional[Iterable[str]] = None,
    metadata: Optional[Dict[str, Any]] = None,
    session_id: Optional[str] = None,
    user_id: Optional[str] = None,
) -> Span:
    """Open a span under ``parent`` (default: the current span; ``None``: a new trace).

    Does not make it current; callers that run user code inside it do that.
    """
    if parent is _USE_CURRENT:
        parent = _CURRENT.get()
    if parent is None:
        trace = TraceData(trace_name or name, api_key, project)
        span = Span(trace, None, name, kind)
        trace.root = span
        if metadata:
            trace.add_metadata(metadata)
    else:
        trace = parent.trace
        span = Span(trace, parent.id, name, kind)
        if metadata:
            span.set_attribute("metadata", metadata)
    if tags:
        trace.add_tags(tags)
    if session_id is not None:
        trace.session_id = str(session_id)
    if user_id is not None:
        trace.user_id = str(user_id)
    return span


def end_span(span: Span) -> None:
    """Close a span; when it is the root, hand the trace to the exporter."""
    if span.end_ns:
        return
    span.end_ns = _time_ns()
    trace = span.trace
    root = trace.root
    if len(trace.spans) >= get_config().max_spans_per_trace and span is not root:
        trace.dropped_spans += 1
        return
    trace.spans.append(span)
    if span is root:
        trace.done = True
        trace.pending = True
        _enqueue(trace)
    elif trace.done and not trace.pending:
        # A span that ended after its root: send the trace again (the server replaces it).
        trace.pending = True
        _enqueue(trace)


def _enqueue(trace: TraceData) -> None:
    _exporter.get_exporter().enqueue(trace)


def current_span() -> Optional[Span]:
    return _CURRENT.get()


F = TypeVar("F", bound=Callable[..., Any])


def bind_context(fn: F) -> F:
    """Wrap ``fn`` to run in a copy of the caller's context.

    Threads do not inherit context variables; pass ``bind_context(fn)`` to
    ``Thread(target=...)`` or ``executor.submit(...)`` so that spans opened in the
    thread nest under the span that was current when ``bind_context`` was called.
    """
    context = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> Any:
        return context.copy().run(fn, *args, **kwargs)

    try:
        run.__name__ = getattr(fn, "__name__", "run")
        run.__qualname__ = getattr(fn, "__qualname__", "run")
        run.__doc__ = getattr(fn, "__doc__", None)
        run.__wrapped__ = fn  # type: ignore[attr-defined]
    except Exception:
        pass
    return run  # type: ignore[return-value]
