"""What a user expects to see in TraceLLM after an app's `openai` calls were recorded by an
OpenTelemetry instrumentation, whichever dialect (OpenInference, OTel GenAI) carried them.

The app runs in its own process (app_openai.py) and reports what it saw: trace ids, the spans
it sent, and what the client received (content, tool call, usage). The expected values come from
that, so the assertions are exact and hold for either instrumentation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from app_openai import MODEL, QUESTION, STORY, SYSTEM, TOOL_RESULT
from support import TraceLLMServer, as_json, expected_cost, only

HERE = Path(__file__).resolve().parent


def run_app(server: TraceLLMServer, llm_base_url: str, instrumentation: str, transport: str) -> Dict[str, Any]:
    """Run app_openai.py with one instrumentation; what it saw, per scenario."""
    done = subprocess.run(
        [sys.executable, str(HERE / "app_openai.py"),
         "--instrumentation", instrumentation, "--transport", transport,
         "--api-url", server.url, "--grpc-endpoint", server.grpc_endpoint, "--llm-base-url", llm_base_url],
        cwd=str(HERE), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, "the app failed (exit %d):\n%s" % (done.returncode, done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def stored(server: TraceLLMServer, run: Dict[str, Any], expected_spans: int) -> Dict[str, Any]:
    """The scenario as the app saw it, plus `trace`: the trace the server stored for it."""
    assert len(run["trace_ids"]) == 1, "the app sent %d traces, expected one" % len(run["trace_ids"])
    names = [s["name"] for s in run["spans"]]
    assert len(run["spans"]) == expected_spans, "the app sent spans %r, expected %d" % (names, expected_spans)
    return dict(run, trace=server.wait_trace(run["trace_ids"][0], spans=expected_spans))


def _span(run: Dict[str, Any], index: int = 0) -> Dict[str, Any]:
    """The stored span for the app's span number `index` (in start order)."""
    sent = run["spans"][index]
    return only([s for s in run["trace"]["spans"] if s["id"] == sent["id"]], "stored span %s" % sent["id"])


def _llm_indexes(run: Dict[str, Any]) -> List[int]:
    """Which of the app's spans the instrumentation made (not the app's own span)."""
    return [i for i, s in enumerate(run["spans"]) if s["scope"] != "weather-app"]


def _triple(tokens: Dict[str, Any]) -> List[int]:
    return [tokens["prompt"], tokens["completion"], tokens["total"]]


# ----- a chat that answers with a tool call --------------------------------------------------


def check_tool_call_chat_kind_model_status(run: Dict[str, Any]) -> None:
    trace, sent, span = run["trace"], run["spans"][0], _span(run)
    assert span["kind"] == "llm"
    assert span["name"] == sent["name"]
    assert span["parent_id"] is None
    assert span["model"] == MODEL
    assert span["provider"] == "openai"
    assert span["status"] == "success"
    assert span["error"] is None
    assert trace["name"] == sent["name"]
    assert trace["model"] == MODEL
    assert trace["provider"] == "openai"
    assert trace["status"] == "success"
    assert trace["error_count"] == 0
    assert trace["failure_reason"] is None


def check_tool_call_chat_messages(run: Dict[str, Any]) -> None:
    inputs = _span(run)["input"]["messages"]
    assert [(m["role"], m["content"]) for m in inputs] == [("system", SYSTEM), ("user", QUESTION)]
    assert run["trace"]["prompt"] == QUESTION


def check_tool_call_chat_output_tool_call(run: Dict[str, Any]) -> None:
    call = only(run["tool_calls"], "tool call in the provider's answer")
    out = only(_span(run)["output"]["messages"], "output message")
    assert out["role"] == "assistant"
    assert not out.get("content")
    stored_call = only(out.get("tool_calls") or [], "stored tool call")
    assert stored_call["id"] == call["id"]
    assert stored_call["function"]["name"] == "get_weather"
    assert as_json(stored_call["function"]["arguments"]) == json.loads(call["arguments"]) == {"city": QUESTION}


def check_tool_call_chat_tokens_and_cost(run: Dict[str, Any]) -> None:
    trace, span = run["trace"], _span(run)
    prompt, completion, total = run["usage"]
    assert _triple(span["tokens"]) == [prompt, completion, total]
    assert span["tokens"]["estimated"] is False
    assert _triple(trace["tokens"]) == [prompt, completion, total]
    assert span["cost_usd"] == pytest.approx(expected_cost(MODEL, prompt, completion), rel=1e-6)
    assert trace["cost_usd"] == pytest.approx(expected_cost(MODEL, prompt, completion), rel=1e-6)


def check_output_messages_carry_the_finish_reason(tool_call_run: Dict[str, Any], stream_run: Dict[str, Any]) -> None:
    """Why the model stopped, on the output message as the dashboard shows it: `tool_calls`
    for the tool call (whichever spelling was sent), `stop` for the finished stream."""
    assert tool_call_run["finish_reason"] == "tool_calls"
    assert stream_run["finish_reason"] == "stop"
    out = only(_span(tool_call_run)["output"]["messages"])
    assert out.get("finish_reason") == "tool_calls"
    out = only(_span(stream_run)["output"]["messages"])
    assert out.get("finish_reason") == "stop"


# ----- the whole tool loop inside the app's own span -----------------------------------------


