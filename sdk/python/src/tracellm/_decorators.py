"""``@trace``, ``@trace_tool`` and ``trace.span(...)``.

The wrappers keep the shape of what they wrap: a coroutine function stays a
coroutine function, a generator function stays a generator function, so
frameworks that inspect callables see no difference. Whatever happens inside
the SDK, the user's function is called exactly once with its own arguments and
its result or exception reaches the caller untouched.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, Dict, Iterable, Literal, Optional, TypeVar, Union, overload

from ._config import get_config
from ._core import (
    _CURRENT,
    SPAN_KINDS,
    Span,
    TraceData,
    end_span,
    record_exception,
    start_span,
)
from ._serialize import ItemCollector, capture, capture_arguments

logger = logging.getLogger("tracellm")

F = TypeVar("F", bound=Callable[..., Any])


def _check_kind(kind: str) -> str:
    if kind not in SPAN_KINDS:
        raise ValueError("unknown span kind %r; use one of: %s" % (kind, ", ".join(sorted(SPAN_KINDS))))
    return kind


class _Options:
    __slots__ = (
        "name",
        "kind",
        "tool",
        "tags",
        "metadata",
        "api_key",
        "project",
        "session_id",
        "user_id",
        "capture_input",
        "capture_output",
        "names",
        "skip",
        "varargs",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        name: Optional[str],
        kind: str,
        tool: bool,
        tags: Optional[Iterable[str]],
        metadata: Optional[Dict[str, Any]],
        api_key: Optional[str],
        project: Optional[str],
        session_id: Optional[str],
        user_id: Optional[str],
        capture_input: bool,
        capture_output: bool,
    ) -> None:
        self.name = name or getattr(fn, "__name__", None) or "function"
        self.kind = _check_kind(kind)
        self.tool = tool
        self.tags = list(tags) if tags else None
        self.metadata = dict(metadata) if metadata else None
        self.api_key = api_key
        self.project = project
        self.session_id = session_id
        self.user_id = user_id
        self.capture_input = capture_input
        self.capture_output = capture_output
        names: "list[str]" = []
        varargs = None
        try:
            for parameter in inspect.signature(fn).parameters.values():
                if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                    names.append(parameter.name)
                elif parameter.kind == parameter.VAR_POSITIONAL:
                    varargs = parameter.name
        except (TypeError, ValueError):
            pass
        self.names = tuple(names)
        self.skip = 1 if names and names[0] in ("self", "cls") else 0
        self.varargs = varargs


def _begin(opts: _Options, args: Any, kwargs: Any) -> Optional[Span]:
    """Open the span of one call; ``None`` when tracing is off or the SDK failed."""
    try:
        cfg = get_config()
        if not cfg.enabled:
            return None
        span = start_span(
            opts.name,
            opts.kind,
            api_key=opts.api_key,
            project=opts.project,
            tags=opts.tags,
            metadata=opts.metadata,
            session_id=opts.session_id,
            user_id=opts.user_id,
        )
        if opts.capture_input and cfg.capture_content:
            if args or kwargs:
                arguments = capture_arguments(opts.names, opts.skip, opts.varargs, args, kwargs, cfg.max_field_chars)
            else:
                arguments = {}
            if arguments:
                span.input = arguments
            if opts.tool:
                span.tool = {"name": opts.name, "arguments": arguments}
        elif opts.tool:
            span.tool = {"name": opts.name}
        return span
    except Exception:
        logger.debug("TraceLLM: could not start a span for %s", opts.name, exc_info=True)
        return None


def _end_ok(span: Span, opts: _Options, result: Any) -> None:
    try:
        cfg = get_config()
        if opts.capture_output and cfg.capture_content:
            output = capture(result, cfg.max_field_chars)
            span.output = output
            if opts.tool and span.tool is not None:
                span.tool["result"] = output
        end_span(span)
    except Exception:
        logger.debug("TraceLLM: could not end span %s", opts.name, exc_info=True)


def _end_error(span: Span, exc: BaseException) -> None:
    try:
        record_exception(span, exc)
        end_span(span)
    except Exception:
        logger.debug("TraceLLM: could not end span %s", span.name, exc_info=True)


def _end_items(span: Span, opts: _Options, items: Optional[ItemCollector], closed_early: bool) -> None:
    try:
        if items is not None:
            span.output = items.result()
            if opts.tool and span.tool is not None:
                span.tool["result"] = span.output
            span.set_attribute("generator.items", items.count)
        if closed_early:
            span.set_attribute("generator.closed_early", True)
        end_span(span)
    except Exception:
        logger.debug("TraceLLM: could not end span %s", opts.name, exc_info=True)


def _collector(opts: _Options) -> Optional[ItemCollector]:
    cfg = get_config()
    if opts.capture_output and cfg.capture_content:
        return ItemCollector(cfg.max_field_chars)
    return None


def _wrap(fn: Any, opts: _Options) -> Any:
    if inspect.isasyncgenfunction(fn):
        return _wrap_async_generator(fn, opts)
    if inspect.iscoroutinefunction(fn):
        return _wrap_coroutine(fn, opts)
    if inspect.isgeneratorfunction(fn):
        return _wrap_generator(fn, opts)
    return _wrap_function(fn, opts)


def _wrap_function(fn: Callable[..., Any], opts: _Options) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = _begin(opts, args, kwargs)
        if span is None:
            return fn(*args, **kwargs)
        token = _CURRENT.set(span)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _CURRENT.reset(token)
            _end_error(span, exc)
            raise
        _CURRENT.reset(token)
        _end_ok(span, opts, result)
        return result

    return wrapper


def _wrap_coroutine(fn: Callable[..., Any], opts: _Options) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = _begin(opts, args, kwargs)
        if span is None:
            return await fn(*args, **kwargs)
        previous = _CURRENT.get()
        token = _CURRENT.set(span)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            _restore(token, previous)
            _end_error(span, exc)
            raise
        _restore(token, previous)
        _end_ok(span, opts, result)
        return result

    return wrapper


def _restore(token: Any, previous: Optional[Span]) -> None:
    try:
        _CURRENT.reset(token)
    except ValueError:  # resumed in another context than it started in
        _CURRENT.set(previous)


def _wrap_generator(fn: Callable[..., Any], opts: _Options) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = _begin(opts, args, kwargs)
        if span is None:
            return (yield from fn(*args, **kwargs))
        items = _collector(opts)
        generator = None
        try:
            token = _CURRENT.set(span)
            try:
                generator = fn(*args, **kwargs)
            finally:
                _CURRENT.reset(token)
        except BaseException as exc:
            _end_error(span, exc)
            raise
        to_send: Any = None
        to_throw: Optional[BaseException] = None
        while True:
            # Run the user's generator up to its next yield with our span current.
            token = _CURRENT.set(span)
            try:
                if to_throw is not None:
                    pending, to_throw = to_throw, None
                    item = generator.throw(pending)
                else:
                    item = generator.send(to_send)
            except StopIteration as stop:
                _CURRENT.reset(token)
                _end_items(span, opts, items, False)
                return stop.value
            except BaseException as exc:
                _CURRENT.reset(token)
                _end_error(span, exc)
                raise
            _CURRENT.reset(token)
            if items is not None:
                items.add(item)
            try:
                to_send = yield item
            except GeneratorExit:
                try:
                    generator.close()
                finally:
                    _end_items(span, opts, items, True)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def _wrap_async_generator(fn: Callable[..., Any], opts: _Options) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = _begin(opts, args, kwargs)
        if span is None:
            async for item in fn(*args, **kwargs):
                yield item
            return
        items = _collector(opts)
        try:
            token = _CURRENT.set(span)
            try:
                generator = fn(*args, **kwargs)
            finally:
                _CURRENT.reset(token)
        except BaseException as exc:
            _end_error(span, exc)
            raise
        to_send: Any = None
        to_throw: Optional[BaseException] = None
        while True:
            previous = _CURRENT.get()
            token = _CURRENT.set(span)
            try:
                if to_throw is not None:
                    pending, to_throw = to_throw, None
                    item = await generator.athrow(pending)
                else:
                    item = await generator.asend(to_send)
            except StopAsyncIteration:
                _restore(token, previous)
                _end_items(span, opts, items, False)
                return
            except BaseException as exc:
                _restore(token, previous)
                _end_error(span, exc)
                raise
            _restore(token, previous)
            if items is not None:
                items.add(item)
            try:
                to_send = yield item
            except GeneratorExit:
                try:
                    await generator.aclose()
                finally:
                    _end_items(span, opts, items, True)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def _decorate(
    func: Any,
    *,
    name: Optional[str],
    kind: str,
    tool: bool,
    tags: Optional[Iterable[str]],
    metadata: Optional[Dict[str, Any]],
    api_key: Optional[str],
    project: Optional[str],
    session_id: Optional[str],
    user_id: Optional[str],
    capture_input: bool,
    capture_output: bool,
) -> Any:
    if isinstance(func, (staticmethod, classmethod)):
        inner = _decorate(
            func.__func__,
            name=name,
            kind=kind,
            tool=tool,
            tags=tags,
            metadata=metadata,
            api_key=api_key,
            project=project,
            session_id=session_id,
            user_id=user_id,
            capture_input=capture_input,
            capture_output=capture_output,
        )
        return type(func)(inner)
    if not callable(func):
        raise TypeError("@trace can only decorate a function, got %r" % (func,))
    opts = _Options(
        func, name, kind, tool, tags, metadata, api_key, project, session_id, user_id, capture_input, capture_output
    )
    return _wrap(func, opts)


class SpanContext:
    """What ``trace.span(...)`` returns: use with ``with`` or ``async with``.

    Entering opens a span under the current one (or a new trace) and makes it
    current; leaving ends it, recording an exception if one is propagating (the
    exception is never swallowed).
    """

    __slots__ = ("_name", "_kind", "_options", "_span", "_token", "_previous", "_recording")

    def __init__(self, name: str, kind: str, options: Dict[str, Any]) -> None:
        self._name = name
        self._kind = _check_kind(kind)
        self._options = options
        self._span: Optional[Span] = None
        self._token: Any = None
        self._previous: Optional[Span] = None
        self._recording = False

    def __enter__(self) -> Span:
        options = self._options
        span: Optional[Span] = None
        if get_config().enabled:
            try:
                span = start_span(
                    self._name,
                    self._kind,
                    api_key=options.get("api_key"),
                    project=options.get("project"),
                    tags=options.get("tags"),
                    metadata=options.get("metadata"),
                    session_id=options.get("session_id"),
                    user_id=options.get("user_id"),
                )
                if options.get("input") is not None:
                    span.set_input(options["input"])
                if options.get("attributes"):
                    span.set_attributes(options["attributes"])
                if options.get("model") is not None or options.get("provider") is not None:
                    span.set_model(options.get("model"), options.get("provider"))
                self._recording = True
            except Exception:
                logger.debug("TraceLLM: could not start span %s", self._name, exc_info=True)
                span = None
        if span is None:
            # Not recorded: a detached span so that the caller's setters still work.
            span = Span(TraceData(self._name), None, self._name, self._kind)
            self._recording = False
        self._span = span
        self._previous = _CURRENT.get()
        self._token = _CURRENT.set(span)
        return span

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> Literal[False]:
        span = self._span
        if span is None:
            return False
        _restore(self._token, self._previous)
        if self._recording:
            if exc is not None:
                _end_error(span, exc)
            else:
                try:
                    end_span(span)
                except Exception:
                    logger.debug("TraceLLM: could not end span %s", span.name, exc_info=True)
        return False

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)


class _TraceDecorator:
    """``@trace``, ``@trace(...)`` and ``trace.span(...)``."""

    @overload
    def __call__(self, func: F) -> F: ...

    @overload
    def __call__(
        self,
        func: Optional[str] = None,
        *,
        name: Optional[str] = None,
        kind: str = "span",
        api_key: Optional[str] = None,
        project: Optional[str] = None,
        tags: Optional[Iterable[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        session_id: Optional[str] = None,
        user_id: Optional[str] = None,
        capture_input: bool = True,
        capture_output: bool = True,
    ) -> Callable[[F], F]: ...

    def __call__(
        self,
        func: Union[Callable[..., Any], str, None] = None,
        *,
        name: Optional[str] = None,
        kind: str = "span",
        api_key: Optional[str] = None,
        project: Optional[str] = None,
        tags: Optional[Iterable[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        session_id: Optional[str] = None,
        user_id: Optional[str] = None,
        capture_input: bool = True,
        capture_output: bool = True,
    ) -> Any:
        """Record each call of the decorated function as a span.

        A call with no span around it starts a new trace and is its root; calls
        made inside nest under it. ``name`` defaults to the function's name;
        ``kind`` is one of llm, tool, retriever, embedding, agent, chain,
        reranker, guardrail, evaluator, event, span. ``api_key`` and ``project``
        send this trace to another project than the configured one; ``tags`` and
        ``metadata`` are set on the trace (metadata of a nested call goes to its
        span's attributes).
        """
        if isinstance(func, str):
            name, func = name or func, None
        options: Dict[str, Any] = dict(
            name=name,
            kind=kind,
            tool=kind == "tool",
            tags=tags,
            metadata=metadata,
            api_key=api_key,
            project=project,
            session_id=session_id,
            user_id=user_id,
            capture_input=capture_input,
            capture_output=capture_output,
        )
        _check_kind(kind)
        if func is None:
            return lambda f: _decorate(f, **options)
        return _decorate(func, **options)

    def span(
        self,
        name: str,
        kind: str = "span",
        *,
        input: Any = None,
        attributes: Optional[Dict[str, Any]] = None,
        model: Optional[str] = None,
        provider: Optional[str] = None,
        tags: Optional[Iterable[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        api_key: Optional[str] = None,
        project: Optional[str] = None,
        session_id: Optional[str] = None,
        user_id: Optional[str] = None,
    ) -> SpanContext:
        """A span around a block: ``with trace.span("retrieve", kind="retriever") as s: ...``."""
        return SpanContext(
            name,
            kind,
            {
                "input": input,
                "attributes": attributes,
                "model": model,
                "provider": provider,
                "tags": tags,
                "metadata": metadata,
                "api_key": api_key,
                "project": project,
                "session_id": session_id,
                "user_id": user_id,
            },
        )


trace = _TraceDecorator()


@overload
def trace_tool(func: F) -> F: ...


@overload
def trace_tool(
    func: Optional[str] = None,
    *,
    name: Optional[str] = None,
    tags: Optional[Iterable[str]] = None,
    metadata: Optional[Dict[str, Any]] = None,
    capture_input: bool = True,
    capture_output: bool = True,
) -> Callable[[F], F]: ...


def trace_tool(
    func: Union[Callable[..., Any], str, None] = None,
    *,
    name: Optional[str] = None,
    tags: Optional[Iterable[str]] = None,
    metadata: Optional[Dict[str, Any]] = None,
    capture_input: bool = True,
    capture_output: bool = True,
) -> Any:
    """Record each call as a tool span: ``tool: {name, arguments, result}``."""
    return trace(
        func,  # type: ignore[arg-type]
        name=name,
        kind="tool",
        tags=tags,
        metadata=metadata,
        capture_input=capture_input,
        capture_output=capture_output,
    )
