"""A small app instrumented with one OpenTelemetry instrumentation of the `openai` client.

Run as its own process, as a real app is:

    python app_openai.py --instrumentation openinference|openllmetry --transport http|grpc \\
        --api-url http://127.0.0.1:P --grpc-endpoint 127.0.0.1:G --llm-base-url http://127.0.0.1:L/v1

It makes real calls through `openai.OpenAI` to the stand-in provider, exports the spans with the
official OTLP exporter, and prints one JSON line with what the app itself saw: per scenario the
trace id, the ids and names of the spans it sent, and what the client received (content, tool
call, usage). The tests then look the traces up on the server and compare.

Each instrumentation runs in a process of its own because OpenLLMetry's uninstrument() leaves its
wrappers on the openai client in place, so a later instrumentation in the same process would see
spans parented to OpenLLMetry's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

import openai

from support import Pipeline, otlp_exporter_to, span_hex, trace_hex

MODEL = "gpt-4o-mini"
SYSTEM = "You are a concise weather assistant."
QUESTION = "What is the weather in Paris? Use the get_weather tool."
STORY = "Tell me a story about a lighthouse"
TOOL_RESULT = {"city": "Paris", "temp_c": 18, "sky": "sunny"}
APP_SCOPE = "weather-app"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


def _usage(u: Any) -> Optional[List[int]]:
    return None if u is None else [u.prompt_tokens, u.completion_tokens, u.total_tokens]


def _sent(pipeline: Pipeline) -> Dict[str, Any]:
    """Flush, then describe the spans the app sent: one trace, its spans in start order."""
    pipeline.flush()
    spans = sorted(pipeline.finished(), key=lambda s: s.start_time)
    trace_ids = sorted({trace_hex(s) for s in spans})
    pipeline.clear()
    return {
        "trace_ids": trace_ids,
        "spans": [
            {
                "id": span_hex(s),
                "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
                "name": s.name,
                "scope": s.instrumentation_scope.name,
                "events": [e.name for e in s.events],
            }
            for s in spans
        ],
    }


def tool_call_chat(c: openai.OpenAI, pipeline: Pipeline) -> Dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    response = c.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    choice = response.choices[0]
    calls = choice.message.tool_calls or []
    return dict(
        _sent(pipeline),
        finish_reason=choice.finish_reason,
        content=choice.message.content,
        tool_calls=[{"id": t.id, "name": t.function.name, "arguments": t.function.arguments} for t in calls],
        usage=_usage(response.usage),
    )


def tool_loop(c: openai.OpenAI, pipeline: Pipeline) -> Dict[str, Any]:
    with pipeline.tracer(APP_SCOPE).start_as_current_span("weather-agent"):
        messages: List[Dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
        first = c.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
        call = first.choices[0].message.tool_calls[0]
        messages.append({
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call.id, "type": "function",
                            "function": {"name": call.function.name, "arguments": call.function.arguments}}],
        })
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(TOOL_RESULT)})
        second = c.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    return dict(
        _sent(pipeline),
        tool_call={"id": call.id, "name": call.function.name, "arguments": call.function.arguments},
        answer=second.choices[0].message.content,
        finish_reason=second.choices[0].finish_reason,
        usage=[_usage(first.usage), _usage(second.usage)],
    )


def streaming_chat(c: openai.OpenAI, pipeline: Pipeline, include_usage: bool) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": STORY}], stream=True, **kwargs)
    pieces: List[str] = []
    usage = None
    chunks = 0
    finish_reason = None
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            finish_reason = chunk.choices[0].finish_reason or finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    return dict(_sent(pipeline), text="".join(pieces), chunks=chunks, usage=_usage(usage), finish_reason=finish_reason)


def failed_chat(c: openai.OpenAI, pipeline: Pipeline) -> Dict[str, Any]:
    """The provider answers 429; the client raises RateLimitError (no retries)."""
    error = None
    try:
        c.chat.completions.create(model="error-429", messages=[{"role": "user", "content": "Hello there"}])
    except openai.RateLimitError as exc:
        error = {"type": type(exc).__name__, "message": str(exc)}
    return dict(_sent(pipeline), error=error)


def instrument(name: str, pipeline: Pipeline) -> Any:
    if name == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    elif name == "openllmetry":
        # Prompts and completions are recorded only with content tracing on (its default).
        os.environ["TRACELOOP_TRACE_CONTENT"] = "true"
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor  # type: ignore[no-redef]
    else:
        raise SystemExit("unknown instrumentation %r" % name)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=pipeline.provider)
    return instrumentor


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instrumentation", required=True)
    parser.add_argument("--transport", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--grpc-endpoint", required=True)
    parser.add_argument("--llm-base-url", required=True)
    args = parser.parse_args(argv)

    pipeline = Pipeline(otlp_exporter_to(args.api_url, args.grpc_endpoint, args.transport),
                        service="%s-app" % args.instrumentation)
    instrument(args.instrumentation, pipeline)
    c = openai.OpenAI(base_url=args.llm_base_url, api_key="sk-test", max_retries=0)
    results = {
        "tool_call": tool_call_chat(c, pipeline),
        "tool_loop": tool_loop(c, pipeline),
        "stream": streaming_chat(c, pipeline, include_usage=True),
        "stream_no_usage": streaming_chat(c, pipeline, include_usage=False),
        "failed": failed_chat(c, pipeline),
    }
    pipeline.shutdown()
    sys.stdout.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
