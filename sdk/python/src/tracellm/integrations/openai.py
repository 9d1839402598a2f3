"""Tracing for the official ``openai`` client and OpenAI-shaped clients such as ``groq``.

The client is patched in place (its resource objects get a traced ``create``)
and returned, so ``isinstance`` checks and every other attribute keep working.
Nothing here imports ``openai`` or ``groq``: responses are read by attribute
name, so the module loads even when neither package is installed.

Streams: the returned stream object is the client's own; only its internal
iterator is wrapped, so the caller's loop sees the very same chunks. The span
ends when the stream is exhausted, fails, is closed or is garbage collected.
Raw responses (``with_raw_response``/``with_streaming_response``) are returned
untouched.
By default the request is never altered: a streamed chat completion records
token usage only if the caller asked for it (``stream_options={"include_usage":
True}``); otherwise the server estimates the tokens. ``wrap_openai(client,
stream_usage=True)`` adds that option and hides the extra usage-only chunk from
the caller.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Dict, List, Optional

from .._config import get_config
from .._core import Span, end_span, record_exception, start_span
from .._serialize import capture

logger = logging.getLogger("tracellm")

_NOT_REQUEST_ATTRIBUTES = frozenset(
    [
        "messages",
        "model",
        "tools",
        "input",
        "instructions",
        "extra_headers",
        "extra_query",
        "extra_body",
        "timeout",
    ]
)


class _Profile:
    __slots__ = ("provider", "prefix", "stream_usage")

    def __init__(self, provider: str, prefix: str, stream_usage: bool) -> None:
        self.provider = provider
        self.prefix = prefix
        self.stream_usage = stream_usage


# ----- small helpers ---------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _given(value: Any) -> bool:
    return value is not None and type(value).__name__ not in ("NotGiven", "Omit")


def _is_async_client(client: Any) -> bool:
    for cls in type(client).__mro__:
        if cls.__name__ in ("AsyncAPIClient", "AsyncOpenAI", "AsyncGroq"):
            return True
    return type(client).__name__.startswith("Async")


def _limit() -> int:
    return get_config().max_field_chars


def _request_attributes(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "request." + key: value
        for key, value in kwargs.items()
        if key not in _NOT_REQUEST_ATTRIBUTES and _given(value)
    }


def _message_out(message: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {"role": _get(message, "role") or "assistant", "content": _get(message, "content")}
    tool_calls = _get(message, "tool_calls")
    if tool_calls:
        out["tool_calls"] = [_tool_call_out(call) for call in tool_calls]
    refusal = _get(message, "refusal")
    if refusal:
        out["refusal"] = refusal
    function_call = _get(message, "function_call")
    if function_call:
        out["function_call"] = {"name": _get(function_call, "name"), "arguments": _get(function_call, "arguments")}
    return out


def _tool_call_out(call: Any) -> Dict[str, Any]:
    function = _get(call, "function")
    return {
        "id": _get(call, "id"),
        "type": _get(call, "type") or "function",
        "function": {"name": _get(function, "name"), "arguments": _get(function, "arguments")},
    }


def _set_usage(span: Span, usage: Any) -> None:
    if usage is None:
        return
    prompt = _get(usage, "prompt_tokens")
    if prompt is None:
        prompt = _get(usage, "input_tokens")
    completion = _get(usage, "completion_tokens")
    if completion is None:
        completion = _get(usage, "output_tokens")
    total = _get(usage, "total_tokens")
    span.set_tokens(prompt, completion, total)
    details = _get(usage, "prompt_tokens_details") or _get(usage, "input_tokens_details")
    cached = _get(details, "cached_tokens")
    if cached:
        span.set_attribute("tokens.cached", cached)
    details = _get(usage, "completion_tokens_details") or _get(usage, "output_tokens_details")
    reasoning = _get(details, "reasoning_tokens")
    if reasoning:
        span.set_attribute("tokens.reasoning", reasoning)


def _start(profile: _Profile, operation: str, kind: str, kwargs: Dict[str, Any], client: Any) -> Optional[Span]:
    try:
        cfg = get_config()
        if not cfg.enabled:
            return None
        span = start_span("%s.%s" % (profile.prefix, operation), kind)
        span.provider = profile.provider
        model = kwargs.get("model")
        if isinstance(model, str):
            span.model = model
        attributes = _request_attributes(kwargs)
        base_url = _get(client, "base_url")
        if base_url is not None:
            attributes["base_url"] = str(base_url)
        span.set_attributes(attributes)
        if cfg.capture_content:
            span.input = capture(_input_of(operation, kwargs), cfg.max_field_chars)
        return span
    except Exception:
        logger.debug("TraceLLM: could not start an LLM span", exc_info=True)
        return None


def _input_of(operation: str, kwargs: Dict[str, Any]) -> Any:
    if operation == "chat":
        data: Dict[str, Any] = {"messages": kwargs.get("messages")}
        if _given(kwargs.get("tools")):
            data["tools"] = kwargs["tools"]
        return data
    if operation == "responses":
        messages: List[Any] = []
        instructions = kwargs.get("instructions")
        if _given(instructions):
            messages.append({"role": "system", "content": instructions})
        raw = kwargs.get("input")
        if isinstance(raw, str):
            messages.append({"role": "user", "content": raw})
        elif isinstance(raw, (list, tuple)):
            for item in raw:
                role = _get(item, "role")
                if role is not None and _get(item, "type", "message") == "message":
                    messages.append({"role": role, "content": _get(item, "content")})
                else:
                    messages.append(item)
        data = {"messages": messages}
        if _given(kwargs.get("tools")):
            data["tools"] = kwargs["tools"]
        return data
    return {"input": kwargs.get("input")}


def _fail(span: Span, exc: BaseException) -> None:
    try:
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            span.set_attribute("http.status_code", status)
        record_exception(span, exc)
        end_span(span)
    except Exception:
        logger.debug("TraceLLM: could not record an LLM error", exc_info=True)


def _prepare(profile: _Profile, operation: str, kwargs: Dict[str, Any]) -> bool:
    """Adjust kwargs in place before the call; returns whether usage was requested by us."""
    messages = kwargs.get("messages")
    if messages is not None and not isinstance(messages, (list, tuple)):
        # An iterator would be consumed by our capture; the client accepts a list just as well.
        kwargs["messages"] = list(messages)
    raw = kwargs.get("input")
    if raw is not None and not isinstance(raw, (str, list, tuple, dict)) and hasattr(raw, "__next__"):
        kwargs["input"] = list(raw)
    if (
        operation == "chat"
        and profile.stream_usage
        and kwargs.get("stream") is True
        and not _given(kwargs.get("stream_options"))
    ):
        kwargs["stream_options"] = {"include_usage": True}
        return True
    return False


# ----- recording responses ---------------------------------------------------


def _record_chat(span: Span, response: Any) -> None:
    model = _get(response, "model")
    if model:
        span.model = str(model)
    messages = []
    finish_reasons = []
    for choice in _get(response, "choices") or []:
        messages.append(_message_out(_get(choice, "message")))
        finish_reasons.append(_get(choice, "finish_reason"))
    if get_config().capture_content:
        span.output = capture({"messages": messages}, _limit())
    if finish_reasons:
        span.set_attribute("finish_reasons", finish_reasons)
    response_id = _get(response, "id")
    if response_id:
        span.set_attribute("response.id", response_id)
    _set_usage(span, _get(response, "usage"))


def _record_responses(span: Span, response: Any) -> None:
    model = _get(response, "model")
    if model:
        span.model = str(model)
    texts: List[str] = []
    tool_calls: List[Dict[str, Any]] = []
    for item in _get(response, "output") or []:
        kind = _get(item, "type")
        if kind == "message":
            for part in _get(item, "content") or []:
                if _get(part, "type") == "output_text":
                    texts.append(_get(part, "text") or "")
                elif _get(part, "type") == "refusal":
                    texts.append(_get(part, "refusal") or "")
        elif kind == "function_call":
            tool_calls.append(
                {
                    "id": _get(item, "call_id") or _get(item, "id"),
                    "type": "function",
                    "function": {"name": _get(item, "name"), "arguments": _get(item, "arguments")},
                }
            )
    message: Dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if get_config().capture_content:
        span.output = capture({"messages": [message]}, _limit())
    status = _get(response, "status")
    if status:
        span.set_attribute("response.status", status)
    response_id = _get(response, "id")
    if response_id:
        span.set_attribute("response.id", response_id)
    error = _get(response, "error")
    if error and status == "failed":
        span.status = "error"
        span.error = {"type": str(_get(error, "code") or "ResponseFailed"), "message": str(_get(error, "message")),
                      "stack": ""}
    _set_usage(span, _get(response, "usage"))


def _record_embeddings(span: Span, response: Any) -> None:
    model = _get(response, "model")
    if model:
        span.model = str(model)
    data = _get(response, "data") or []
    output: Dict[str, Any] = {"embeddings": len(data)}
    if data:
        vector = _get(data[0], "embedding")
        if isinstance(vector, (list, tuple)):
            output["dimensions"] = len(vector)
    span.output = output
    usage = _get(response, "usage")
    if usage is not None:
        span.set_tokens(_get(usage, "prompt_tokens"), None, _get(usage, "total_tokens"))


_RECORDERS = {"chat": _record_chat, "responses": _record_responses, "embeddings": _record_embeddings}


def _finish(span: Span, operation: str, response: Any) -> None:
    try:
        if type(response).__name__ == "LegacyAPIResponse":
            # ``with_raw_response``: parse() caches its result, so the caller's own
            # parse() later costs nothing and returns the same object.
            response = response.parse()
        _RECORDERS[operation](span, response)
        end_span(span)
    except Exception:
        logger.debug("TraceLLM: could not record an LLM response", exc_info=True)
        try:
            end_span(span)
        except Exception:
            pass


# ----- streams ---------------------------------------------------------------


class _StreamRecorder:
    """Aggregates streamed chunks or events into the span; ends it once."""

    __slots__ = ("span", "operation", "started", "hide_usage_chunk", "first_ms", "texts", "tool_calls",
                 "finish_reason", "model", "usage", "final_response", "chunks", "done", "role")

    def __init__(self, span: Span, operation: str, started: float, hide_usage_chunk: bool) -> None:
        self.span = span
        self.operation = operation
        self.started = started
        self.hide_usage_chunk = hide_usage_chunk
        self.first_ms: Optional[float] = None
        self.texts: List[str] = []
        self.tool_calls: Dict[int, Dict[str, Any]] = {}
        self.finish_reason: Optional[str] = None
        self.model: Optional[str] = None
        self.usage: Any = None
        self.final_response: Any = None
        self.chunks = 0
        self.done = False
        self.role = "assistant"

    def _first(self) -> None:
        if self.first_ms is None:
            self.first_ms = (time.perf_counter() - self.started) * 1000.0

    def add(self, chunk: Any) -> bool:
        """Record one chunk; returns False for a chunk the caller must not see."""
        try:
            self.chunks += 1
            if self.operation == "responses":
                self._add_event(chunk)
                return True
            model = _get(chunk, "model")
            if model:
                self.model = model
            usage = _get(chunk, "usage")
            if usage is None:
                usage = _get(_get(chunk, "x_groq"), "usage")
            if usage is not None:
                self.usage = usage
            choices = _get(chunk, "choices") or []
            if not choices and usage is not None and self.hide_usage_chunk:
                return False
            for choice in choices:
                if (_get(choice, "index") or 0) != 0:
                    continue
                delta = _get(choice, "delta")
                role = _get(delta, "role")
                if role:
                    self.role = role
                content = _get(delta, "content")
                if content:
                    self._first()
                    self.texts.append(content)
                for call in _get(delta, "tool_calls") or []:
                    self._first()
                    index = _get(call, "index") or 0
                    entry = self.tool_calls.setdefault(
                        index, {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
                    )
                    if _get(call, "id"):
                        entry["id"] = _get(call, "id")
                    function = _get(call, "function")
                    if _get(function, "name"):
                        entry["function"]["name"] = _get(function, "name")
                    if _get(function, "arguments"):
                        entry["function"]["arguments"] += _get(function, "arguments")
                if _get(choice, "finish_reason"):
                    self.finish_reason = _get(choice, "finish_reason")
        except Exception:
            logger.debug("TraceLLM: could not record a stream chunk", exc_info=True)
        return True

    def _add_event(self, event: Any) -> None:
        kind = _get(event, "type") or ""
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            self._first()
            delta = _get(event, "delta")
            if isinstance(delta, str):
                self.texts.append(delta)
        elif kind == "response.function_call_arguments.delta":
            self._first()
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.final_response = _get(event, "response")
        elif kind == "error":
            self.span.status = "error"
            self.span.error = {"type": str(_get(event, "code") or "StreamError"),
                               "message": str(_get(event, "message")), "stack": ""}

    def finish(self, closed_early: bool = False) -> None:
        if self.done:
            return
        self.done = True
        span = self.span
        try:
            span.set_attribute("stream", True)
            if self.first_ms is None and self.chunks:
                self.first_ms = (time.perf_counter() - self.started) * 1000.0
            if self.first_ms is not None:
                span.set_time_to_first_token(self.first_ms)
            if closed_early:
                span.set_attribute("stream.closed_early", True)
            if self.operation == "responses" and self.final_response is not None:
                _record_responses(span, self.final_response)
            else:
                if self.model:
                    span.model = str(self.model)
                message: Dict[str, Any] = {"role": self.role, "content": "".join(self.texts) if self.texts else None}
                if self.tool_calls:
                    message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
                if get_config().capture_content:
                    span.output = capture({"messages": [message]}, _limit())
                if self.finish_reason:
                    span.set_attribute("finish_reasons", [self.finish_reason])
                _set_usage(span, self.usage)
            end_span(span)
        except Exception:
            logger.debug("TraceLLM: could not finish a stream span", exc_info=True)

    def fail(self, exc: BaseException) -> None:
        if self.done:
            return
        self.done = True
        _fail(self.span, exc)

    def __del__(self) -> None:
        # A stream dropped without being read to the end still gets its span closed.
        if not self.done:
            try:
                self.finish(closed_early=True)
            except Exception:
                pass


def _traced_iterator(iterator: Any, recorder: _StreamRecorder) -> Any:
    try:
        for chunk in iterator:
            if recorder.add(chunk):
                yield chunk
    except GeneratorExit:
        recorder.finish(closed_early=True)
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        raise
    except BaseException as exc:
        recorder.fail(exc)
        raise
    recorder.finish()


async def _traced_async_iterator(iterator: Any, recorder: _StreamRecorder) -> Any:
    try:
        async for chunk in iterator:
            if recorder.add(chunk):
                yield chunk
    except GeneratorExit:
        recorder.finish(closed_early=True)
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
        raise
    except BaseException as exc:
        recorder.fail(exc)
        raise
    recorder.finish()


def _wrap_stream(stream: Any, recorder: _StreamRecorder, is_async: bool) -> Any:
    iterator = getattr(stream, "_iterator", None)
    if is_async and iterator is not None and hasattr(iterator, "__anext__"):
        stream._iterator = _traced_async_iterator(iterator, recorder)
        return stream
    if not is_async and iterator is not None and hasattr(iterator, "__next__"):
        stream._iterator = _traced_iterator(iterator, recorder)
        return stream
    # Not a stream object we know (e.g. a raw HTTP response): hand it back untouched
    # and close the span with what is known rather than risk changing its behaviour.
    recorder.finish()
    return stream


# ----- patching --------------------------------------------------------------


def _traced_create(original: Any, profile: _Profile, operation: str, kind: str, client: Any, is_async: bool) -> Any:
    if is_async:

        @functools.wraps(original)
        async def create_async(*args: Any, **kwargs: Any) -> Any:
            span = _start(profile, operation, kind, kwargs, client)
            if span is None:
                return await original(*args, **kwargs)
            try:
                injected = _prepare(profile, operation, kwargs)
            except Exception:
                injected = False
            started = time.perf_counter()
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                _fail(span, exc)
                raise
            if kwargs.get("stream") is True:
                try:
                    return _wrap_stream(result, _StreamRecorder(span, operation, started, injected), True)
                except Exception:
                    end_span(span)
                    return result
            _finish(span, operation, result)
            return result

        create_async.__tracellm_wrapped__ = True  # type: ignore[attr-defined]
        return create_async

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        span = _start(profile, operation, kind, kwargs, client)
        if span is None:
            return original(*args, **kwargs)
        try:
            injected = _prepare(profile, operation, kwargs)
        except Exception:
            injected = False
        started = time.perf_counter()
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            _fail(span, exc)
            raise
        if kwargs.get("stream") is True:
            try:
                return _wrap_stream(result, _StreamRecorder(span, operation, started, injected), False)
            except Exception:
                end_span(span)
                return result
        _finish(span, operation, result)
        return result

    create.__tracellm_wrapped__ = True  # type: ignore[attr-defined]
    return create


def _patch(
    resource: Any, profile: _Profile, operation: str, kind: str, client: Any, is_async: bool, method: str = "create"
) -> None:
    if resource is None:
        return
    original = getattr(resource, method, None)
    if original is None or getattr(original, "__tracellm_wrapped__", False):
        return
    setattr(resource, method, _traced_create(original, profile, operation, kind, client, is_async))


def _resource(client: Any, *path: str) -> Any:
    obj = client
    for name in path:
        try:
            obj = getattr(obj, name)
        except Exception:
            return None
    return obj


def _instrument(client: Any, profile: _Profile) -> Any:
    if getattr(client, "_tracellm_wrapped", False):
        return client
    is_async = _is_async_client(client)
    _patch(_resource(client, "chat", "completions"), profile, "chat", "llm", client, is_async)
    # Structured outputs: parse() posts by itself rather than through create().
    _patch(_resource(client, "chat", "completions"), profile, "chat", "llm", client, is_async, "parse")
    _patch(_resource(client, "responses"), profile, "responses", "llm", client, is_async)
    _patch(_resource(client, "responses"), profile, "responses", "llm", client, is_async, "parse")
    _patch(_resource(client, "embeddings"), profile, "embeddings", "embedding", client, is_async)
    copy = getattr(client, "copy", None)
    if callable(copy):

        def traced_copy(*args: Any, **kwargs: Any) -> Any:
            return _instrument(copy(*args, **kwargs), profile)

        try:
            client.copy = traced_copy
            client.with_options = traced_copy
        except Exception:
            pass
    try:
        client._tracellm_wrapped = True
    except Exception:
        pass
    return client


def wrap_openai(client: Any, *, stream_usage: bool = False) -> Any:
    """See :func:`tracellm.wrap_openai`."""
    name = type(client).__name__
    provider = "azure" if name.startswith(("Azure", "AsyncAzure")) else "openai"
    return _instrument(client, _Profile(provider, "openai", stream_usage))


def wrap_groq(client: Any) -> Any:
    """See :func:`tracellm.wrap_groq`. Groq reports streamed usage in ``x_groq`` by itself."""
    return _instrument(client, _Profile("groq", "groq", False))
