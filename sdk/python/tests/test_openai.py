"""wrap_openai / wrap_groq with the official clients against the OpenAI-compatible test server."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List

import openai
import pytest

import tracellm
from tracellm import trace, trace_tool, wrap_groq, wrap_openai

from .conftest import by_name, provider


def completion_tokens(prompt: str) -> int:
    return provider.count_tokens(provider.reply_for(prompt))


def prompt_tokens(messages: List[Dict[str, Any]]) -> int:
    return provider.prompt_tokens_for(messages)

SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Search the documentation",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
}


def client(llm: Any, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=llm.base_url, max_retries=0, **kwargs)


def async_client(llm: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=llm.base_url, max_retries=0)


def llm_spans(stored: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [s for s in stored["spans"] if s["kind"] == "llm"]


def test_chat_completion_inside_a_trace(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    assert isinstance(ai, openai.OpenAI)

    @trace(name="support-agent")
    def answer(question: str) -> str:
        answer.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        reply = ai.chat.completions.create(
            model="gpt-4o",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": question},
            ],
            temperature=0.2,
        )
        return reply.choices[0].message.content or ""

    assert answer("Explain transformers") == "Reply to: Explain transformers"
    assert tracellm.flush(10)
    stored = server.wait_trace(answer.trace_id)  # type: ignore[attr-defined]
    spans = by_name(stored)
    chat = spans["openai.chat"]
    assert chat["parent_id"] == spans["support-agent"]["id"]
    assert chat["kind"] == "llm"
    assert chat["model"] == "gpt-4o" and chat["provider"] == "openai"
    assert chat["input"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Explain transformers"},
    ]
    assert chat["output"]["messages"][0]["role"] == "assistant"
    assert chat["output"]["messages"][0]["content"] == "Reply to: Explain transformers"
    expected_prompt = prompt_tokens(chat["input"]["messages"])
    expected_completion = completion_tokens("Explain transformers")
    assert chat["tokens"]["prompt"] == expected_prompt
    assert chat["tokens"]["completion"] == expected_completion
    assert chat["tokens"]["total"] == expected_prompt + expected_completion
    assert chat["tokens"]["estimated"] is False
    assert chat["attributes"]["request.temperature"] == 0.2
    assert chat["status"] == "success"
    assert chat["latency_ms"] >= 0
    assert stored["model"] == "gpt-4o"
    assert stored["tokens"]["total"] == expected_prompt + expected_completion


def test_chat_completion_alone_is_its_own_trace(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    before = tracellm.stats()["enqueued"]
    ai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
    assert tracellm.flush(10)
    assert tracellm.stats()["enqueued"] == before + 1
    assert tracellm.stats()["sent"] >= 1


def test_async_chat_completion(server: Any, llm: Any) -> None:
    ai = wrap_openai(async_client(llm))

    @trace(name="async-agent")
    async def run() -> str:
        run.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        replies = await asyncio.gather(
            ai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "first"}]),
            ai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "second"}]),
        )
        return " / ".join(r.choices[0].message.content for r in replies)

    assert asyncio.run(run()) == "Reply to: first / Reply to: second"
    assert tracellm.flush(10)
    stored = server.wait_trace(run.trace_id)  # type: ignore[attr-defined]
    chats = llm_spans(stored)
    assert len(chats) == 2
    root = next(s for s in stored["spans"] if s["parent_id"] is None)
    assert all(c["parent_id"] == root["id"] for c in chats)
    assert sorted(c["output"]["messages"][0]["content"] for c in chats) == ["Reply to: first", "Reply to: second"]
    assert sorted(c["tokens"]["completion"] for c in chats) == [completion_tokens("first")] * 2


def _chunks_as_dicts(stream: Any) -> List[Dict[str, Any]]:
    return [chunk.model_dump() for chunk in stream]


def test_streaming_with_usage_records_ttft_tokens_and_content(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    plain = client(llm)
    request = dict(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Stream a short answer please"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Test-Delay-Ms": "60"},
    )
    expected = _chunks_as_dicts(plain.chat.completions.create(**request))

    @trace(name="streamer")
    def run() -> List[Dict[str, Any]]:
        run.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        stream = ai.chat.completions.create(**request)
        assert isinstance(stream, openai.Stream)
        return _chunks_as_dicts(stream)

    got = run()
    assert [c["choices"] for c in got] == [c["choices"] for c in expected]
    assert got[-1]["usage"] == expected[-1]["usage"] and got[-1]["usage"] is not None
    assert tracellm.flush(10)
    stored = server.wait_trace(run.trace_id)  # type: ignore[attr-defined]
    (chat,) = llm_spans(stored)
    assert chat["output"]["messages"][0]["content"] == "Reply to: Stream a short answer please"
    assert chat["tokens"]["prompt"] == prompt_tokens(request["messages"])  # type: ignore[arg-type]
    assert chat["tokens"]["completion"] == completion_tokens("Stream a short answer please")
    assert chat["tokens"]["estimated"] is False
    assert chat["time_to_first_token_ms"] >= 60
    assert chat["time_to_first_token_ms"] <= chat["latency_ms"] + 1
    assert chat["attributes"]["stream"] is True


def test_streaming_without_usage_leaves_the_request_alone(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    llm.reset()

    @trace(name="no-usage-stream")
    def run() -> str:
        run.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        stream = ai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "count words"}], stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream)

    assert run() == "Reply to: count words"
    body = llm.requests()[-1]["body"]
    assert "stream_options" not in body
    assert tracellm.flush(10)
    stored = server.wait_trace(run.trace_id)  # type: ignore[attr-defined]
    (chat,) = llm_spans(stored)
    assert chat["output"]["messages"][0]["content"] == "Reply to: count words"
    assert chat["time_to_first_token_ms"] is not None
    # no usage was reported: the SDK sent none and the server estimated it
    assert chat["tokens"] is None or chat["tokens"]["estimated"] is True


def test_stream_usage_option_adds_usage_and_hides_the_extra_chunk(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm), stream_usage=True)
    request = dict(model="gpt-4o", messages=[{"role": "user", "content": "hello there"}], stream=True)
    expected = _chunks_as_dicts(client(llm).chat.completions.create(**request))
    llm.reset()

    @trace(name="usage-stream")
    def run() -> List[Dict[str, Any]]:
        run.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        return _chunks_as_dicts(ai.chat.completions.create(**request))

    got = run()
    assert llm.requests()[-1]["body"]["stream_options"] == {"include_usage": True}
    # the caller sees exactly the chunks it would see without the SDK: no usage-only chunk
    assert len(got) == len(expected)
    assert [c["choices"] for c in got] == [c["choices"] for c in expected]
    assert tracellm.flush(10)
    (chat,) = llm_spans(server.wait_trace(run.trace_id))  # type: ignore[attr-defined]
    assert chat["tokens"]["completion"] == completion_tokens("hello there")
    assert chat["tokens"]["estimated"] is False


def test_async_streaming(server: Any, llm: Any) -> None:
    ai = wrap_openai(async_client(llm))

    @trace(name="async-streamer")
    async def run() -> str:
        run.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        stream = await ai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "async stream"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Test-Delay-Ms": "30"},
        )
        assert isinstance(stream, openai.AsyncStream)
        parts = []
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
        return "".join(parts)

    assert asyncio.run(run()) == "Reply to: async stream"
    assert tracellm.flush(10)
    (chat,) = llm_spans(server.wait_trace(run.trace_id))  # type: ignore[attr-defined]
    assert chat["output"]["messages"][0]["content"] == "Reply to: async stream"
    assert chat["time_to_first_token_ms"] >= 30
    assert chat["tokens"]["completion"] == completion_tokens("async stream")


def test_tool_call_agent_loop(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))

    @trace_tool
    def search_docs(query: str) -> str:
        return "TraceLLM stores traces locally"

    @trace(name="tool-agent", kind="agent")
    def agent(question: str) -> str:
        agent.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        messages: List[Any] = [{"role": "user", "content": question}]
        first = ai.chat.completions.create(model="gpt-4o", messages=messages, tools=[SEARCH_TOOL])
        call = first.choices[0].message.tool_calls[0]
        result = search_docs(**json.loads(call.function.arguments))
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        final = ai.chat.completions.create(model="gpt-4o", messages=messages, tools=[SEARCH_TOOL])
        return final.choices[0].message.content or ""

    assert agent("search_docs: where are traces kept?") == "Based on the tool result: TraceLLM stores traces locally"
    assert tracellm.flush(10)
    stored = server.wait_trace(agent.trace_id)  # type: ignore[attr-defined]
    chats = sorted(llm_spans(stored), key=lambda s: s["start_time"])
    assert len(chats) == 2
    first_out = chats[0]["output"]["messages"][0]
    assert first_out["content"] is None
    (tool_call,) = first_out["tool_calls"]
    assert tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "search_docs"
    assert json.loads(tool_call["function"]["arguments"]) == {"query": "search_docs: where are traces kept?"}
    assert chats[0]["attributes"]["finish_reasons"] == ["tool_calls"]
    assert chats[0]["input"]["tools"][0]["function"]["name"] == "search_docs"
    tool = next(s for s in stored["spans"] if s["kind"] == "tool")
    assert tool["tool"]["name"] == "search_docs"
    assert tool["tool"]["arguments"] == {"query": "search_docs: where are traces kept?"}
    assert tool["tool"]["result"] == "TraceLLM stores traces locally"
    assert chats[1]["input"]["messages"][-1]["role"] == "tool"
    assert chats[1]["output"]["messages"][0]["content"].startswith("Based on the tool result")


def test_streamed_tool_call(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    with trace.span("stream-tool") as root:
        stream = ai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "use a tool"}], tools=[SEARCH_TOOL], stream=True
        )
        for _ in stream:
            pass
    assert tracellm.flush(10)
    (chat,) = llm_spans(server.wait_trace(root.trace_id))
    (call,) = chat["output"]["messages"][0]["tool_calls"]
    assert call["function"]["name"] == "search_docs"
    assert json.loads(call["function"]["arguments"]) == {"query": "use a tool"}
    assert call["id"].startswith("call_")


def test_responses_api(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    with trace.span("responses-root") as root:
        response = ai.responses.create(model="gpt-4.1-mini", instructions="Be brief.", input="What is a span?")
        assert response.output_text == "Reply to: What is a span?"
        streamed = ai.responses.create(model="gpt-4.1-mini", input="stream this", stream=True,
                                       extra_headers={"X-Test-Delay-Ms": "40"})
        kinds = [event.type for event in streamed]
        assert kinds[-1] == "response.completed"
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)
    plain, stream = sorted(llm_spans(stored), key=lambda s: s["start_time"])
    assert plain["name"] == "openai.responses"
    assert plain["input"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a span?"},
    ]
    assert plain["output"]["messages"][0]["content"] == "Reply to: What is a span?"
    assert plain["tokens"]["prompt"] == prompt_tokens(plain["input"]["messages"])
    assert plain["tokens"]["completion"] == completion_tokens("What is a span?")
    assert stream["output"]["messages"][0]["content"] == "Reply to: stream this"
    assert stream["time_to_first_token_ms"] >= 40
    assert stream["tokens"]["completion"] == completion_tokens("stream this")


def test_embeddings(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    with trace.span("embed-root", kind="chain") as root:
        result = ai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
        assert len(result.data) == 2 and len(result.data[0].embedding) == 16
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)
    embedding = next(s for s in stored["spans"] if s["kind"] == "embedding")
    assert embedding["name"] == "openai.embeddings"
    assert embedding["model"] == "text-embedding-3-small"
    assert embedding["input"] == {"input": ["alpha", "beta gamma"]}
    assert embedding["output"] == {"embeddings": 2, "dimensions": 16}
    assert embedding["tokens"]["prompt"] == 3


def test_provider_error_propagates_and_is_recorded(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    bare = client(llm)
    with pytest.raises(openai.RateLimitError) as bare_info:
        bare.chat.completions.create(model="error-429", messages=[{"role": "user", "content": "x"}])

    @trace(name="rate-limited")
    def run() -> None:
        run.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        ai.chat.completions.create(model="error-429", messages=[{"role": "user", "content": "x"}])

    with pytest.raises(openai.RateLimitError) as info:
        run()
    assert type(info.value) is type(bare_info.value)
    assert info.value.status_code == 429
    assert str(info.value) == str(bare_info.value)
    assert tracellm.flush(10)
    stored = server.wait_trace(run.trace_id)  # type: ignore[attr-defined]
    (chat,) = llm_spans(stored)
    assert chat["status"] == "error"
    assert chat["error"]["type"] == "RateLimitError"
    assert "Simulated error 429" in chat["error"]["message"]
    assert chat["attributes"]["http.status_code"] == 429
    assert stored["status"] == "error"


def test_retried_llm_call_after_failure(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    llm.reset()

    @trace(name="retrying-agent")
    def run() -> str:
        run.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        for _ in range(3):
            try:
                reply = ai.chat.completions.create(model="flaky-1-gpt-4o", messages=[{"role": "user", "content": "hi"}])
                return reply.choices[0].message.content or ""
            except openai.InternalServerError:
                continue
        return ""

    assert run() == "Reply to: hi"
    assert tracellm.flush(10)
    stored = server.wait_trace(run.trace_id)  # type: ignore[attr-defined]
    chats = sorted(llm_spans(stored), key=lambda s: s["start_time"])
    assert [c["status"] for c in chats] == ["error", "success"]
    assert stored["retries"] == 1
    assert stored["status"] == "retried"


def test_with_options_copy_is_traced(server: Any, llm: Any) -> None:
    ai = wrap_openai(client(llm))
    with trace.span("copy-root") as root:
        ai.with_options(timeout=5).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "copied"}]
        )
    assert tracellm.flush(10)
    (chat,) = llm_spans(server.wait_trace(root.trace_id))
    assert chat["output"]["messages"][0]["content"] == "Reply to: copied"


def test_wrapping_twice_records_once(server: Any, llm: Any) -> None:
    ai = wrap_openai(wrap_openai(client(llm)))
    with trace.span("twice") as root:
        ai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "once"}])
    assert tracellm.flush(10)
    assert len(llm_spans(server.wait_trace(root.trace_id))) == 1


def test_groq_client(server: Any, llm: Any) -> None:
    groq = pytest.importorskip("groq")
    ai = wrap_groq(groq.Groq(api_key="gsk-test", base_url=llm.url, max_retries=0))

    @trace(name="groq-agent")
    def run() -> str:
        run.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        plain = ai.chat.completions.create(model="llama-3.1-8b-instant", messages=[{"role": "user", "content": "hi groq"}])
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in ai.chat.completions.create(
                model="llama-3.1-8b-instant", messages=[{"role": "user", "content": "stream groq"}], stream=True
            )
        )
        return (plain.choices[0].message.content or "") + " | " + streamed

    assert run() == "Reply to: hi groq | Reply to: stream groq"
    assert tracellm.flush(10)
    stored = server.wait_trace(run.trace_id)  # type: ignore[attr-defined]
    plain, streamed = sorted(llm_spans(stored), key=lambda s: s["start_time"])
    assert plain["name"] == "groq.chat" and plain["provider"] == "groq"
    assert plain["model"] == "llama-3.1-8b-instant"
    assert plain["tokens"]["completion"] == completion_tokens("hi groq")
    # Groq reports streamed usage in x_groq without being asked
    assert streamed["tokens"]["completion"] == completion_tokens("stream groq")
    assert streamed["tokens"]["estimated"] is False
    assert streamed["output"]["messages"][0]["content"] == "Reply to: stream groq"
    assert streamed["time_to_first_token_ms"] is not None


def test_async_groq_client(server: Any, llm: Any) -> None:
    groq = pytest.importorskip("groq")
    ai = wrap_groq(groq.AsyncGroq(api_key="gsk-test", base_url=llm.url, max_retries=0))

    async def run() -> str:
        async with trace.span("async-groq") as root:
            run.trace_id = root.trace_id  # type: ignore[attr-defined]
            reply = await ai.chat.completions.create(
                model="llama-3.3-70b-versatile", messages=[{"role": "user", "content": "async groq"}]
            )
            return reply.choices[0].message.content or ""

    assert asyncio.run(run()) == "Reply to: async groq"
    assert tracellm.flush(10)
    (chat,) = llm_spans(server.wait_trace(run.trace_id))  # type: ignore[attr-defined]
    assert chat["provider"] == "groq" and chat["tokens"]["completion"] == completion_tokens("async groq")


def test_structured_output_parse_and_raw_response(server: Any, llm: Any) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str
        confidence: float

    ai = wrap_openai(client(llm))
    with trace.span("structured") as root:
        parsed = ai.chat.completions.parse(
            model="gpt-4o", messages=[{"role": "user", "content": "classify this"}], response_format=Answer
        )
        assert parsed.choices[0].message.parsed == Answer(text="classify this", confidence=1.0)
        raw = ai.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "raw please"}]
        )
        assert raw.headers.get("content-type") == "application/json"
        assert raw.parse().choices[0].message.content == "Reply to: raw please"
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)
    first, second = sorted(llm_spans(stored), key=lambda s: s["start_time"])
    assert json.loads(first["output"]["messages"][0]["content"]) == {"text": "classify this", "confidence": 1.0}
    assert first["tokens"]["estimated"] is False
    assert second["output"]["messages"][0]["content"] == "Reply to: raw please"
    assert second["tokens"]["completion"] == completion_tokens("raw please")
