"""A fault-injecting HTTP proxy placed between the SDK and the real TraceLLM server.

It does not imitate the server: requests it lets through are forwarded to the
real server and its real answers are relayed. It only adds faults the real
server cannot be asked to produce on demand (answering 500, or 503/429 with
Retry-After, for the next N requests) and records what the SDK sent.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.lock = threading.Lock()
        self.failures: List[Dict[str, Any]] = []  # queued faults, one per request
        self.log: List[Dict[str, Any]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                proxy._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                proxy._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail_next(self, count: int, status: int = 500, retry_after: Optional[str] = None) -> None:
        with self.lock:
            for _ in range(count):
                self.failures.append({"status": status, "retry_after": retry_after})

    def requests(self, path: str = "/traces") -> List[Dict[str, Any]]:
        with self.lock:
            return [entry for entry in self.log if entry["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self.lock:
            fault = self.failures.pop(0) if self.failures else None
        entry: Dict[str, Any] = {
            "time": time.monotonic(),
            "method": method,
            "path": handler.path,
            "headers": {k.lower(): v for k, v in handler.headers.items()},
            "body": body,
        }
        if fault is not None:
            entry["status"] = fault["status"]
            self._record(entry)
            payload = json.dumps({"error": {"code": "injected", "message": "fault injected by the test"}}).encode()
            handler.send_response(fault["status"])
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            if fault["retry_after"] is not None:
                handler.send_header("Retry-After", fault["retry_after"])
            handler.end_headers()
            handler.wfile.write(payload)
        else:
            connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
            connection.request(method, handler.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            entry["status"] = response.status
            self._record(entry)
            handler.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            connection.close()

    def _record(self, entry: Dict[str, Any]) -> None:
        # Logged before the answer is written, so a client that saw the answer sees the entry.
        with self.lock:
            self.log.append(entry)
