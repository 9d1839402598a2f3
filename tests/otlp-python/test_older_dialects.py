"""Older ways apps still send LLM content, made with the OpenTelemetry SDK by hand:

- OTel GenAI <= 1.36: message content as OTLP log records (`gen_ai.system.message`,
  `gen_ai.user.message`, `gen_ai.choice`) correlated to the chat span by trace and span id, sent
  with the official OTLP log exporter to `/v1/logs` (HTTP) or the gRPC logs service, before or
  after the span itself.
- OTel GenAI 1.26: span events `gen_ai.content.prompt` / `gen_ai.content.completion`.
- OpenLLMetry's legacy flattened attributes (`gen_ai.prompt.{i}.*`, `gen_ai.completion.{i}.*`,
  `llm.request.type`, `gen_ai.usage.prompt_tokens`, `llm.usage.total_tokens`).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Sequence

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from support import Pipeline, as_json, expected_cost, only, otlp_exporter, span_hex, trace_hex

SYSTEM = "You are a weather assistant."
QUESTION = "What is the weather in Paris?"
CALL_ID = "call_logs_1"
TOOL_ARGS = {"city": "Paris"}


class RecordingLogExporter(LogRecordExporter):
    """Passes records to the real OTLP log exporter and keeps its answers."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.results: List[Any] = []

    def export(self, batch: Sequence[Any]) -> Any:
        result = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def log_exporter(server: Any, transport: str) -> LogRecordExporter:
    if transport == "http":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=server.url + "/v1/logs", timeout=10)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

    return GrpcLogExporter(endpoint=server.grpc_endpoint, insecure=True, timeout=10)


def _emit_message_events(logger: Any, span: Any) -> None:
    ctx = otel_trace.set_span_in_context(span)
    attrs = {"gen_ai.system": "openai"}
    logger.emit(event_name="gen_ai.system.message", body={"content": SYSTEM}, attributes=attrs, context=ctx)
    logger.emit(event_name="gen_ai.user.message", body={"content": QUESTION}, attributes=attrs, context=ctx)
    logger.emit(
        event_name="gen_ai.choice",
        body={
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "tool_calls": [
                    {"id": CALL_ID, "type": "function",
                     "function": {"name": "get_weather", "arguments": json.dumps(TOOL_ARGS)}}
                ],
            },
        },
        attributes=attrs,
        context=ctx,
    )


@pytest.fixture(scope="module", params=[("http", "logs-after-span"), ("http", "logs-before-span"),
                                        ("grpc", "logs-after-span"), ("grpc", "logs-before-span")],
                ids=lambda p: "-".join(p))
def logs_run(request: Any, server: Any) -> Iterator[Dict[str, Any]]:
    transport, order = request.param
    pipeline = Pipeline(otlp_exporter(server, transport), service="weather-app")
    logs = RecordingLogExporter(log_exporter(server, transport))
    log_provider = LoggerProvider(resource=Resource.create({"service.name": "weather-app"}))
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    logger = log_provider.get_logger("weather-app")
    try:
        span = pipeline.tracer().start_span("chat gpt-4o", attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": 20,
            "gen_ai.response.finish_reasons": ["tool_calls"],
        })
        if order == "logs-before-span":
            _emit_message_events(logger, span)
            span.end()
            pipeline.flush()
        else:
            span.end()
            pipeline.flush()
            server.wait_trace(trace_hex(span), spans=1)
            _emit_message_events(logger, span)
        assert logs.results == [LogRecordExportResult.SUCCESS] * 3, logs.results
        trace = server.wait_trace(trace_hex(span), spans=1,
                                  until=lambda t: bool(t["spans"] and t["spans"][0]["output"]))
        yield {"trace": trace, "span": only(trace["spans"]), "span_id": span_hex(span)}
    finally:
        log_provider.shutdown()
        pipeline.shutdown()


def test_log_events_become_the_chat_messages(logs_run: Dict[str, Any]) -> None:
    span = logs_run["span"]
    assert span["id"] == logs_run["span_id"]
    assert span["kind"] == "llm"
    assert [(m["role"], m["content"]) for m in span["input"]["messages"]] == [("system", SYSTEM), ("user", QUESTION)]
    assert logs_run["trace"]["prompt"] == QUESTION


