"""The real TraceLLM server, the stand-in LLM provider, and OpenTelemetry export pipelines.

Nothing of TraceLLM is imitated here: the server is the `tracellm` binary, the clients are the
official OpenTelemetry SDK and exporters. The only stand-in is the LLM provider
(tools/llm-test-server), which answers deterministically so that messages, tool calls and token
counts can be asserted exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

REPO = Path(__file__).resolve().parents[2]
LLM_TEST_SERVER = REPO / "tools" / "llm-test-server" / "server.py"

# USD per token, from the providers' public price pages (per million: gpt-4o 2.50 in / 10.00 out,
# gpt-4o-mini 0.15 in / 0.60 out). Written out here rather than read from the server so that a
# wrong price table shows up as a failure.
PRICES = {
    "gpt-4o": (2.50e-6, 10.0e-6),
    "gpt-4o-mini": (0.15e-6, 0.60e-6),
}


def expected_cost(model: str, prompt: int, completion: int) -> float:
    per_in, per_out = PRICES[model]
    return prompt * per_in + completion * per_out


def _load_provider_module() -> Any:
    spec = importlib.util.spec_from_file_location("llm_test_server", LLM_TEST_SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


provider_rules = _load_provider_module()
"""The stand-in provider's own module: its token counting and reply rules."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(method: str, url: str, timeout: float = 10.0) -> "tuple[int, Any]":
    request = urllib.request.Request(url, method=method)
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


def trace_hex(span: Any) -> str:
    """The 32-hex trace id of an OpenTelemetry span, as users see it in their own logs."""
    return format(span.get_span_context().trace_id, "032x")


def span_hex(span: Any) -> str:
    return format(span.get_span_context().span_id, "016x")


def as_json(value: Any) -> Any:
    """A JSON value whether it was stored as a structure or as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def only(items: Sequence[Any], what: str = "item") -> Any:
    assert len(items) == 1, "expected exactly one %s, got %d: %r" % (what, len(items), items)
    return items[0]


def spans_of_kind(trace: Dict[str, Any], kind: str) -> List[Dict[str, Any]]:
    return [s for s in trace["spans"] if s["kind"] == kind]


class TraceLLMServer:
    """One `tracellm start` process on free ports with a temporary data directory."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.dashboard_port = free_port()
        self.grpc_port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="tracellm-otlp-test-")
        self.url = "http://127.0.0.1:%d" % self.port
        self.grpc_endpoint = "127.0.0.1:%d" % self.grpc_port
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.process: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 30.0) -> "TraceLLMServer":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary), "start",
                    "--host", "127.0.0.1",
                    "--port", str(self.port),
                    "--dashboard-port", str(self.dashboard_port),
                    "--otlp-grpc-port", str(self.grpc_port),
                    "--data-dir", self.data_dir,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("tracellm exited with %s:\n%s" % (self.process.returncode, self.log()))
            try:
                status, _ = http_json("GET", self.url + "/", timeout=1.0)
                if status == 200 and self._grpc_listening():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("tracellm did not answer within %.0fs:\n%s" % (timeout, self.log()))

    def _grpc_listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def get_trace(self, trace_id: str) -> Optional[Dict[str, Any]]:
        status, body = http_json("GET", "%s/traces/%s" % (self.url, trace_id))
        if status == 404:
            return None
        assert status == 200, (status, body)
        return body

    def wait_trace(
        self,
        trace_id: str,
        spans: Optional[int] = None,
        until: Optional[Callable[[Dict[str, Any]], bool]] = None,
        timeout: float = 5.0,
    ) -> Dict[str, Any]:
        """The stored trace once it holds `spans` spans and `until` holds (exporters batch).

        After the timeout the last stored version is returned anyway, so that the assertions
        that follow say what is wrong with it; only a trace never stored fails here.
        """

        def ready(trace: Dict[str, Any]) -> bool:
            if spans is not None and len(trace.get("spans") or []) < spans:
                return False
            return until(trace) if until is not None else trace.get("status") != "running"

        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.get_trace(trace_id)
            if last is not None and ready(last):
                return last
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        assert last is not None, "trace %s was never stored; server log:\n%s" % (trace_id, self.log())
        return last


class LLMProvider:
    """The OpenAI-compatible stand-in provider, on a free port."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(LLM_TEST_SERVER), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError("llm-test-server did not start: %r" % line)
        self.url = line[len("listening on "):]
        self.base_url = self.url + "/v1"
        # Keep draining stdout so the provider never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class RecordingExporter(SpanExporter):
    """Passes spans to the real OTLP exporter and keeps its answers, so a refused export
    fails the test with the exporter's own result instead of a trace that never appears."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: List[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def otlp_exporter(server: TraceLLMServer, transport: str) -> SpanExporter:
    """A real OTLP span exporter pointed at the server: http, http-gzip, grpc or grpc-gzip."""
    return otlp_exporter_to(server.url, server.grpc_endpoint, transport)


def otlp_exporter_to(api_url: str, grpc_endpoint: str, transport: str) -> SpanExporter:
    if transport.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        compression = Compression.Gzip if transport == "http-gzip" else Compression.NoCompression
        return OTLPSpanExporter(endpoint=api_url + "/v1/traces", compression=compression, timeout=10)
    if transport.startswith("grpc"):
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        compression = grpc.Compression.Gzip if transport == "grpc-gzip" else grpc.Compression.NoCompression
        return GrpcSpanExporter(endpoint=grpc_endpoint, insecure=True, compression=compression, timeout=10)
    raise ValueError("unknown transport %r" % transport)


class Pipeline:
    """A TracerProvider exporting over OTLP to the server the way an app would (batching), plus
    an in-memory copy of every finished span so a test knows the ids the app saw."""

    def __init__(self, exporter: SpanExporter, service: str = "otlp-e2e") -> None:
        self.exporter = RecordingExporter(exporter)
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter, schedule_delay_millis=200))

    def tracer(self, name: str = "otlp-e2e") -> Any:
        return self.provider.get_tracer(name)

    def flush(self) -> None:
        assert self.provider.force_flush(10_000), "spans were not exported within 10 s"
        failed = [r for r in self.exporter.results if r is not SpanExportResult.SUCCESS]
        assert not failed, "the OTLP exporter reported %r" % failed

    def finished(self) -> List[ReadableSpan]:
        return list(self.memory.get_finished_spans())

    def clear(self) -> None:
        self.memory.clear()

    def shutdown(self) -> None:
        self.provider.shutdown()
