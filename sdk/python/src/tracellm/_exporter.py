"""Background export of finished traces to the TraceLLM server.

The application thread only appends a finished trace to a bounded in-memory
queue (one lock, no I/O, no serialization). A daemon thread turns traces into
JSON, batches them into ``POST {endpoint}/traces`` requests over one kept-alive
HTTP connection, retries failures with exponential backoff (honouring
``Retry-After`` on 429/503) and counts what it had to drop. When the server is
down the application notices nothing but a single logged warning.
"""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import os
import random
import ssl
import sys
import threading
import time
from collections import deque
from email.utils import parsedate_to_datetime
from typing import Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from ._config import Config, get_config
from ._serialize import capture
from ._version import __version__

logger = logging.getLogger("tracellm")

_MAX_REQUEST_BYTES = 9_000_000  # the server refuses bodies over 10 MB
_SHRUNK_FIELD_CHARS = 1_000


def format_time(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC with microseconds."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%06dZ" % (rest // 1000)


def _shrink(value: Any) -> Any:
    return None if value is None else capture(value, _SHRUNK_FIELD_CHARS)


def span_document(span: Any, shrink: bool = False) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "id": span.id,
        "parent_id": span.parent_id,
        "name": span.name,
        "kind": span.kind,
        "start_time": format_time(span.start_ns),
        "end_time": format_time(span.end_ns or span.start_ns),
        "status": span.status,
    }
    if span.model is not None:
        doc["model"] = span.model
    if span.provider is not None:
        doc["provider"] = span.provider
    if span.input is not None:
        doc["input"] = _shrink(span.input) if shrink else span.input
    if span.output is not None:
        doc["output"] = _shrink(span.output) if shrink else span.output
    if span.tool is not None:
        doc["tool"] = _shrink(span.tool) if shrink else span.tool
    if span.tokens:
        doc["tokens"] = dict(span.tokens)
    if span.ttft_ms is not None:
        doc["time_to_first_token_ms"] = span.ttft_ms
    doc["error"] = span.error
    if span.attributes:
        doc["attributes"] = _shrink(span.attributes) if shrink else dict(span.attributes)
    if span.events:
        doc["events"] = [
            {"name": e["name"], "time": format_time(e["time_ns"]), "attributes": e.get("attributes") or {}}
            for e in span.events
        ]
    return doc


def trace_document(trace: Any, shrink: bool = False) -> Dict[str, Any]:
    """The native ingest document of one trace."""
    spans = list(trace.spans)
    root = trace.root
    metadata = dict(trace.metadata)
    if trace.dropped_spans:
        metadata["tracellm.dropped_spans"] = trace.dropped_spans
    if shrink:
        metadata["tracellm.truncated"] = True
    return {
        "id": trace.id,
        "name": trace.name,
        "timestamp": format_time(root.start_ns),
        "end_time": format_time(root.end_ns or root.start_ns),
        "session_id": trace.session_id,
        "user_id": trace.user_id,
        "tags": list(trace.tags),
        "metadata": metadata,
        "spans": [span_document(s, shrink) for s in spans],
    }


def _encode(doc: Dict[str, Any]) -> bytes:
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    return text.encode("utf-8", "replace")


def encode_trace(trace: Any) -> bytes:
    data = _encode(trace_document(trace))
    if len(data) > _MAX_REQUEST_BYTES:
        data = _encode(trace_document(trace, shrink=True))
    return data


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


_RETRYABLE = frozenset([0, 408, 425, 429, 500, 502, 503, 504])


class Exporter:
    """Bounded queue plus one daemon thread that ships traces in batches."""

    def __init__(self) -> None:
        # Re-entrant: a span may be ended from a finalizer run by the garbage collector
        # while this very thread is inside enqueue().
        self._lock = threading.RLock()
        self._queue: Deque[Any] = deque()
        self._wake = threading.Event()  # work arrived, or a flush/shutdown
        self._urgent = threading.Event()  # a flush/shutdown: stop gathering, cut backoff short
        self._stop = threading.Event()  # shutdown gave up waiting: cut every wait short
        self._cond = threading.Condition(threading.Lock())
        self._thread: Optional[threading.Thread] = None
        self._closing = False
        self._deadline = 0.0
        self._flush_waiters = 0
        # counters (traces)
        self._enqueued = 0
        self._processed = 0
        self._sent = 0
        self._dropped = 0
        self._rejected = 0
        self._requests = 0
        self._failed_requests = 0
        # transport state
        self._conn: Optional[http.client.HTTPConnection] = None
        self._conn_key: Optional[Tuple[Any, ...]] = None
        self._outage = False
        self._warned: "set[str]" = set()
        self._last_error: Optional[str] = None

    # ----- application side ------------------------------------------------

    def enqueue(self, trace: Any) -> bool:
        cfg = get_config()
        with self._lock:
            if self._closing or len(self._queue) >= cfg.max_queue_size:
                self._dropped += 1
                trace.pending = False
                dropped = True
            else:
                self._queue.append(trace)
                self._enqueued += 1
                size = len(self._queue)
                dropped = False
            thread = self._thread
        if dropped:
            if "export" not in self._warned:
                self._warn(
                    "export",
                    "TraceLLM: the export queue is full (%d traces); dropping new traces (see tracellm.stats())",
                    cfg.max_queue_size,
                )
            return False
        if thread is None:
            self._start()
        if size == 1 or size >= cfg.max_batch_size:
            self._wake.set()
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closing:
                return
            thread = threading.Thread(target=self._run, name="tracellm-exporter", daemon=True)
            self._thread = thread
        try:
            thread.start()
        except RuntimeError:
            # The interpreter is shutting down: nothing can be sent any more.
            with self._lock:
                self._closing = True
                self._dropped += len(self._queue)
                self._processed += len(self._queue)
                self._queue.clear()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every trace finished before this call is exported (or dropped)."""
        with self._lock:
            target = self._enqueued
            thread = self._thread
        if self._processed >= target:
            return True
        if thread is None:
            self._start()
        with self._cond:
            self._flush_waiters += 1
            self._urgent.set()
            self._wake.set()
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._processed < target:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Send what is queued (within ``timeout``) and stop the thread."""
        cfg = get_config()
        timeout = cfg.shutdown_timeout if timeout is None else timeout
        with self._lock:
            if self._closing:
                return not self._queue
            self._closing = True
            thread = self._thread
            busy = self._processed < self._enqueued
        if thread is None or not thread.is_alive():
            return not busy
        if self._outage:
            # The server was unreachable at the last attempt: one more try, no waiting.
            self._stop.set()
            timeout = min(timeout, 1.0)
        self._deadline = time.monotonic() + timeout
        self._urgent.set()
        self._wake.set()
        thread.join(timeout)
        self._stop.set()
        return not thread.is_alive()

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            queued = len(self._queue)
        return {
            "queued": queued,
            "enqueued": self._enqueued,
            "sent": self._sent,
            "dropped": self._dropped,
            "rejected": self._rejected,
            "requests": self._requests,
            "failed_requests": self._failed_requests,
            "server_reachable": not self._outage,
            "last_error": self._last_error,
        }

    # ----- exporter thread --------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                self._gather()
                self._drain()
                with self._cond:
                    if not self._flush_waiters:
                        self._urgent.clear()
                    self._cond.notify_all()
                if self._closing and not self._queue:
                    break
        except Exception:  # never let the thread die silently with work queued
            logger.debug("TraceLLM exporter thread failed", exc_info=True)
        finally:
            self._close_connection()

    def _gather(self) -> None:
        """Give the application a moment to finish more traces, for fuller batches."""
        cfg = get_config()
        deadline = time.monotonic() + cfg.flush_interval
        while not self._urgent.is_set() and not self._closing and len(self._queue) < cfg.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.wait(remaining)
            self._wake.clear()

    def _take(self, count: int) -> List[Any]:
        with self._lock:
            batch: List[Any] = []
            while self._queue and len(batch) < count:
                batch.append(self._queue.popleft())
        return batch

    def _drain(self) -> None:
        while True:
            cfg = get_config()
            batch = self._take(cfg.max_batch_size)
            if not batch:
                return
            groups: Dict[Tuple[Optional[str], Optional[str]], List[bytes]] = {}
            for trace in batch:
                trace.pending = False  # spans ending from here on trigger a new send
                try:
                    data = encode_trace(trace)
                except Exception as exc:
                    logger.debug("TraceLLM: could not encode trace %s: %r", getattr(trace, "id", "?"), exc)
                    self._finish(1, rejected=True)
                    continue
                credentials = (trace.api_key or cfg.api_key, trace.project or cfg.project)
                groups.setdefault(credentials, []).append(data)
            for credentials, docs in groups.items():
                for chunk in self._chunks(docs, cfg):
                    self._deliver(chunk, credentials)

    @staticmethod
    def _chunks(docs: List[bytes], cfg: Config) -> List[List[bytes]]:
        chunks: List[List[bytes]] = []
        current: List[bytes] = []
        size = 0
        limit = max(1024, min(cfg.max_batch_bytes, _MAX_REQUEST_BYTES))
        for doc in docs:
            if current and (size + len(doc) + 1 > limit or len(current) >= cfg.max_batch_size):
                chunks.append(current)
                current, size = [], 0
            current.append(doc)
            size += len(doc) + 1
        if current:
            chunks.append(current)
        return chunks

    def _deliver(self, docs: List[bytes], credentials: Tuple[Optional[str], Optional[str]]) -> None:
        attempt = 0
        body = b'{"traces":[' + b",".join(docs) + b"]}"
        while True:
            status, retry_after, message = self._post(body, credentials)
            if 200 <= status < 300:
                self._recovered()
                self._finish(len(docs), sent=True)
                return
            if status in (400, 413, 422) and len(docs) > 1:
                # Split to isolate the document the server refuses; the rest still lands.
                half = len(docs) // 2
                self._deliver(docs[:half], credentials)
                self._deliver(docs[half:], credentials)
                return
            if status not in _RETRYABLE:
                self._warn(
                    "rejected:%d" % status,
                    "TraceLLM: the server refused %d trace(s) with HTTP %d: %s",
                    len(docs),
                    status,
                    message,
                )
                self._finish(len(docs), rejected=True)
                return
            self._outage = True
            self._warn(
                "export",
                "TraceLLM: cannot export traces to %s (%s); the application is not affected, "
                "traces are kept in a bounded queue and retried",
                get_config().endpoint,
                message,
            )
            cfg = get_config()
            if retry_after is not None:
                delay = min(retry_after, cfg.max_retry_after)
            else:
                delay = min(cfg.max_backoff, cfg.initial_backoff * (2 ** min(attempt, 20)))
                delay *= 0.5 + random.random() * 0.5
            attempt += 1
            if self._closing and (self._stop.is_set() or time.monotonic() + delay > self._deadline):
                self._finish(len(docs), dropped=True)
                return
            if retry_after is not None:
                self._stop.wait(delay)
            elif not self._urgent.is_set():
                self._urgent.wait(delay)
            else:
                self._stop.wait(min(delay, 0.05))

    def _finish(self, count: int, sent: bool = False, rejected: bool = False, dropped: bool = False) -> None:
        with self._cond:
            self._processed += count
            if sent:
                self._sent += count
            if rejected:
                self._rejected += count
            if dropped:
                self._dropped += count
            self._cond.notify_all()

    # ----- transport --------------------------------------------------------

    def _connection(self, cfg: Config) -> Tuple[http.client.HTTPConnection, str, bool]:
        parts = urlsplit(cfg.endpoint)
        key = (parts.scheme, parts.hostname, parts.port, cfg.timeout)
        fresh = False
        if self._conn is None or self._conn_key != key:
            self._close_connection()
            host = parts.hostname or "127.0.0.1"
            if parts.scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    host, parts.port or 443, timeout=cfg.timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(host, parts.port or 80, timeout=cfg.timeout)
            self._conn_key = key
            fresh = True
        path = parts.path.rstrip("/") + "/traces"
        return self._conn, path, fresh

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _post(self, body: bytes, credentials: Tuple[Optional[str], Optional[str]]) -> Tuple[int, Optional[float], str]:
        """One POST; returns (status or 0 for a transport error, Retry-After seconds, message)."""
        cfg = get_config()
        api_key, project = credentials
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "User-Agent": "tracellm-python/" + __version__,
            "Accept": "application/json",
        }
        if api_key:
            headers["Authorization"] = "Bearer " + api_key
        if project:
            headers["X-TraceLLM-Project"] = project
        self._requests += 1
        for _ in range(2):
            try:
                conn, path, fresh = self._connection(cfg)
            except Exception as exc:
                return self._transport_error(exc)
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._close_connection()
                if not fresh:
                    continue  # the server closed an idle kept-alive connection: retry at once
                return self._transport_error(exc)
            except Exception as exc:
                self._close_connection()
                return self._transport_error(exc)
            if response.will_close:
                self._close_connection()
            status = response.status
            if status >= 300:
                self._failed_requests += 1
            message = "HTTP %d" % status
            if status >= 300:
                try:
                    error = json.loads(data.decode("utf-8")).get("error") or {}
                    message = "HTTP %d %s: %s" % (status, error.get("code", ""), error.get("message", ""))
                except Exception:
                    message = "HTTP %d: %s" % (status, data[:200].decode("utf-8", "replace"))
                self._last_error = message
            return status, _parse_retry_after(response.getheader("Retry-After")), message
        return self._transport_error(ConnectionError("connection closed"))

    def _transport_error(self, exc: BaseException) -> Tuple[int, Optional[float], str]:
        self._failed_requests += 1
        message = "%s: %s" % (type(exc).__name__, exc)
        self._last_error = message
        return 0, None, message

    # ----- logging ----------------------------------------------------------

    def _warn(self, key: str, message: str, *args: Any) -> None:
        if key in self._warned:
            logger.debug(message, *args)
            return
        self._warned.add(key)
        logger.warning(message, *args)

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            logger.info("TraceLLM: export to %s works again", get_config().endpoint)


