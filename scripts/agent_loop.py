#!/usr/bin/env python3
"""Agent loops for scripts/bench: N traces of T turns, each LLM call sending the whole
conversation so far (as agent loops do), by native JSON ingest in requests of 20 traces. Prints
the server's CPU for the ingest and indexing (until the last trace is found by search), and the
text a store that indexed each span's text whole would have tokenized against the distinct
messages. Standard library only."""

import argparse
import json
import os
import random
import time
import urllib.request

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--pid", type=int, required=True)
p.add_argument("--traces", type=int, default=2000)
p.add_argument("--turns", type=int, default=10)
a = p.parse_args()

rng = random.Random(7)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(20000)]


def text(size):
    words, n = [], 0
    while n < size:
        w = rng.choice(vocab)
        words.append(w)
        n += len(w) + 1
    return " ".join(words)


def trace(i):
    t0 = 1767225600000 + i
    msgs = [{"role": "system", "content": text(400)}, {"role": "user", "content": text(300)}]
    spans = [{"id": "root", "name": "agent", "kind": "agent", "start_time": t0,
              "end_time": t0 + 5000}]
    for t in range(a.turns):
        reply = {"role": "assistant", "content": text(250)}
        spans.append({"id": f"llm{t}", "parent_id": "root", "name": "openai.chat", "kind": "llm",
                      "model": "gpt-4o", "start_time": t0 + t * 10, "end_time": t0 + t * 10 + 9,
                      "input": {"messages": list(msgs)}, "output": {"messages": [reply]}})
        msgs += [reply, {"role": "tool", "content": text(300)}]
    return {"id": f"agent-{i}", "name": "agent", "spans": spans}


def cpu_s():
    f = open(f"/proc/{a.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


traces = [trace(i) for i in range(a.traces)]
whole = distinct = 0
for tr in traces:
    seen = set()
    for s in tr["spans"][1:]:
        texts = [m["content"] for m in s["input"]["messages"] + s["output"]["messages"]]
        whole += sum(len(x) for x in texts) + len(texts) - 1
        distinct += sum(len(x) for x in texts if not (x in seen or seen.add(x)))
bodies = [json.dumps({"traces": traces[b:b + 20]}).encode() for b in range(0, a.traces, 20)]
c0, t0 = cpu_s(), time.time()
for body in bodies:
    req = urllib.request.Request(a.url + "/traces", data=body,
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
last = traces[-1]
word = last["spans"][-1]["output"]["messages"][0]["content"].split()[0]
while True:
    page = json.loads(urllib.request.urlopen(f"{a.url}/traces?q={word}&limit=50").read())
    if any(t["id"] == last["id"] for t in page["traces"]):
        break
    time.sleep(0.05)
print(f"agent loops: {a.traces} traces of {a.turns} turns, {sum(map(len, bodies)) / 1e6:.1f} MB "
      f"sent, searchable after {time.time() - t0:.1f} s, server CPU {cpu_s() - c0:.1f} s")
print(f"text per trace: {whole / a.traces / 1000:.1f} KB as each span's text whole, "
      f"{distinct / a.traces / 1000:.1f} KB as distinct messages")
