"""The user's exceptions reach the caller unchanged, and are recorded on the span."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any, List

import pytest

import tracellm
from tracellm import trace, trace_tool

from .conftest import by_name


class PaymentDeclined(Exception):
    def __init__(self, code: int) -> None:
        super().__init__("card declined (code %d)" % code)
        self.code = code


def raise_declined() -> None:
    raise PaymentDeclined(51)


def frames(exc: BaseException) -> List[Any]:
    """(file, function, line) of every traceback entry."""
    return [(f.filename, f.name, f.lineno) for f in traceback.extract_tb(exc.__traceback__)]


def tb_objects(exc: BaseException) -> List[Any]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def test_sync_exception_is_the_same_object_with_the_same_traceback(server: Any) -> None:
    raised: List[BaseException] = []

    def plain() -> None:
        try:
            raise_declined()
        except PaymentDeclined as exc:
            raised.append(exc)
            raise

    @trace_tool(name="charge")
    def charge() -> None:
        plain()

    @trace(name="checkout")
    def checkout() -> None:
        checkout.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        charge()

    with pytest.raises(PaymentDeclined) as info:
        checkout()
    exc = info.value
    assert exc is raised[0], "a different exception object reached the caller"
    assert type(exc) is PaymentDeclined and exc.code == 51
    assert exc.__cause__ is None and exc.__context__ is None and not exc.__suppress_context__
    # The traceback still ends in the user's frames, with the original traceback objects.
    assert frames(exc)[-1] == (__file__, "raise_declined", raise_declined.__code__.co_firstlineno + 1)
    assert [f[1] for f in frames(exc)][-3:] == ["charge", "plain", "raise_declined"]

    # compare with the same call path undecorated: the user's part of the chain is identical
    try:
        plain()
    except PaymentDeclined as bare:
        assert frames(bare)[-2:] == frames(exc)[-2:]

    assert tracellm.flush(10)
    stored = server.wait_trace(checkout.trace_id)  # type: ignore[attr-defined]
    assert stored["status"] == "error"
    spans = by_name(stored)
    for name in ("checkout", "charge"):
        error = spans[name]["error"]
        assert spans[name]["status"] == "error"
        assert error["type"] == "PaymentDeclined"
        assert error["message"] == "card declined (code 51)"
        assert "raise_declined" in error["stack"] and "PaymentDeclined" in error["stack"]


def test_traceback_objects_of_the_user_code_are_kept() -> None:
    captured: List[Any] = []

    def inner() -> None:
        try:
            raise_declined()
        except PaymentDeclined as exc:
            captured.extend(tb_objects(exc))
            raise

    @trace
    def outer() -> None:
        inner()

    with pytest.raises(PaymentDeclined) as info:
        outer()
    chain = tb_objects(info.value)
    # The traceback objects that existed when the user's code saw the exception are
    # the tail of the chain the caller gets: nothing was rebuilt or replaced.
    assert chain[-len(captured):] == captured
    assert all(a is b for a, b in zip(chain[-len(captured):], captured))


def test_async_exception_propagates_unchanged(server: Any) -> None:
    original: List[BaseException] = []

    @trace
    async def fails() -> None:
        await asyncio.sleep(0)
        exc = TimeoutError("upstream timed out")
        original.append(exc)
        raise exc

    @trace(name="async-fail-root")
    async def root() -> None:
        root.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        await fails()

    with pytest.raises(TimeoutError) as info:
        asyncio.run(root())
    assert info.value is original[0]
    assert frames(info.value)[-1][1] == "fails"
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)  # type: ignore[attr-defined]
    assert by_name(stored)["fails"]["error"]["type"] == "TimeoutError"


def test_generator_exception_propagates_unchanged(server: Any) -> None:
    boom = ValueError("bad item 2")

    @trace(name="gen-fail")
    def items():  # type: ignore[no-untyped-def]
        items.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        yield 1
        raise boom

    gen = items()
    assert next(gen) == 1
    with pytest.raises(ValueError) as info:
        next(gen)
    assert info.value is boom
    assert tracellm.flush(10)
    stored = server.wait_trace(items.trace_id)  # type: ignore[attr-defined]
    span = stored["spans"][0]
    assert span["status"] == "error" and span["error"]["message"] == "bad item 2"


def test_exception_inside_span_block_is_not_swallowed(server: Any) -> None:
    with pytest.raises(KeyError):
        with trace.span("lookup", kind="retriever") as span:
            trace_id = span.trace_id
            {}["missing"]
    assert tracellm.flush(10)
    stored = server.wait_trace(trace_id)
    assert stored["spans"][0]["error"]["type"] == "KeyError"


def test_base_exceptions_propagate() -> None:
    @trace
    def stop() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit) as info:
        stop()
    assert info.value.code == 3

    @trace
    async def cancelled() -> None:
        raise asyncio.CancelledError()

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())


def test_handled_exception_leaves_success(server: Any) -> None:
    @trace
    def flaky() -> None:
        raise ConnectionError("first try failed")

    @trace(name="recovering")
    def root() -> str:
        root.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        try:
            flaky()
        except ConnectionError:
            pass
        return "ok"

    assert root() == "ok"
    assert tracellm.flush(10)
    stored = server.wait_trace(root.trace_id)  # type: ignore[attr-defined]
    spans = by_name(stored)
    assert spans["recovering"]["status"] == "success"
    assert spans["flaky"]["status"] == "error"
