"""Overhead and throughput of the Python SDK with the exporter running against a real server.

    TRACELLM_BIN=target/debug/tracellm python sdk/python/bench/overhead.py

Starts ``tracellm start`` on free ports with a temporary data directory (or uses
``--endpoint`` if given), then measures:

1. per-call overhead of ``@trace`` versus the bare function, p50/p90/p99 in µs,
   for a call that is a whole trace (root span, handed to the exporter) and for
   a call nested under an open span (a child span);
2. throughput of a program emitting traces as fast as it can, in bursts up to
   the queue bound, checking that nothing is dropped and everything lands.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "sdk" / "python" / "src"))

import tracellm  # noqa: E402
from tracellm import trace  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server() -> "tuple[subprocess.Popen, str, str]":
    binary = os.environ.get("TRACELLM_BIN") or str(REPO / "target" / "debug" / "tracellm")
    data_dir = tempfile.mkdtemp(prefix="tracellm-bench-")
    port = free_port()
    process = subprocess.Popen(
        [binary, "start", "--host", "127.0.0.1", "--port", str(port), "--dashboard-port", str(free_port()),
         "--data-dir", data_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/", timeout=1) as response:
                if response.status == 200:
                    return process, url, data_dir
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("tracellm did not start (binary %s)" % binary)


def percentiles(samples: List[int]) -> "tuple[float, float, float]":
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0  # noqa: E731
    return pick(0.50), pick(0.90), pick(0.99)


def time_calls(fn: Callable[[int], int], calls: int, chunk: int = 5000) -> List[int]:
    """Per-call times; pauses (untimed) after each chunk until the exporter caught up,
    so that the queue never overflows and every measured call is a recorded one."""
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls):
        started = clock()
        fn(i)
        samples.append(clock() - started)
        if i % chunk == chunk - 1:
            tracellm.flush(60)
    return samples


def measure_overhead(calls: int, rounds: int) -> None:
    def bare(x: int) -> int:
        return x + 1

    @trace
    def traced(x: int) -> int:
        return x + 1

    # warm up, then interleave rounds so both see the same machine conditions
    time_calls(bare, 2000)
    time_calls(traced, 2000)
    tracellm.flush(30)
    bare_samples: List[int] = []
    root_samples: List[int] = []
    child_samples: List[int] = []
    for _ in range(rounds):
        bare_samples += time_calls(bare, calls)
        root_samples += time_calls(traced, calls)
        with trace.span("bench-parent"):
            child_samples += time_calls(traced, calls)
        tracellm.flush(60)
    bare_p = percentiles(bare_samples)
    root_p = percentiles(root_samples)
    child_p = percentiles(child_samples)
    print("per-call time, %d calls x %d rounds (µs: p50 / p90 / p99)" % (calls, rounds))
    print("  bare function                 %7.2f / %7.2f / %7.2f" % bare_p)
    print("  @trace, whole trace (root)    %7.2f / %7.2f / %7.2f" % root_p)
    print("  @trace, child span            %7.2f / %7.2f / %7.2f" % child_p)
    print("overhead per span at p50: root %.2f µs, child %.2f µs" % (root_p[0] - bare_p[0], child_p[0] - bare_p[0]))
    stats = tracellm.stats()
    print("exporter: sent %d traces in %d requests, dropped %d" % (stats["sent"], stats["requests"], stats["dropped"]))
    if stats["dropped"]:
        raise SystemExit("traces were dropped while measuring overhead")


def measure_throughput(spans_per_trace: int, bursts: int) -> None:
    bound = tracellm.get_config().max_queue_size

    @trace
    def child(i: int) -> int:
        return i

    @trace(name="throughput")
    def root(n: int) -> int:
        for i in range(spans_per_trace - 1):
            child(i)
        return n

    before = tracellm.stats()
    emit_times = []
    export_times = []
    for _ in range(bursts):
        gc.collect()
        started = time.perf_counter()
        for n in range(bound):
            root(n)
        emitted = time.perf_counter()
        assert tracellm.flush(300), "flush timed out"
        done = time.perf_counter()
        emit_times.append(emitted - started)
        export_times.append(done - started)
    after = tracellm.stats()
    traces = bound * bursts
    dropped = after["dropped"] - before["dropped"]
    sent = after["sent"] - before["sent"]
    spans = traces * spans_per_trace
    emit = statistics.median(emit_times)
    total = statistics.median(export_times)
    print("throughput, bursts of %d traces (the queue bound) x %d spans, %d bursts:" % (bound, spans_per_trace, bursts))
    print("  application emits  %9.0f spans/s  (%7.0f traces/s)" % (bound * spans_per_trace / emit, bound / emit))
    print("  stored by server   %9.0f spans/s  (%7.0f traces/s), burst emitted-to-stored %.2f s"
          % (bound * spans_per_trace / total, bound / total, total))
    print("  traces %d, spans %d, sent %d, dropped %d" % (traces, spans, sent, dropped))
    if dropped:
        raise SystemExit("dropped %d traces below the queue bound" % dropped)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", help="use a running server instead of starting one")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bursts", type=int, default=3)
    args = parser.parse_args(argv)

    process = None
    data_dir = None
    endpoint = args.endpoint
    if endpoint is None:
        process, endpoint, data_dir = start_server()
    try:
        tracellm.configure(endpoint=endpoint)
        print("python %s, tracellm SDK %s, server %s" % (sys.version.split()[0], tracellm.__version__, endpoint))
        with urllib.request.urlopen(endpoint + "/") as response:
            print("server: %s" % json.loads(response.read()))
        measure_overhead(args.calls, args.rounds)
        measure_throughput(1, args.bursts)
        measure_throughput(10, args.bursts)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