_exporter: Optional[Exporter] = None
_exporter_lock = threading.Lock()


def get_exporter() -> Exporter:
    exporter = _exporter
    if exporter is not None:
        return exporter
    return _create()


def _create() -> Exporter:
    global _exporter
    with _exporter_lock:
        if _exporter is None:
            _exporter = Exporter()
            _register_process_exit()
        return _exporter


def _register_process_exit() -> None:
    """Also flush when a multiprocessing child ends: it exits with os._exit, skipping atexit."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    try:
        util.Finalize(None, _at_exit, exitpriority=100)
    except Exception:
        pass


def _reset_after_fork() -> None:
    """A forked child starts with an empty queue and no thread of its own yet."""
    global _exporter, _exporter_lock
    _exporter_lock = threading.Lock()
    _exporter = None


def _at_exit() -> None:
    exporter = _exporter
    if exporter is not None:
        try:
            exporter.shutdown()
        except Exception:
            pass


def reset_exporter() -> None:
    """Stop the current exporter without sending and start afresh (mainly for tests)."""
    global _exporter
    with _exporter_lock:
        old, _exporter = _exporter, None
    if old is not None:
        with old._lock:
            old._closing = True
            old._queue.clear()
        old._stop.set()
        old._urgent.set()
        old._wake.set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_at_exit)
