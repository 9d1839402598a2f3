"""Request sizing: batches stay well below the server's 10 MB limit, huge traces still land."""

from __future__ import annotations

from typing import Any, List

import tracellm
from tracellm import trace

from .faultproxy import FaultProxy
from .conftest import reset_sdk


def test_batches_are_split_by_size(server: Any) -> None:
    proxy = FaultProxy(server.url)
    try:
        reset_sdk(proxy.url, max_field_chars=400_000, flush_interval=0.5)
        ids: List[str] = []

        @trace(name="big-payload")
        def big(i: int, blob: str) -> int:
            ids.append(tracellm.get_current_trace_id() or "")
            return i

        for i in range(20):
            big(i, str(i) * 300_000)  # about 300 KB per trace, 6 MB in all
        assert tracellm.flush(30), tracellm.stats()
        posts = proxy.requests()
        assert len(posts) >= 3
        assert all(len(p["body"]) <= 2_000_000 for p in posts)
        assert all(p["status"] == 202 for p in posts)
        for i, trace_id in enumerate(ids):
            stored = server.get_trace(trace_id)
            assert stored is not None
            assert len(stored["spans"][0]["input"]["blob"]) >= 199_000
    finally:
        proxy.close()


def test_a_trace_over_the_request_limit_is_shrunk_not_lost(server: Any) -> None:
    reset_sdk(server.url, max_field_chars=400_000)

    @trace
    def step(i: int, blob: str) -> str:
        return blob

    @trace(name="huge-trace")
    def huge() -> None:
        huge.trace_id = tracellm.get_current_trace_id()  # type: ignore[attr-defined]
        for i in range(40):
            step(i, "y" * 300_000)  # 40 spans x (input + output) of 150-300 KB: over 10 MB

    huge()
    assert tracellm.flush(30), tracellm.stats()
    assert tracellm.stats()["rejected"] == 0
    stored = server.wait_trace(huge.trace_id)  # type: ignore[attr-defined]
    assert len(stored["spans"]) == 41
    assert stored["metadata"]["tracellm.truncated"] is True
    steps = [s for s in stored["spans"] if s["name"] == "step"]
    assert all(len(s["output"]) < 2_000 for s in steps)
