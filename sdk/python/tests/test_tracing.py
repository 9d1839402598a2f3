"""Decorators, spans and nesting, checked against what the real server stored."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

import pytest

import tracellm
from tracellm import trace, trace_tool

from .conftest import by_name


def children(trace_doc: Dict[str, Any], parent_id: str) -> List[Dict[str, Any]]:
    return [s for s in trace_doc["spans"] if s["parent_id"] == parent_id]


def test_sync_nesting_and_capture(server: Any) -> None:
    @trace_tool
    def search(query: str, limit: int = 3) -> List[str]:
        return ["doc-%d about %s" % (i, query) for i in range(limit)]

    @trace(kind="chain")
    def summarize(docs: List[str]) -> str:
        return " | ".join(docs)

    @trace(name="support-agent", tags=["prod", "v2"], metadata={"team": "search"})
    def answer(question: str) -> str:
        answer.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        docs = search(question, limit=2)
        with trace.span("rerank", kind="reranker", input={"n": len(docs)}) as span:
            span.set_output(docs[:1])
            span.set_attribute("strategy", "first")
        return summarize(docs)

    result = answer("what is RAG?")
    assert result == "doc-0 about what is RAG? | doc-1 about what is RAG?"
    assert tracellm.flush(10)
    stats = tracellm.stats()
    assert stats["sent"] == 1 and stats["dropped"] == 0
    stored = server.wait_trace(answer.trace_id)  # type: ignore[attr-defined]
    spans = by_name(stored)
    assert set(spans) == {"support-agent", "search", "rerank", "summarize"}
    root = spans["support-agent"]
    assert root["parent_id"] is None
    assert root["input"] == {"question": "what is RAG?"}
    assert root["output"] == result
    assert root["status"] == "success"
    assert stored["tags"] == ["prod", "v2"]
    assert stored["metadata"] == {"team": "search"}
    assert spans["search"]["parent_id"] == root["id"]
    assert spans["search"]["kind"] == "tool"
    assert spans["search"]["tool"]["name"] == "search"
    assert spans["search"]["tool"]["arguments"] == {"query": "what is RAG?", "limit": 2}
    assert spans["search"]["tool"]["result"] == ["doc-0 about what is RAG?", "doc-1 about what is RAG?"]
    assert spans["rerank"]["kind"] == "reranker"
    assert spans["rerank"]["parent_id"] == root["id"]
    assert spans["rerank"]["input"] == {"n": 2}
    assert spans["rerank"]["output"] == ["doc-0 about what is RAG?"]
    assert spans["rerank"]["attributes"]["strategy"] == "first"
    assert spans["summarize"]["kind"] == "chain"
    assert spans["summarize"]["parent_id"] == root["id"]
    # children start after and end before their parent
    for name in ("search", "rerank", "summarize"):
        assert spans[name]["start_time"] >= root["start_time"]
        assert spans[name]["end_time"] <= root["end_time"]


def test_trace_appears_without_flush(server: Any) -> None:
    tracellm.configure(flush_interval=0.2)

    @trace
    def quick() -> int:
        quick.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        return 1

    started = time.monotonic()
    quick()
    stored = server.wait_trace(quick.trace_id, timeout=5)  # type: ignore[attr-defined]
    assert time.monotonic() - started < 1.0, "trace took more than a second to appear"
    assert stored["name"] == "quick"


def test_async_nesting(server: Any) -> None:
    @trace(kind="retriever")
    async def fetch(key: str) -> str:
        await asyncio.sleep(0.01)
        return key.upper()

    @trace(name="async-root", kind="agent")
    async def root() -> List[str]:
        root.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        first = await fetch("a")
        second = await fetch("b")
        return [first, second]

    assert asyncio.run(root()) == ["A", "B"]
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)  # type: ignore[attr-defined]
    root_span = [s for s in stored["spans"] if s["parent_id"] is None]
    assert len(root_span) == 1 and root_span[0]["kind"] == "agent"
    kids = children(stored, root_span[0]["id"])
    assert sorted(k["output"] for k in kids) == ["A", "B"]
    assert all(k["kind"] == "retriever" for k in kids)


def test_concurrent_asyncio_tasks_nest_under_their_own_parent(server: Any) -> None:
    @trace
    async def leaf(n: int) -> int:
        await asyncio.sleep(0.001 * (5 - n))
        return n * 10

    @trace
    async def branch(n: int) -> int:
        await asyncio.sleep(0.001 * n)
        value = await leaf(n)
        await asyncio.sleep(0.001)
        return value + 1

    @trace(name="fan-out")
    async def root() -> List[int]:
        root.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        return list(await asyncio.gather(*(branch(n) for n in range(5))))

    assert asyncio.run(root()) == [1, 11, 21, 31, 41]
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)  # type: ignore[attr-defined]
    assert len(stored["spans"]) == 11
    spans = {s["id"]: s for s in stored["spans"]}
    root_span = next(s for s in stored["spans"] if s["parent_id"] is None)
    branches = children(stored, root_span["id"])
    assert sorted(b["input"]["n"] for b in branches) == [0, 1, 2, 3, 4]
    for b in branches:
        (leaf_span,) = children(stored, b["id"])
        assert leaf_span["name"] == "leaf"
        assert leaf_span["input"]["n"] == b["input"]["n"], "leaf nested under another task's branch"
        assert spans[leaf_span["parent_id"]] is b


def test_concurrent_roots_in_asyncio_tasks_are_separate_traces(server: Any) -> None:
    ids: Dict[int, str] = {}

    @trace
    async def step(n: int) -> int:
        await asyncio.sleep(0.002)
        return n

    @trace(name="task-root")
    async def job(n: int) -> int:
        ids[n] = tracellm.get_current_trace_id()  # type: ignore[assignment]
        await step(n)
        await asyncio.sleep(0.001)
        return await step(n + 100)

    async def main() -> List[int]:
        return list(await asyncio.gather(*(job(n) for n in range(10))))

    assert asyncio.run(main()) == [n + 100 for n in range(10)]
    assert tracellm.flush(10)
    assert len(set(ids.values())) == 10
    for n, trace_id in ids.items():
        stored = server.wait_trace(trace_id)
        assert len(stored["spans"]) == 3
        root_span = next(s for s in stored["spans"] if s["parent_id"] is None)
        assert root_span["input"] == {"n": n}
        assert sorted(s["input"]["n"] for s in children(stored, root_span["id"])) == [n, n + 100]


def test_threads_run_independent_traces(server: Any) -> None:
    ids: Dict[int, str] = {}
    barrier = threading.Barrier(8)

    @trace
    def work(worker: int, step: int) -> int:
        time.sleep(0.001)
        return worker * 100 + step

    @trace(name="thread-root")
    def run(worker: int) -> int:
        ids[worker] = tracellm.get_current_trace_id()  # type: ignore[assignment]
        barrier.wait()
        return sum(work(worker, step) for step in range(5))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    assert results == [w * 500 + 10 for w in range(8)]
    assert tracellm.flush(10)
    assert len(set(ids.values())) == 8
    for worker, trace_id in ids.items():
        stored = server.wait_trace(trace_id)
        assert len(stored["spans"]) == 6
        root_span = next(s for s in stored["spans"] if s["parent_id"] is None)
        kids = children(stored, root_span["id"])
        assert len(kids) == 5
        assert all(k["input"]["worker"] == worker for k in kids)


def test_bind_context_nests_thread_work_under_the_caller(server: Any) -> None:
    @trace_tool
    def lookup(item: str) -> str:
        return item * 2

    @trace(name="parallel-tools")
    def root() -> List[str]:
        root.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(tracellm.bind_context(lookup), x) for x in "abcd"]
            return [f.result() for f in futures]

    assert root() == ["aa", "bb", "cc", "dd"]
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)  # type: ignore[attr-defined]
    root_span = next(s for s in stored["spans"] if s["parent_id"] is None)
    kids = children(stored, root_span["id"])
    assert sorted(k["tool"]["result"] for k in kids) == ["aa", "bb", "cc", "dd"]


def test_span_ending_after_its_root_resends_the_trace(server: Any) -> None:
    release = threading.Event()
    done = threading.Event()

    @trace
    def background() -> str:
        release.wait(5)
        return "late"

    @trace(name="fire-and-forget")
    def root() -> str:
        root.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        thread = threading.Thread(target=tracellm.bind_context(lambda: (background(), done.set())))
        thread.start()
        return "returned early"

    assert root() == "returned early"
    first = server.wait_trace(root.trace_id)  # type: ignore[attr-defined]
    assert len(first["spans"]) == 1
    release.set()
    assert done.wait(5)
    stored = server.wait_trace(root.trace_id, until=lambda t: len(t["spans"]) == 2)  # type: ignore[attr-defined]
    late = next(s for s in stored["spans"] if s["name"] == "background")
    assert late["output"] == "late"
    assert late["parent_id"] == first["spans"][0]["id"]


def test_generator_spans(server: Any) -> None:
    @trace
    def tokenize(text: str) -> str:
        return text.lower()

    @trace(name="stream-words")
    def words(sentence: str):  # type: ignore[no-untyped-def]
        for word in sentence.split():
            yield tokenize(word)
        return "finished"

    @trace(name="generator-root")
    def root() -> List[str]:
        root.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        gen = words("Hello Big World")
        out = list(gen)
        early = words("one two three")
        first = next(early)
        early.close()
        return out + [first]

    assert root() == ["hello", "big", "world", "one"]
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)  # type: ignore[attr-defined]
    root_span = next(s for s in stored["spans"] if s["parent_id"] is None)
    gens = children(stored, root_span["id"])
    assert [g["name"] for g in gens] == ["stream-words", "stream-words"]
    full = next(g for g in gens if g["input"] == {"sentence": "Hello Big World"})
    assert full["output"] == ["hello", "big", "world"]
    assert full["attributes"]["generator.items"] == 3
    assert [c["output"] for c in children(stored, full["id"])] == ["hello", "big", "world"]
    partial = next(g for g in gens if g["input"] == {"sentence": "one two three"})
    assert partial["output"] == ["one"]
    assert partial["attributes"]["generator.closed_early"] is True


def test_generator_send_and_return_value_are_preserved() -> None:
    @trace
    def accumulator():  # type: ignore[no-untyped-def]
        total = 0
        while True:
            value = yield total
            if value is None:
                return total
            total += value

    gen = accumulator()
    assert next(gen) == 0
    assert gen.send(5) == 5
    assert gen.send(7) == 12
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == 12

    @trace
    def catcher():  # type: ignore[no-untyped-def]
        try:
            yield 1
        except KeyError:
            yield "caught"

    gen = catcher()
    assert next(gen) == 1
    assert gen.throw(KeyError("k")) == "caught"


def test_async_generator_spans(server: Any) -> None:
    @trace
    async def enrich(n: int) -> int:
        await asyncio.sleep(0)
        return n * n

    @trace(name="async-stream")
    async def numbers(count: int):  # type: ignore[no-untyped-def]
        for n in range(count):
            yield await enrich(n)

    @trace(name="agen-root")
    async def root() -> List[int]:
        root.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        return [n async for n in numbers(4)]

    assert asyncio.run(root()) == [0, 1, 4, 9]
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)  # type: ignore[attr-defined]
    spans = {s["id"]: s for s in stored["spans"]}
    stream = next(s for s in stored["spans"] if s["name"] == "async-stream")
    assert stream["output"] == [0, 1, 4, 9]
    enriched = [s for s in stored["spans"] if s["name"] == "enrich"]
    assert len(enriched) == 4
    assert all(spans[s["parent_id"]]["name"] == "async-stream" for s in enriched)


def test_decorated_callables_keep_their_shape() -> None:
    import inspect

    @trace
    def f(x: int) -> int:
        """doc"""
        return x

    @trace
    async def g() -> None: ...

    @trace
    def h():  # type: ignore[no-untyped-def]
        yield 1

    @trace
    async def k():  # type: ignore[no-untyped-def]
        yield 1

    assert f.__name__ == "f" and f.__doc__ == "doc"
    assert inspect.iscoroutinefunction(g)
    assert inspect.isgeneratorfunction(h)
    assert inspect.isasyncgenfunction(k)

    class Service:
        @trace
        def method(self, x: int) -> int:
            return x + 1

        @trace
        @staticmethod
        def static(x: int) -> int:
            return x + 2

        @trace
        @classmethod
        def klass(cls, x: int) -> int:
            return x + 3

    assert Service().method(1) == 2
    assert Service.static(1) == 3
    assert Service.klass(1) == 4


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_arguments_and_results_are_captured_safely(server: Any) -> None:
    from pydantic import BaseModel

    class Query(BaseModel):
        text: str
        top_k: int = 3

    tracellm.configure(max_field_chars=2000)
    cyclic: List[Any] = [1]
    cyclic.append(cyclic)

    @trace
    def handle(query: Query, point: Point, raw: bytes, blob: bytes, thing: Opaque, broken: BrokenRepr,
               big: str, cyc: List[Any], *rest: Any, **options: Any) -> Dict[str, Any]:
        handle.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        return {"point": point, "query": query, "set": {1}, "nan": float("nan")}

    result = handle(Query(text="hi"), Point(1, 2), b"bytes!", b"\xff\x00\xfe", Opaque(), BrokenRepr(),
                    "x" * 10_000, cyclic, "extra", flag=True)
    assert result["point"] == Point(1, 2)
    assert tracellm.flush(10)
    stored = server.wait_trace(handle.trace_id)  # type: ignore[attr-defined]
    captured = stored["spans"][0]["input"]
    assert captured["query"] == {"text": "hi", "top_k": 3}
    assert captured["point"] == {"x": 1, "y": 2}
    assert captured["raw"] == "bytes!"
    assert captured["blob"] == "<3 bytes>"
    assert captured["thing"] == "<Opaque thing>"
    assert captured["broken"] == "<unrepresentable BrokenRepr>"
    assert captured["big"].endswith("…[truncated]") and len(captured["big"]) < 2100
    assert captured["rest"] == ["extra"]
    assert captured["flag"] is True
    output = stored["spans"][0]["output"]
    assert output["point"] == {"x": 1, "y": 2}
    assert output["nan"] == "nan"


def test_update_current_trace_and_span_setters(server: Any) -> None:
    @trace(name="session-turn")
    def turn() -> None:
        turn.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        tracellm.update_current_trace(session_id="sess-1", user_id="user-9", tags=["beta"], metadata={"n": 1})
        with trace.span("call-model", kind="llm", model="gpt-4o", provider="openai") as span:
            span.set_input({"messages": [{"role": "user", "content": "hi"}]})
            span.set_output({"messages": [{"role": "assistant", "content": "hello"}]})
            span.set_tokens(prompt=10, completion=5)
            span.set_time_to_first_token(12.5)
            span.add_event("cache-miss", {"key": "k"})

    turn()
    assert tracellm.update_current_trace(session_id="x") is False
    assert tracellm.flush(10)
    stored = server.wait_trace(turn.trace_id)  # type: ignore[attr-defined]
    assert stored["session_id"] == "sess-1"
    assert stored["user_id"] == "user-9"
    assert stored["tags"] == ["beta"]
    assert stored["metadata"] == {"n": 1}
    llm = by_name(stored)["call-model"]
    assert llm["model"] == "gpt-4o" and llm["provider"] == "openai"
    assert llm["tokens"]["prompt"] == 10 and llm["tokens"]["completion"] == 5 and llm["tokens"]["total"] == 15
    assert llm["time_to_first_token_ms"] == 12.5
    assert llm["events"][0]["name"] == "cache-miss"
    assert llm["events"][0]["attributes"] == {"key": "k"}


async def test_async_span_context_manager(server: Any) -> None:
    async with trace.span("async-block", kind="agent") as span:
        trace_id = span.trace_id
        async with trace.span("inner", kind="tool") as inner:
            inner.set_tool(name="calc", arguments={"a": 1}, result=2)
    assert tracellm.flush(10)
    stored = server.wait_trace(trace_id)
    spans = by_name(stored)
    assert spans["inner"]["parent_id"] == spans["async-block"]["id"]
    assert spans["inner"]["tool"] == {"name": "calc", "arguments": {"a": 1}, "result": 2}


def test_disabled_sdk_records_nothing(server: Any) -> None:
    tracellm.configure(enabled=False)

    @trace
    def f(x: int) -> int:
        assert tracellm.get_current_span() is None
        return x * 2

    assert f(21) == 42
    with trace.span("noop") as span:
        span.set_output("ignored")
    assert tracellm.stats()["enqueued"] == 0


def test_unknown_kind_is_refused_at_decoration() -> None:
    with pytest.raises(ValueError):
        trace(kind="nonsense")