def test_choice_event_becomes_the_output_with_its_tool_call(logs_run: Dict[str, Any]) -> None:
    out = only(logs_run["span"]["output"]["messages"])
    assert out["role"] == "assistant"
    call = only(out["tool_calls"])
    assert call["id"] == CALL_ID
    assert call["function"]["name"] == "get_weather"
    assert as_json(call["function"]["arguments"]) == TOOL_ARGS
    assert out["finish_reason"] == "tool_calls"


def test_log_correlated_trace_keeps_model_provider_tokens_and_cost(logs_run: Dict[str, Any]) -> None:
    trace, span = logs_run["trace"], logs_run["span"]
    assert (span["model"], span["provider"]) == ("gpt-4o", "openai")
    assert (span["tokens"]["prompt"], span["tokens"]["completion"], span["tokens"]["total"]) == (50, 20, 70)
    assert span["tokens"]["estimated"] is False
    assert trace["cost_usd"] == pytest.approx(expected_cost("gpt-4o", 50, 20), rel=1e-6)
    assert trace["status"] == "success"
    assert trace["span_count"] == 1


# ----- GenAI 1.26 span events --------------------------------------------------------------------


def test_v1_26_prompt_and_completion_span_events(server: Any) -> None:
    pipeline = Pipeline(otlp_exporter(server, "http"))
    try:
        with pipeline.tracer().start_as_current_span("chat gpt-4o-mini", attributes={
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.prompt_tokens": 14,
            "gen_ai.usage.completion_tokens": 9,
        }) as span:
            span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}])})
            span.add_event("gen_ai.content.completion", {"gen_ai.completion": json.dumps(
                [{"role": "assistant", "content": "Sunny, 18°C."}])})
        pipeline.flush()
        trace = server.wait_trace(trace_hex(span), spans=1)
        stored = only(trace["spans"])
        assert stored["kind"] == "llm"  # no kind attribute, but a model
        assert stored["model"] == "gpt-4o-mini"
        assert [(m["role"], m["content"]) for m in stored["input"]["messages"]] == [("system", SYSTEM), ("user", QUESTION)]
        assert [(m["role"], m["content"]) for m in stored["output"]["messages"]] == [("assistant", "Sunny, 18°C.")]
        assert (stored["tokens"]["prompt"], stored["tokens"]["completion"], stored["tokens"]["total"]) == (14, 9, 23)
        assert trace["cost_usd"] == pytest.approx(expected_cost("gpt-4o-mini", 14, 9), rel=1e-6)
        assert (trace["prompt"], trace["response"]) == (QUESTION, "Sunny, 18°C.")
    finally:
        pipeline.shutdown()


# ----- OpenLLMetry legacy flattened attributes ------------------------------------------------------


def test_openllmetry_legacy_indexed_prompt_and_completion(server: Any) -> None:
    pipeline = Pipeline(otlp_exporter(server, "grpc"))
    try:
        with pipeline.tracer().start_as_current_span("openai.chat", kind=otel_trace.SpanKind.CLIENT, attributes={
            "llm.request.type": "chat",
            "gen_ai.system": "OpenAI",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": SYSTEM,
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": QUESTION,
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": CALL_ID,
            "gen_ai.completion.0.tool_calls.0.name": "get_weather",
            "gen_ai.completion.0.tool_calls.0.arguments": json.dumps(TOOL_ARGS),
            "gen_ai.usage.prompt_tokens": 40,
            "gen_ai.usage.completion_tokens": 16,
            "llm.usage.total_tokens": 56,
        }) as span:
            pass
        pipeline.flush()
        trace = server.wait_trace(trace_hex(span), spans=1)
        stored = only(trace["spans"])
        assert stored["kind"] == "llm"
        assert (stored["model"], stored["provider"]) == ("gpt-4o", "openai")
        assert [(m["role"], m["content"]) for m in stored["input"]["messages"]] == [("system", SYSTEM), ("user", QUESTION)]
        out = only(stored["output"]["messages"])
        assert out["role"] == "assistant"
        assert out["finish_reason"] == "tool_calls"
        call = only(out["tool_calls"])
        assert (call["id"], call["function"]["name"]) == (CALL_ID, "get_weather")
        assert as_json(call["function"]["arguments"]) == TOOL_ARGS
        assert (stored["tokens"]["prompt"], stored["tokens"]["completion"], stored["tokens"]["total"]) == (40, 16, 56)
        assert trace["cost_usd"] == pytest.approx(expected_cost("gpt-4o", 40, 16), rel=1e-6)
    finally:
        pipeline.shutdown()
