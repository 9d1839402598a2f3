"""Arize's OpenInference instrumentation (`openinference-instrumentation-openai`) wrapping the
official `openai` client in an app of its own (app_openai.py), exported with the OTLP/HTTP
exporter: the OpenInference dialect (`openinference.span.kind`,
`llm.input_messages.{i}.message.*`, `llm.output_messages.{i}.message.*`, `llm.token_count.*`)."""

from __future__ import annotations

from typing import Any, Dict

import pytest

import openai_scenarios as sc

INSTRUMENTATION = "openinference"
TRANSPORT = "http"


@pytest.fixture(scope="module")
def app(server: Any, llm: Any) -> Dict[str, Any]:
    return sc.run_app(server, llm.base_url, INSTRUMENTATION, TRANSPORT)


@pytest.fixture(scope="module")
def tool_call_run(server: Any, app: Dict[str, Any]) -> Dict[str, Any]:
    return sc.stored(server, app["tool_call"], 1)


@pytest.fixture(scope="module")
def tool_loop_run(server: Any, app: Dict[str, Any]) -> Dict[str, Any]:
    return sc.stored(server, app["tool_loop"], 3)


@pytest.fixture(scope="module")
def stream_run(server: Any, app: Dict[str, Any]) -> Dict[str, Any]:
    return sc.stored(server, app["stream"], 1)


@pytest.fixture(scope="module")
def stream_no_usage_run(server: Any, app: Dict[str, Any]) -> Dict[str, Any]:
    return sc.stored(server, app["stream_no_usage"], 1)


@pytest.fixture(scope="module")
def failed_run(server: Any, app: Dict[str, Any]) -> Dict[str, Any]:
    return sc.stored(server, app["failed"], 1)


def test_tool_call_chat_kind_model_status(tool_call_run: Dict[str, Any]) -> None:
    sc.check_tool_call_chat_kind_model_status(tool_call_run)


def test_tool_call_chat_input_messages(tool_call_run: Dict[str, Any]) -> None:
    sc.check_tool_call_chat_messages(tool_call_run)


def test_tool_call_chat_output_has_the_tool_call(tool_call_run: Dict[str, Any]) -> None:
    sc.check_tool_call_chat_output_tool_call(tool_call_run)


def test_tool_call_chat_tokens_and_cost(tool_call_run: Dict[str, Any]) -> None:
    sc.check_tool_call_chat_tokens_and_cost(tool_call_run)


def test_output_messages_carry_the_finish_reason(tool_call_run: Dict[str, Any], stream_run: Dict[str, Any]) -> None:
    sc.check_output_messages_carry_the_finish_reason(tool_call_run, stream_run)


def test_tool_loop_spans_nest_under_the_app_span(tool_loop_run: Dict[str, Any]) -> None:
    sc.check_tool_loop_structure(tool_loop_run)


def test_tool_loop_second_call_sees_the_tool_result(tool_loop_run: Dict[str, Any]) -> None:
    sc.check_tool_loop_tool_result_message(tool_loop_run)


def test_tool_loop_tokens_and_cost_roll_up(tool_loop_run: Dict[str, Any]) -> None:
    sc.check_tool_loop_tokens_and_cost(tool_loop_run)


def test_streaming_output_is_the_concatenated_stream(stream_run: Dict[str, Any]) -> None:
    sc.check_streaming_output_is_the_whole_stream(stream_run)


def test_streaming_tokens_and_cost_from_the_usage_chunk(stream_run: Dict[str, Any]) -> None:
    sc.check_streaming_tokens_and_cost(stream_run)


def test_streaming_without_usage_gets_estimated_tokens(stream_no_usage_run: Dict[str, Any]) -> None:
    sc.check_streaming_without_usage_is_estimated(stream_no_usage_run)


def test_refused_call_is_an_error_trace_with_its_reason(failed_run: Dict[str, Any]) -> None:
    sc.check_failed_chat(failed_run)


def test_refused_call_names_the_model_that_failed(failed_run: Dict[str, Any]) -> None:
    sc.check_failed_chat_names_the_model(failed_run)
