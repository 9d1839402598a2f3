"""Session fixtures: one real TraceLLM server and one stand-in LLM provider for the whole run.

The server binary comes from TRACELLM_BIN (default <repo>/target/debug/tracellm).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

# The shared scenario and helper modules assert too: have pytest explain their failures.
pytest.register_assert_rewrite("openai_scenarios", "support")

from support import REPO, LLMProvider, TraceLLMServer  # noqa: E402


@pytest.fixture(scope="session")
def server() -> Iterator[TraceLLMServer]:
    binary = Path(os.environ.get("TRACELLM_BIN") or REPO / "target" / "debug" / "tracellm")
    if not binary.exists():
        pytest.fail("server binary %s not found: build it (cargo build -p tracellm-cli) or set TRACELLM_BIN"
                    % binary, pytrace=False)
    instance = TraceLLMServer(binary).start()
    yield instance
    instance.cleanup()


@pytest.fixture(scope="session")
def llm() -> Iterator[LLMProvider]:
    provider = LLMProvider()
    yield provider
    provider.stop()