def check_tool_loop_structure(run: Dict[str, Any]) -> None:
    trace = run["trace"]
    root = _span(run, 0)
    assert run["spans"][0]["scope"] == "weather-app"
    assert root["name"] == trace["name"] == "weather-agent"
    assert root["parent_id"] is None
    first, second = (_span(run, i) for i in _llm_indexes(run))
    assert first["parent_id"] == root["id"]
    assert second["parent_id"] == root["id"]
    assert first["kind"] == second["kind"] == "llm"
    assert trace["span_count"] == 3
    assert trace["status"] == "success"


def check_tool_loop_tool_result_message(run: Dict[str, Any]) -> None:
    trace, call = run["trace"], run["tool_call"]
    second = _span(run, _llm_indexes(run)[1])
    roles = [m["role"] for m in second["input"]["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]
    assistant, tool = second["input"]["messages"][2:]
    stored_call = only(assistant.get("tool_calls") or [], "tool call of the assistant message")
    assert stored_call["id"] == call["id"]
    assert stored_call["function"]["name"] == "get_weather"
    assert as_json(stored_call["function"]["arguments"]) == {"city": QUESTION}
    assert tool["tool_call_id"] == call["id"]
    assert as_json(tool["content"]) == TOOL_RESULT
    out = only(second["output"]["messages"])
    assert run["answer"] == "Based on the tool result: " + json.dumps(TOOL_RESULT)
    assert (out["role"], out["content"]) == ("assistant", run["answer"])
    assert trace["response"] == run["answer"]


def check_tool_loop_tokens_and_cost(run: Dict[str, Any]) -> None:
    trace = run["trace"]
    (p1, c1, t1), (p2, c2, t2) = run["usage"]
    for index, usage in zip(_llm_indexes(run), run["usage"]):
        assert _triple(_span(run, index)["tokens"]) == usage
    assert _triple(trace["tokens"]) == [p1 + p2, c1 + c2, t1 + t2]
    assert trace["tokens"]["estimated"] is False
    cost = expected_cost(MODEL, p1, c1) + expected_cost(MODEL, p2, c2)
    assert trace["cost_usd"] == pytest.approx(cost, rel=1e-6)


# ----- streaming -------------------------------------------------------------------------------


def check_streaming_output_is_the_whole_stream(run: Dict[str, Any]) -> None:
    trace, span = run["trace"], _span(run)
    assert run["text"] == "Reply to: " + STORY
    assert run["chunks"] > 5  # really streamed, word by word
    assert span["kind"] == "llm"
    assert span["model"] == MODEL
    assert span["status"] == "success"
    assert [(m["role"], m["content"]) for m in span["input"]["messages"]] == [("user", STORY)]
    out = only(span["output"]["messages"])
    assert (out["role"], out["content"]) == ("assistant", run["text"])
    assert trace["prompt"] == STORY
    assert trace["response"] == run["text"]
    assert trace["status"] == "success"


def check_streaming_tokens_and_cost(run: Dict[str, Any]) -> None:
    trace, span = run["trace"], _span(run)
    assert run["usage"] is not None
    prompt, completion, total = run["usage"]
    assert _triple(span["tokens"]) == [prompt, completion, total]
    assert span["tokens"]["estimated"] is False
    assert trace["cost_usd"] == pytest.approx(expected_cost(MODEL, prompt, completion), rel=1e-6)


def check_streaming_without_usage_is_estimated(run: Dict[str, Any]) -> None:
    """No usage in the stream: the server estimates the counts from the text and says so."""
    trace, span = run["trace"], _span(run)
    assert run["usage"] is None
    assert run["text"] == "Reply to: " + STORY
    tokens = span["tokens"]
    assert tokens is not None
    assert tokens["estimated"] is True
    # "Tell me a story about a lighthouse" / "Reply to: Tell me a story about a lighthouse"
    assert 7 <= tokens["prompt"] <= 20
    assert 9 <= tokens["completion"] <= 20
    assert tokens["total"] == tokens["prompt"] + tokens["completion"]
    assert trace["tokens"]["estimated"] is True
    assert trace["cost_usd"] == pytest.approx(expected_cost(MODEL, tokens["prompt"], tokens["completion"]), rel=1e-6)


# ----- a call the provider refuses -------------------------------------------------------------


def check_failed_chat(run: Dict[str, Any]) -> None:
    trace, sent, span = run["trace"], run["spans"][0], _span(run)
    assert run["error"] is not None and run["error"]["type"] == "RateLimitError"
    assert span["kind"] == "llm"
    assert span["status"] == "error"
    assert span["error"] is not None
    assert span["error"]["type"].endswith("RateLimitError")
    assert "Simulated error 429 for model error-429" in span["error"]["message"]
    assert [(m["role"], m["content"]) for m in span["input"]["messages"]] == [("user", "Hello there")]
    assert trace["status"] == "error"
    assert trace["error_count"] == 1
    assert trace["failure_reason"] is not None
    assert sent["name"] in trace["failure_reason"]
    assert "RateLimitError" in trace["failure_reason"]
    assert trace["cost_usd"] is None  # no price for an unknown model, and nothing is guessed


def check_failed_chat_names_the_model(run: Dict[str, Any]) -> None:
    """Which model failed is the first thing a user looks for on a failed call."""
    assert _span(run)["model"] == "error-429"
    assert run["trace"]["model"] == "error-429"
