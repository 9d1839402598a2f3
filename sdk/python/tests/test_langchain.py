"""TraceLLMCallbackHandler with real langchain-core runnables over its fake chat model."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.runnables import RunnableConfig, RunnableLambda  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

import tracellm  # noqa: E402
from tracellm import trace  # noqa: E402
from tracellm.integrations.langchain import TraceLLMCallbackHandler  # noqa: E402


def root_of(stored: Dict[str, Any]) -> Dict[str, Any]:
    (root,) = [s for s in stored["spans"] if s["parent_id"] is None]
    return root


def kinds(stored: Dict[str, Any], kind: str) -> List[Dict[str, Any]]:
    return [s for s in stored["spans"] if s["kind"] == kind]


def trace_ids_sent(before: int) -> int:
    return tracellm.stats()["enqueued"] - before


def latest_trace(server: Any, name: str) -> Dict[str, Any]:
    from .conftest import http_json

    status, body = http_json("GET", server.url + "/traces?limit=20")
    assert status == 200, body
    for summary in body["traces"]:
        if summary["name"] == name:
            return server.get_trace(summary["id"])
    raise AssertionError("no trace named %s among %r" % (name, [t["name"] for t in body["traces"]]))


def test_prompt_model_parser_chain(server: Any) -> None:
    model = GenericFakeChatModel(messages=iter(["Transformers use attention."]))
    prompt = ChatPromptTemplate.from_messages([("system", "You explain ML."), ("human", "Explain {topic}")])
    chain = (prompt | model | StrOutputParser()).with_config(run_name="explain-chain")
    handler = TraceLLMCallbackHandler(tags=["langchain"], session_id="s-42")

    result = chain.invoke({"topic": "transformers"}, config={"callbacks": [handler]})
    assert result == "Transformers use attention."
    assert tracellm.flush(10)

    stored = latest_trace(server, "explain-chain")
    assert stored["tags"] == ["langchain"]
    assert stored["session_id"] == "s-42"
    root = root_of(stored)
    assert root["name"] == "explain-chain" and root["kind"] == "chain"
    assert root["input"] == {"topic": "transformers"}
    assert root["output"] == "Transformers use attention."
    (llm,) = kinds(stored, "llm")
    assert llm["parent_id"] == root["id"]
    assert llm["name"] == "GenericFakeChatModel"
    assert llm["input"]["messages"] == [
        {"role": "system", "content": "You explain ML."},
        {"role": "user", "content": "Explain transformers"},
    ]
    assert llm["output"]["messages"][0]["role"] == "assistant"
    assert llm["output"]["messages"][0]["content"] == "Transformers use attention."
    names = {s["name"] for s in stored["spans"]}
    assert {"ChatPromptTemplate", "StrOutputParser"} <= names
    assert all(s["parent_id"] == root["id"] for s in stored["spans"] if s is not root)


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order's status."""
    return "order %s shipped" % order_id


