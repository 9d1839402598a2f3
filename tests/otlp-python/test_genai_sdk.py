"""Spans made by hand with the OpenTelemetry SDK in the OTel GenAI conventions (current, >= 1.37),
exported by the official OTLP exporters over HTTP (plain and gzip) and gRPC (plain and gzip).

The run is a small agent, as an app instrumented by hand would report it:

    invoke_agent weather-agent        (root, agent)
    ├── chat gpt-4o                   (llm: asks for the get_weather tool)
    ├── execute_tool get_weather      (tool)
    └── chat gpt-4o                   (llm: answers from the tool result)

Timestamps are set explicitly so that latencies and times can be asserted exactly.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any, Dict, Iterator

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Status, StatusCode

from support import (
    Pipeline,
    as_json,
    expected_cost,
    only,
    otlp_exporter,
    parse_time,
    span_hex,
    spans_of_kind,
    trace_hex,
)

TRANSPORTS = ["http", "http-gzip", "grpc", "grpc-gzip"]

QUESTION = "What is the weather in Paris?"
ANSWER = "It is 18°C and sunny in Paris."
SYSTEM = "You are a weather assistant. Use tools when needed."
TOOL_ARGS = {"city": "Paris"}
TOOL_RESULT = {"temp_c": 18, "sky": "sunny"}
CALL_ID = "call_weather_1"

MS = 1_000_000  # nanoseconds


def _base_ns() -> int:
    """A millisecond-aligned start a minute ago."""
    return (time.time_ns() // MS - 60_000) * MS


def build_agent_run(pipeline: Pipeline, base: int) -> Dict[str, Any]:
    tracer = pipeline.tracer()
    root = tracer.start_span(
        "invoke_agent weather-agent",
        start_time=base,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "weather-agent",
            "gen_ai.conversation.id": "conv-42",
            "user.id": "user-7",
        },
    )
    ctx = otel_trace.set_span_in_context(root)

    chat1 = tracer.start_span(
        "chat gpt-4o",
        context=ctx,
        start_time=base + 100 * MS,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.response.finish_reasons": ["tool_call"],
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": SYSTEM}]),
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [
                            {"type": "tool_call", "id": CALL_ID, "name": "get_weather", "arguments": TOOL_ARGS}
                        ],
                        "finish_reason": "tool_call",
                    }
                ]
            ),
        },
    )
    chat1.end(end_time=base + 700 * MS)

    tool = tracer.start_span(
        "execute_tool get_weather",
        context=ctx,
        start_time=base + 750 * MS,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.id": CALL_ID,
            "gen_ai.tool.call.arguments": json.dumps(TOOL_ARGS),
            "gen_ai.tool.call.result": json.dumps(TOOL_RESULT),
        },
    )
    tool.end(end_time=base + 900 * MS)

    chat2 = tracer.start_span(
        "chat gpt-4o",
        context=ctx,
        start_time=base + 950 * MS,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 160,
            "gen_ai.usage.output_tokens": 12,
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.input.messages": json.dumps(
                [
                    {"role": "user", "parts": [{"type": "text", "content": QUESTION}]},
                    {
                        "role": "assistant",
                        "parts": [
                            {"type": "tool_call", "id": CALL_ID, "name": "get_weather", "arguments": TOOL_ARGS}
                        ],
                    },
                    {
                        "role": "tool",
                        "parts": [{"type": "tool_call_response", "id": CALL_ID, "response": TOOL_RESULT}],
                    },
                ]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": ANSWER}],
                        "finish_reason": "stop",
                    }
                ]
            ),
        },
    )
    chat2.end(end_time=base + 1400 * MS)
    root.end(end_time=base + 1500 * MS)
    return {
        "trace_id": trace_hex(root),
        "root": span_hex(root),
        "chat1": span_hex(chat1),
        "tool": span_hex(tool),
        "chat2": span_hex(chat2),
        "base": base,
    }


@pytest.fixture(scope="module", params=TRANSPORTS)
def agent_run(request: Any, server: Any) -> Iterator[Dict[str, Any]]:
    pipeline = Pipeline(otlp_exporter(server, request.param), service="weather-app")
    try:
        ids = build_agent_run(pipeline, _base_ns())
        pipeline.flush()
        trace = server.wait_trace(ids["trace_id"], spans=4)
        yield {"trace": trace, "ids": ids, "spans": {s["id"]: s for s in trace["spans"]}}
    finally:
        pipeline.shutdown()


def test_trace_is_found_by_the_otlp_trace_id_with_the_span_tree(agent_run: Dict[str, Any]) -> None:
    trace, ids, spans = agent_run["trace"], agent_run["ids"], agent_run["spans"]
    assert trace["id"] == ids["trace_id"]
    assert set(spans) == {ids["root"], ids["chat1"], ids["tool"], ids["chat2"]}
    assert spans[ids["root"]]["parent_id"] is None
    for child in ("chat1", "tool", "chat2"):
        assert spans[ids[child]]["parent_id"] == ids["root"], child
    assert trace["span_count"] == 4
    assert trace["name"] == "invoke_agent weather-agent"


def test_span_kinds_follow_gen_ai_operation_name(agent_run: Dict[str, Any]) -> None:
    ids, spans = agent_run["ids"], agent_run["spans"]
    assert spans[ids["root"]]["kind"] == "agent"
    assert spans[ids["chat1"]]["kind"] == "llm"
    assert spans[ids["tool"]]["kind"] == "tool"
    assert spans[ids["chat2"]]["kind"] == "llm"
    assert spans[ids["chat1"]]["name"] == "chat gpt-4o"
    assert spans[ids["tool"]]["name"] == "execute_tool get_weather"


def test_model_provider_and_status(agent_run: Dict[str, Any]) -> None:
    trace, ids, spans = agent_run["trace"], agent_run["ids"], agent_run["spans"]
    assert trace["model"] == "gpt-4o"
    assert trace["provider"] == "openai"
    for key in ("chat1", "chat2"):
        assert spans[ids[key]]["model"] == "gpt-4o"
        assert spans[ids[key]]["provider"] == "openai"
    assert trace["status"] == "success"
    assert trace["error_count"] == 0
    assert trace["failure_reason"] is None
    assert trace["retries"] == 0
    assert all(s["status"] == "success" and s["error"] is None for s in trace["spans"])


def test_token_counts_per_span_and_rolled_up(agent_run: Dict[str, Any]) -> None:
    trace, ids, spans = agent_run["trace"], agent_run["ids"], agent_run["spans"]
    chat1, chat2 = spans[ids["chat1"]], spans[ids["chat2"]]
    assert chat1["tokens"]["prompt"] == 120
    assert chat1["tokens"]["completion"] == 30
    assert chat1["tokens"]["total"] == 150
    assert chat1["tokens"]["estimated"] is False
    assert (chat2["tokens"]["prompt"], chat2["tokens"]["completion"], chat2["tokens"]["total"]) == (160, 12, 172)
    assert trace["tokens"]["prompt"] == 280
    assert trace["tokens"]["completion"] == 42
    assert trace["tokens"]["total"] == 322
    assert trace["tokens"]["estimated"] is False


def test_cost_from_the_gpt_4o_price(agent_run: Dict[str, Any]) -> None:
    trace, ids, spans = agent_run["trace"], agent_run["ids"], agent_run["spans"]
    cost1 = expected_cost("gpt-4o", 120, 30)  # 0.0006
    cost2 = expected_cost("gpt-4o", 160, 12)  # 0.00052
    assert spans[ids["chat1"]]["cost_usd"] == pytest.approx(cost1, rel=1e-6)
    assert spans[ids["chat2"]]["cost_usd"] == pytest.approx(cost2, rel=1e-6)
    assert trace["cost_usd"] == pytest.approx(cost1 + cost2, rel=1e-6)


def test_chat_messages_with_system_instructions_and_tool_call(agent_run: Dict[str, Any]) -> None:
    ids, spans = agent_run["ids"], agent_run["spans"]
    chat1 = spans[ids["chat1"]]
    inputs = chat1["input"]["messages"]
    assert [(m["role"], m["content"]) for m in inputs] == [("system", SYSTEM), ("user", QUESTION)]
    out = only(chat1["output"]["messages"], "output message")
    assert out["role"] == "assistant"
    assert not out.get("content")
    call = only(out["tool_calls"], "tool call")
    assert call["id"] == CALL_ID
    assert call["function"]["name"] == "get_weather"
    assert as_json(call["function"]["arguments"]) == TOOL_ARGS
    assert out["finish_reason"] == "tool_calls"  # `tool_call` (current) normalised to the older spelling


def test_tool_result_message_feeds_the_second_chat(agent_run: Dict[str, Any]) -> None:
    trace, ids, spans = agent_run["trace"], agent_run["ids"], agent_run["spans"]
    chat2 = spans[ids["chat2"]]
    user, assistant, tool = chat2["input"]["messages"]
    assert (user["role"], user["content"]) == ("user", QUESTION)
    assert assistant["role"] == "assistant"
    assert only(assistant["tool_calls"])["function"]["name"] == "get_weather"
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == CALL_ID
    assert as_json(tool["content"]) == TOOL_RESULT
    out = only(chat2["output"]["messages"])
    assert (out["role"], out["content"], out["finish_reason"]) == ("assistant", ANSWER, "stop")
    # What the trace list shows: the question and the final answer.
    assert trace["prompt"] == QUESTION
    assert trace["response"] == ANSWER


def test_tool_span_has_name_arguments_and_result(agent_run: Dict[str, Any]) -> None:
    ids, spans = agent_run["ids"], agent_run["spans"]
    tool = spans[ids["tool"]]
    assert tool["tool"]["name"] == "get_weather"
    assert as_json(tool["tool"]["arguments"]) == TOOL_ARGS
    assert as_json(tool["tool"]["result"]) == TOOL_RESULT
    assert tool["model"] is None


def test_times_and_latencies_come_from_the_span_timestamps(agent_run: Dict[str, Any]) -> None:
    trace, ids, spans = agent_run["trace"], agent_run["ids"], agent_run["spans"]
    base = agent_run["ids"]["base"]
    start = parse_time(trace["timestamp"])
    assert start.timestamp() * 1000 == pytest.approx(base / MS, abs=0.001)
    assert parse_time(trace["end_time"]) - start == timedelta(milliseconds=1500)
    assert trace["latency_ms"] == 1500
    assert spans[ids["root"]]["latency_ms"] == 1500
    assert spans[ids["chat1"]]["latency_ms"] == 600
    assert spans[ids["tool"]]["latency_ms"] == 150
    assert spans[ids["chat2"]]["latency_ms"] == 450
    assert parse_time(spans[ids["tool"]]["start_time"]) - start == timedelta(milliseconds=750)


def test_conversation_and_user_become_session_and_user(agent_run: Dict[str, Any]) -> None:
    trace = agent_run["trace"]
    assert trace["session_id"] == "conv-42"
    assert trace["user_id"] == "user-7"


# ----- errors -------------------------------------------------------------------------------


class RateLimitError(Exception):
    pass


@pytest.fixture(scope="module", params=["http", "grpc"])
def failed_run(request: Any, server: Any) -> Iterator[Dict[str, Any]]:
    pipeline = Pipeline(otlp_exporter(server, request.param), service="weather-app")
    tracer = pipeline.tracer()
    try:
        with tracer.start_as_current_span("invoke_agent weather-agent",
                                          attributes={"gen_ai.operation.name": "invoke_agent"}) as root:
            with tracer.start_as_current_span(
                "chat gpt-4o",
                record_exception=False,
                set_status_on_exception=False,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.input.messages": json.dumps(
                        [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
                    ),
                },
            ) as chat:
                try:
                    raise RateLimitError("Rate limit reached for gpt-4o in organization org-1")
                except RateLimitError as exc:
                    chat.record_exception(exc)
                    chat.set_attribute("error.type", "RateLimitError")
                    chat.set_status(Status(StatusCode.ERROR, "Rate limit reached for gpt-4o in organization org-1"))
        pipeline.flush()
        trace = server.wait_trace(trace_hex(root), spans=2)
        sent = only([s for s in pipeline.finished() if s.name == "chat gpt-4o"])
        exception = only([e for e in sent.events if e.name == "exception"])
        yield {"trace": trace, "root": span_hex(root), "chat": span_hex(chat),
               "exception_type": exception.attributes["exception.type"]}
    finally:
        pipeline.shutdown()


def test_error_status_and_exception_event_make_an_error_trace(failed_run: Dict[str, Any]) -> None:
    trace = failed_run["trace"]
    assert trace["status"] == "error"
    assert trace["error_count"] == 1
    reason = trace["failure_reason"]
    assert reason is not None
    assert "chat gpt-4o" in reason
    assert "RateLimitError" in reason
    assert "Rate limit reached for gpt-4o" in reason


def test_error_span_carries_exception_type_message_and_stack(failed_run: Dict[str, Any]) -> None:
    spans = {s["id"]: s for s in failed_run["trace"]["spans"]}
    chat = spans[failed_run["chat"]]
    assert chat["status"] == "error"
    assert chat["kind"] == "llm"
    # The SDK records the qualified class name (module.RateLimitError); it is kept as sent.
    assert failed_run["exception_type"].endswith("RateLimitError")
    assert chat["error"]["type"] == failed_run["exception_type"]
    assert chat["error"]["message"] == "Rate limit reached for gpt-4o in organization org-1"
    assert "Traceback" in chat["error"]["stack"]
    assert "RateLimitError" in chat["error"]["stack"]
    assert [e["name"] for e in chat["events"]] == ["exception"]
    assert chat["parent_id"] == failed_run["root"]
    assert spans[failed_run["root"]]["status"] == "success"


# ----- incremental assembly and resent spans -------------------------------------------------


def test_trace_is_running_until_its_root_arrives(server: Any) -> None:
    pipeline = Pipeline(otlp_exporter(server, "http"))
    tracer = pipeline.tracer()
    try:
        root = tracer.start_span("invoke_agent slow-agent", attributes={"gen_ai.operation.name": "invoke_agent"})
        ctx = otel_trace.set_span_in_context(root)
        child = tracer.start_span("chat gpt-4o", context=ctx, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5,
        })
        child.end()
        pipeline.flush()
        trace_id = trace_hex(root)
        running = server.wait_trace(trace_id, spans=1, until=lambda t: True)
        assert running["status"] == "running"
        assert [s["id"] for s in running["spans"]] == [span_hex(child)]

        root.end()
        pipeline.flush()
        done = server.wait_trace(trace_id, spans=2)
        assert done["status"] == "success"
        assert done["span_count"] == 2
        assert done["name"] == "invoke_agent slow-agent"
        assert {s["id"]: s["parent_id"] for s in done["spans"]} == {span_hex(root): None, span_hex(child): span_hex(root)}
        assert done["tokens"]["total"] == 15
    finally:
        pipeline.shutdown()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_spans_resent_by_a_retrying_exporter_are_stored_once(server: Any, transport: str) -> None:
    pipeline = Pipeline(otlp_exporter(server, transport))
    tracer = pipeline.tracer()
    try:
        with tracer.start_as_current_span("invoke_agent agent") as root:
            with tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3,
            }):
                pass
        pipeline.flush()
        trace_id = trace_hex(root)
        first = server.wait_trace(trace_id, spans=2)
        # The same batch again, as an exporter retrying after a lost answer sends it.
        from opentelemetry.sdk.trace.export import SpanExportResult

        again = otlp_exporter(server, transport)
        try:
            assert again.export(pipeline.finished()) is SpanExportResult.SUCCESS
        finally:
            again.shutdown()
        time.sleep(0.3)
        second = server.get_trace(trace_id)
        assert second is not None
        assert second["span_count"] == 2
        assert len(second["spans"]) == 2
        assert second["tokens"] == first["tokens"]
        assert second["cost_usd"] == pytest.approx(first["cost_usd"])
    finally:
        pipeline.shutdown()


def test_a_long_run_exported_in_many_batches_is_one_trace(server: Any) -> None:
    """An agent run of 400 calls exported while it runs, 64 spans at a time (more spans than the
    store keeps a trace's state between requests from): one trace, every call in it, its figures
    rolled up over all of them, and the words of its first and last calls found by search."""
    from urllib.parse import urlencode

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from support import RecordingExporter, http_json

    exporter = RecordingExporter(otlp_exporter(server, "http"))
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=64, schedule_delay_millis=20)
    )
    tracer = provider.get_tracer("long-run")
    calls = 400
    try:
        root = tracer.start_span("invoke_agent navigator", attributes={"gen_ai.operation.name": "invoke_agent"})
        ctx = otel_trace.set_span_in_context(root)
        for i in range(calls):
            span = tracer.start_span("chat gpt-4o", context=ctx, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 10 + i % 3, "gen_ai.usage.output_tokens": 5,
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                    {"type": "text", "content": "leg%d of the voyage" % i}]}]),
            })
            if i == 137:
                span.set_status(Status(StatusCode.ERROR, "upstream refused"))
            span.end()
            if i % 50 == 49:
                time.sleep(0.05)  # the exporter sends what has ended while the run goes on
        root.end()
        assert provider.force_flush(10_000)
        assert len(exporter.results) > 6, "the run went out in %d exports" % len(exporter.results)
        trace_id = trace_hex(root)
        t = server.wait_trace(trace_id, spans=calls + 1, until=lambda t: t["status"] != "running")
        assert t["span_count"] == calls + 1
        assert len(t["spans"]) == calls + 1
        assert t["name"] == "invoke_agent navigator"
        # call 137 failed and 138, the same call under the same parent, is its retry
        assert t["status"] == "retried"
        assert t["retries"] == 1
        assert t["error_count"] == 1
        assert t["failure_reason"] == "chat gpt-4o: upstream refused"
        assert t["tokens"]["total"] == sum(10 + i % 3 + 5 for i in range(calls))
        assert t["prompt"] == "leg0 of the voyage"
        root_id = span_hex(root)
        assert all(s["parent_id"] == root_id for s in t["spans"] if s["id"] != root_id)
        for word in ["leg0", "leg399"]:
            status, body = http_json("GET", "%s/traces?%s" % (server.url, urlencode({"q": word})))
            assert status == 200, body
            assert trace_id in [x["id"] for x in body["traces"]], word
    finally:
        provider.shutdown()


def test_response_model_wins_over_request_model(server: Any) -> None:
    """OpenAI answers with a dated snapshot; that is the model that ran, and it is priced as
    its family."""
    pipeline = Pipeline(otlp_exporter(server, "http"))
    tracer = pipeline.tracer()
    try:
        with tracer.start_as_current_span("chat gpt-4o", attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
        }) as span:
            pass
        pipeline.flush()
        trace = server.wait_trace(trace_hex(span), spans=1)
        llm = only(spans_of_kind(trace, "llm"))
        assert llm["model"] == "gpt-4o-2024-08-06"
        assert trace["model"] == "gpt-4o-2024-08-06"
        assert llm["cost_usd"] == pytest.approx(expected_cost("gpt-4o", 1000, 100), rel=1e-6)
    finally:
        pipeline.shutdown()


def test_trace_is_listed_and_found_by_session_and_by_text(agent_run: Dict[str, Any], server: Any) -> None:
    """What the trace list shows for an OTLP trace, and that its filters and search find it."""
    from urllib.parse import urlencode

    from support import http_json

    trace_id = agent_run["ids"]["trace_id"]

    def listed(**query: Any) -> Dict[str, Any]:
        status, body = http_json("GET", "%s/traces?%s" % (server.url, urlencode(dict(query, limit=100))))
        assert status == 200, body
        return {t["id"]: t for t in body["traces"]}

    entry = listed(session_id="conv-42")[trace_id]
    assert entry["name"] == "invoke_agent weather-agent"
    assert entry["status"] == "success"
    assert entry["model"] == "gpt-4o"
    assert entry["span_count"] == 4
    assert entry["tokens"]["total"] == 322
    assert entry["cost_usd"] == pytest.approx(0.00112, rel=1e-6)
    assert entry["user_id"] == "user-7"
    assert entry["prompt_preview"].startswith(QUESTION)
    assert entry["response_preview"].startswith("It is 18")
    assert trace_id in listed(user_id="user-7")
    assert trace_id in listed(model="gpt-4o")
    assert trace_id in listed(q="sunny")
