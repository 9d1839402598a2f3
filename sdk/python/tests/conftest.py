"""Fixtures: the real TraceLLM server, the OpenAI-compatible test provider, SDK state.

The server binary comes from ``TRACELLM_BIN`` (default ``<repo>/target/debug/tracellm``)
and runs as ``tracellm start`` on free ports with a temporary data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

import tracellm
from tracellm import _config, _exporter

REPO = Path(__file__).resolve().parents[3]
LLM_TEST_SERVER = REPO / "tools" / "llm-test-server" / "server.py"


def _load_provider_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("llm_test_server", LLM_TEST_SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


provider = _load_provider_module()
"""The test provider's own module, for its deterministic token counts."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(method: str, url: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
              timeout: float = 10.0) -> "tuple[int, Any]":
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode("utf-8", "replace")


def server_binary() -> Path:
    path = Path(os.environ.get("TRACELLM_BIN") or REPO / "target" / "debug" / "tracellm")
    if not path.exists():
        pytest.fail(
            "TraceLLM server binary not found at %s: build it (cargo build -p tracellm-cli) or set TRACELLM_BIN"
            % path,
            pytrace=False,
        )
    return path


class TraceLLMServer:
    """One real ``tracellm start`` process."""

    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.dashboard_port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="tracellm-sdk-test-")
        self.url = "http://127.0.0.1:%d" % self.port
        self.process: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(self.data_dir, "server.log")

    def start(self, timeout: float = 30.0) -> "TraceLLMServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                str(server_binary()),
                "start",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--dashboard-port", str(self.dashboard_port),
                "--data-dir", self.data_dir,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("tracellm exited with %s:\n%s" % (self.process.returncode, self.log()))
            try:
                status, body = http_json("GET", self.url + "/", timeout=1.0)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("tracellm did not answer GET / within %.0fs:\n%s" % (timeout, self.log()))

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGCONT)
            except OSError:
                pass
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    # ----- queries ---------------------------------------------------------

    def get_trace(self, trace_id: str) -> Optional[Dict[str, Any]]:
        status, body = http_json("GET", "%s/traces/%s" % (self.url, trace_id))
        if status == 404:
            return None
        assert status == 200, (status, body)
        return body

    def wait_trace(
        self,
        trace_id: str,
        timeout: float = 10.0,
        until: Optional[Callable[[Dict[str, Any]], bool]] = None,
    ) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.get_trace(trace_id)
            if last is not None and (until is None or until(last)):
                return last
            time.sleep(0.05)
        raise AssertionError("trace %s not stored as expected within %.1fs; last seen: %r" % (trace_id, timeout, last))


@pytest.fixture(scope="session")
def server() -> Any:
    instance = TraceLLMServer().start()
    yield instance
    instance.cleanup()


class LLMTestServer:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(LLM_TEST_SERVER), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError("llm-test-server did not start: %r %s" % (line, self.process.stderr.read()))
        self.url = line[len("listening on "):]
        self.base_url = self.url + "/v1"

    def requests(self) -> List[Dict[str, Any]]:
        return http_json("GET", self.url + "/_test/requests")[1]["requests"]

    def reset(self) -> None:
        http_json("POST", self.url + "/_test/reset", {})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def llm() -> Any:
    instance = LLMTestServer()
    yield instance
    instance.stop()


def reset_sdk(endpoint: str, **options: Any) -> None:
    _exporter.reset_exporter()
    _config.reset_config()
    options.setdefault("flush_interval", 0.05)
    tracellm.configure(endpoint=endpoint, api_key=None, project=None, **options)


@pytest.fixture(autouse=True)
def sdk(request: Any) -> Any:
    """Fresh SDK state per test, pointed at the session's server (when the test uses it)."""
    endpoint = "http://127.0.0.1:9"
    if "server" in request.fixturenames:
        endpoint = request.getfixturevalue("server").url
    reset_sdk(endpoint)
    yield
    _exporter.reset_exporter()
    _config.reset_config()


def by_name(trace: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Spans of a stored trace keyed by name (names must be unique in the trace)."""
    spans: Dict[str, Dict[str, Any]] = {}
    for span in trace["spans"]:
        assert span["name"] not in spans, "duplicate span name %s" % span["name"]
        spans[span["name"]] = span
    return spans