def test_agent_with_tool_calls(server: Any) -> None:
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[{"name": "lookup_order", "args": {"order_id": "A17"}, "id": "call_1"}],
                ),
                AIMessage(content="Your order A17 has shipped."),
            ]
        )
    )

    def run_agent(question: str, config: RunnableConfig) -> str:
        messages: List[Any] = [HumanMessage(content=question)]
        reply = model.invoke(messages, config=config)
        messages.append(reply)
        for call in reply.tool_calls:
            output = lookup_order.invoke(call["args"], config=config)
            messages.append(ToolMessage(content=output, tool_call_id=call["id"]))
        return model.invoke(messages, config=config).content

    agent = RunnableLambda(run_agent).with_config(run_name="order-agent")
    handler = TraceLLMCallbackHandler()
    answer = agent.invoke("Where is my order A17?", config={"callbacks": [handler]})
    assert answer == "Your order A17 has shipped."
    assert tracellm.flush(10)

    stored = latest_trace(server, "order-agent")
    root = root_of(stored)
    assert root["kind"] == "agent"
    llms = sorted(kinds(stored, "llm"), key=lambda s: s["start_time"])
    assert len(llms) == 2
    first_call = llms[0]["output"]["messages"][0]["tool_calls"][0]
    assert first_call["function"]["name"] == "lookup_order"
    assert first_call["id"] == "call_1"
    (tool_span,) = kinds(stored, "tool")
    assert tool_span["parent_id"] == root["id"]
    assert tool_span["tool"]["name"] == "lookup_order"
    assert tool_span["tool"]["arguments"] == {"order_id": "A17"}
    assert tool_span["tool"]["result"] == "order A17 shipped"
    roles = [m["role"] for m in llms[1]["input"]["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert llms[1]["output"]["messages"][0]["content"] == "Your order A17 has shipped."


class KeywordRetriever(BaseRetriever):
    docs: List[str]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> List[Document]:
        words = set(query.lower().split())
        return [Document(page_content=d, metadata={"i": i}) for i, d in enumerate(self.docs)
                if words & set(d.lower().split())]


def test_retriever_inside_a_traced_function(server: Any) -> None:
    retriever = KeywordRetriever(docs=["spans form a tree", "costs come from tokens", "a tree of spans"])
    model = GenericFakeChatModel(messages=iter(["Spans form a tree."]))
    handler = TraceLLMCallbackHandler()

    @trace(name="rag-pipeline", kind="agent")
    def rag(question: str) -> str:
        rag.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        docs = retriever.invoke(question, config={"callbacks": [handler]})
        context = "\n".join(d.page_content for d in docs)
        return model.invoke("Context:\n%s\nQ: %s" % (context, question), config={"callbacks": [handler]}).content

    assert rag("what tree do spans form") == "Spans form a tree."
    assert tracellm.flush(10)
    stored = server.wait_trace(rag.trace_id)  # type: ignore[attr-defined]
    root = root_of(stored)
    assert root["name"] == "rag-pipeline"
    (retrieval,) = kinds(stored, "retriever")
    assert retrieval["parent_id"] == root["id"]
    assert retrieval["input"] == {"query": "what tree do spans form"}
    assert [d["content"] for d in retrieval["output"]["documents"]] == ["spans form a tree", "a tree of spans"]
    (llm,) = kinds(stored, "llm")
    assert llm["parent_id"] == root["id"]


def test_streaming_chain_records_time_to_first_token(server: Any) -> None:
    model = GenericFakeChatModel(messages=iter(["one two three four"]))
    chain = (model | StrOutputParser()).with_config(run_name="streaming-chain")
    handler = TraceLLMCallbackHandler()
    pieces = list(chain.stream("go", config={"callbacks": [handler]}))
    assert "".join(pieces) == "one two three four"
    assert tracellm.flush(10)
    stored = latest_trace(server, "streaming-chain")
    (llm,) = kinds(stored, "llm")
    assert llm["time_to_first_token_ms"] is not None
    assert llm["output"]["messages"][0]["content"] == "one two three four"


def test_async_chain(server: Any) -> None:
    model = GenericFakeChatModel(messages=iter(["async answer", "second async answer"]))
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()).with_config(
        run_name="async-chain"
    )
    handler = TraceLLMCallbackHandler()

    async def main() -> List[str]:
        return list(await asyncio.gather(
            chain.ainvoke({"q": "a"}, config={"callbacks": [handler]}),
            chain.ainvoke({"q": "b"}, config={"callbacks": [handler]}),
        ))

    assert sorted(asyncio.run(main())) == ["async answer", "second async answer"]
    assert tracellm.flush(10)
    from .conftest import http_json

    summaries = [t for t in http_json("GET", server.url + "/traces?limit=20")[1]["traces"] if t["name"] == "async-chain"]
    assert len(summaries) >= 2
    for summary in summaries[:2]:
        stored = server.get_trace(summary["id"])
        root = root_of(stored)
        (llm,) = kinds(stored, "llm")
        assert llm["parent_id"] == root["id"]
        # each run's model call nests in its own trace, with its own prompt
        assert llm["input"]["messages"][0]["content"] == root["input"]["q"]


def test_chain_error_is_recorded_and_propagates(server: Any) -> None:
    class Refused(RuntimeError):
        pass

    def explode(_: Any) -> str:
        raise Refused("guardrail refused the input")

    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | RunnableLambda(explode)).with_config(
        run_name="failing-chain"
    )
    handler = TraceLLMCallbackHandler()
    with pytest.raises(Refused):
        chain.invoke({"q": "bad"}, config={"callbacks": [handler]})
    assert tracellm.flush(10)
    stored = latest_trace(server, "failing-chain")
    assert stored["status"] == "error"
    root = root_of(stored)
    assert root["error"]["type"] == "Refused"
    failing = [s for s in stored["spans"] if s["name"] == "explode"]
    assert failing and failing[0]["error"]["message"] == "guardrail refused the input"
