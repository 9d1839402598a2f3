#!/usr/bin/env python3
"""OpenAI-compatible test server standing in for an external LLM provider.

Standard library only. It answers deterministically so that tests of the
Python SDK, the CLI and anything else that speaks the OpenAI wire format can
assert exact messages, token counts and tool calls without a network.

Routes (each also served under ``/openai/v1`` as the Groq client expects, and
without the ``/v1`` prefix):

    POST /v1/chat/completions   chat completions, ``stream: true`` as SSE
    POST /v1/responses          Responses API, ``stream: true`` as SSE events
    POST /v1/embeddings         deterministic unit vectors (float or base64)
    GET  /v1/models             model list
    GET  /v1/models/{id}        one model
    GET  /_test/requests        requests received so far (newest last)
    POST /_test/reset           forget recorded requests and flaky counters

Behaviour switches (see README.md beside this file):

    model "error-<status>"      answer with that HTTP status and an OpenAI error
    model "flaky-<n>..."        the first n identical requests get 503, then success
    model "slow-<ms>..."        wait <ms> before answering (and before the first chunk)
    header X-Test-Delay-Ms      same as slow-<ms>
    header X-Test-Chunk-Delay-Ms  pause between streamed chunks

Usage: ``python server.py --port 0`` prints ``listening on http://127.0.0.1:PORT``
as its first line on stdout and serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

VERSION = "1.0"

MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "text-embedding-3-small",
    "llama-3.1-8b-instant",
    "llama-3.3-70b-versatile",
]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_ERROR_MODEL_RE = re.compile(r"^error-(\d{3})$")
_FLAKY_MODEL_RE = re.compile(r"^flaky-(\d+)")
_SLOW_MODEL_RE = re.compile(r"^slow-(\d+)")

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a BPE tokenizer: words and punctuation."""
    return len(_TOKEN_RE.findall(text))


def content_text(content: Any) -> str:
    """Text of a chat or Responses content field (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return " ".join(parts)
    return str(content)


def reply_for(text: str) -> str:
    return "Reply to: " + text if text else "Hello! How can I help?"


def prompt_tokens_for(messages: List[Dict[str, Any]]) -> int:
    total = 3
    for message in messages:
        total += 4 + count_tokens(content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            total += count_tokens(str(function.get("name", "")))
            total += count_tokens(str(function.get("arguments", "")))
    return total


def embedding_for(text: str, dimensions: int) -> List[float]:
    values: List[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode("utf-8")).digest()
        for i in range(0, len(digest), 4):
            (number,) = struct.unpack("<I", digest[i : i + 4])
            values.append(number / 4294967295.0 * 2.0 - 1.0)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _stable_id(prefix: str, *parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return prefix + digest[:24]


def _pick_tool(tools: List[Dict[str, Any]], tool_choice: Any, text: str) -> Optional[Dict[str, Any]]:
    """Decide whether a request with tools should be answered by a tool call.

    A tool is called when tool_choice forces it, or when the last user message
    names one of the tools or mentions the word "tool".
    """
    if not tools or tool_choice == "none":
        return None

    def name_of(tool: Dict[str, Any]) -> str:
        function = tool.get("function")
        if isinstance(function, dict):
            return str(function.get("name", ""))
        return str(tool.get("name", ""))

    if isinstance(tool_choice, dict):
        wanted = name_of(tool_choice)
        for tool in tools:
            if name_of(tool) == wanted:
                return tool
    lowered = text.lower()
    for tool in tools:
        name = name_of(tool)
        if name and name.lower() in lowered:
            return tool
    if tool_choice == "required" or re.search(r"\btools?\b", lowered):
        return tools[0]
    return None


def _value_for_schema(schema: Dict[str, Any], text: str, depth: int = 0) -> Any:
    """A deterministic value that satisfies a (simple) JSON schema."""
    if depth > 8:
        return None
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _value_for_schema(schema[key][0], text, depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {key: _value_for_schema(sub, text, depth + 1) for key, sub in properties.items()}
    if kind == "array":
        return [_value_for_schema(schema.get("items") or {"type": "string"}, text, depth + 1)]
    if kind == "string":
        return text
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    return None


def _structured_reply(response_format: Any, user_text: str, text: str) -> Optional[str]:
    """JSON content for ``response_format`` json_object / json_schema requests."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return json.dumps({"reply": text})
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        defs = schema.get("$defs") or {}

        def resolve(node: Any) -> Any:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/$defs/"):
                    return resolve(defs.get(ref.split("/")[-1], {}))
                return {k: resolve(v) for k, v in node.items()}
            if isinstance(node, list):
                return [resolve(v) for v in node]
            return node

        return json.dumps(_value_for_schema(resolve(schema), user_text))
    return None


def _tool_name_and_arguments(tool: Dict[str, Any], text: str) -> Tuple[str, str]:
    function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = str(function.get("name", "tool"))
    schema = function.get("parameters") or {}
    properties = schema.get("properties") or {}
    required = schema.get("required") or list(properties)
    arguments: Dict[str, Any] = {}
    text_used = False
    for key in required:
        kind = (properties.get(key) or {}).get("type", "string")
        if kind == "string":
            arguments[key] = text if not text_used else ""
            text_used = True
        elif kind == "integer":
            arguments[key] = 1
        elif kind == "number":
            arguments[key] = 1.0
        elif kind == "boolean":
            arguments[key] = True
        elif kind == "array":
            arguments[key] = []
        else:
            arguments[key] = {}
    return name, json.dumps(arguments)


class State:
    def __init__(self, api_key: Optional[str], chunk_delay_ms: float) -> None:
        self.api_key = api_key
        self.chunk_delay_ms = chunk_delay_ms
        self.lock = threading.Lock()
        self.requests: List[Dict[str, Any]] = []
        self.flaky_counts: Dict[str, int] = {}

    def record(self, entry: Dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)
            if len(self.requests) > 1000:
                del self.requests[: len(self.requests) - 1000]

    def flaky_should_fail(self, key: str, failures: int) -> bool:
        with self.lock:
            seen = self.flaky_counts.get(key, 0)
            self.flaky_counts[key] = seen + 1
            return seen < failures

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.flaky_counts.clear()


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llm-test-server/" + VERSION
    state: State  # set on the subclass built by make_server
    verbose = False

    # ----- plumbing -------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))

    def _route(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        for prefix in ("/openai/v1", "/v1"):
            if path.startswith(prefix + "/"):
                return path[len(prefix) :]
        return path

    def _groq_style(self) -> bool:
        return self.path.startswith("/openai/")

    def _send_json(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error_json(self, status: int, message: str, param: Optional[str] = None) -> None:
        kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        headers = {}
        if status in (429, 503):
            headers["Retry-After"] = "1"
        self._send_json(
            status,
            {"error": {"message": message, "type": kind, "param": param, "code": code}},
            headers,
        )

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _sse(self, payload: Any, event: Optional[str] = None, first: bool = False) -> None:
        if not first and self.chunk_delay > 0:
            time.sleep(self.chunk_delay)
        text = payload if isinstance(payload, str) else json.dumps(payload)
        prefix = "event: %s\n" % event if event else ""
        self._write_chunk(("%sdata: %s\n\n" % (prefix, text)).encode("utf-8"))

    def _read_json(self) -> Dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise HTTPError(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            raise HTTPError(400, "The request body must be a JSON object.")
        return body

    def _check_auth(self) -> None:
        if self.state.api_key is None:
            return
        header = self.headers.get("Authorization", "")
        if header != "Bearer " + self.state.api_key:
            raise HTTPError(401, "Incorrect API key provided.")

    def _apply_switches(self, model: str, key_text: str) -> None:
        delay_ms = float(self.headers.get("X-Test-Delay-Ms") or 0)
        slow = _SLOW_MODEL_RE.match(model)
        if slow:
            delay_ms = max(delay_ms, float(slow.group(1)))
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)
        error = _ERROR_MODEL_RE.match(model)
        if error:
            status = int(error.group(1))
            raise HTTPError(status, "Simulated error %d for model %s." % (status, model))
        flaky = _FLAKY_MODEL_RE.match(model)
        if flaky and self.state.flaky_should_fail(model + "\x00" + key_text, int(flaky.group(1))):
            raise HTTPError(503, "Simulated transient failure for model %s." % model)

    # ----- dispatch -------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self.chunk_delay = float(self.headers.get("X-Test-Chunk-Delay-Ms") or self.state.chunk_delay_ms) / 1000.0
        route = self._route()
        try:
            body: Dict[str, Any] = {}
            if method == "POST":
                body = self._read_json()
            if not route.startswith("/_test/"):
                self.state.record(
                    {
                        "method": method,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                        "time": time.time(),
                    }
                )
            if route == "/" and method == "GET":
                self._send_json(200, {"status": "ok", "server": "llm-test-server", "version": VERSION})
            elif route == "/_test/requests" and method == "GET":
                with self.state.lock:
                    recorded = list(self.state.requests)
                self._send_json(200, {"requests": recorded})
            elif route in ("/_test/reset", "/_test/requests") and method in ("POST", "DELETE"):
                self.state.reset()
                self._send_json(200, {"ok": True})
            elif route == "/models" and method == "GET":
                self._check_auth()
                self._send_json(200, {"object": "list", "data": [self._model(m) for m in MODELS]})
            elif route.startswith("/models/") and method == "GET":
                self._check_auth()
                self._send_json(200, self._model(route[len("/models/") :]))
            elif route == "/chat/completions" and method == "POST":
                self._check_auth()
                self._chat(body)
            elif route == "/responses" and method == "POST":
                self._check_auth()
                self._responses(body)
            elif route == "/embeddings" and method == "POST":
                self._check_auth()
                self._embeddings(body)
            else:
                raise HTTPError(404, "Unknown route %s %s" % (method, self.path))
        except HTTPError as exc:
            self._send_error_json(exc.status, exc.message, exc.param)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    @staticmethod
    def _model(model_id: str) -> Dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "llm-test-server"}

    # ----- chat completions ----------------------------------------------

    def _chat(self, body: Dict[str, Any]) -> None:
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise HTTPError(400, "you must provide a model parameter", "model")
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "'messages' must be a non-empty array", "messages")
        messages = [m for m in messages if isinstance(m, dict)]
        last = messages[-1] if messages else {}
        last_user = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                last_user = content_text(message.get("content"))
                break
        self._apply_switches(model, last_user)

        tool = None
        if last.get("role") == "user":
            tool = _pick_tool(body.get("tools") or [], body.get("tool_choice"), last_user)
        if last.get("role") == "tool":
            text = "Based on the tool result: " + content_text(last.get("content"))
        else:
            text = reply_for(last_user)
        structured = _structured_reply(body.get("response_format"), last_user, text)
        if structured is not None:
            text = structured

        created = int(time.time())
        completion_id = _stable_id("chatcmpl-", model, messages)
        prompt_tokens = prompt_tokens_for(messages)
        tool_call = None
        if tool is not None:
            name, arguments = _tool_name_and_arguments(tool, last_user)
            tool_call = {
                "id": _stable_id("call_", name, arguments),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            completion_tokens = count_tokens(name) + count_tokens(arguments) + 3
            finish_reason = "tool_calls"
        else:
            completion_tokens = count_tokens(text)
            finish_reason = "stop"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

        if body.get("stream"):
            options = body.get("stream_options") or {}
            self._chat_stream(completion_id, created, model, text, tool_call, finish_reason, usage,
                              bool(options.get("include_usage")))
            return

        message: Dict[str, Any] = {"role": "assistant", "content": None if tool_call else text, "refusal": None}
        if tool_call:
            message["tool_calls"] = [tool_call]
        self._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_llm_test_server",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage,
                "service_tier": "default",
            },
        )

    def _chat_stream(
        self,
        completion_id: str,
        created: int,
        model: str,
        text: str,
        tool_call: Optional[Dict[str, Any]],
        finish_reason: str,
        usage: Dict[str, Any],
        include_usage: bool,
    ) -> None:
        groq = self._groq_style()

        def chunk(delta: Dict[str, Any], finish: Optional[str] = None) -> Dict[str, Any]:
            payload: Dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_llm_test_server",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                payload["usage"] = None
            return payload

        self._start_stream()
        if tool_call is not None:
            first = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": tool_call["id"],
                        "type": "function",
                        "function": {"name": tool_call["function"]["name"], "arguments": ""},
                    }
                ],
            }
            self._sse(chunk(first), first=True)
            for piece in _split(tool_call["function"]["arguments"], 3):
                self._sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        else:
            self._sse(chunk({"role": "assistant", "content": "", "refusal": None}), first=True)
            for piece in re.findall(r"\S+\s*|\s+", text):
                self._sse(chunk({"content": piece}))
        final = chunk({}, finish_reason)
        if groq:
            final["x_groq"] = {"id": "req_" + completion_id[-20:], "usage": usage}
        self._sse(final)
        if include_usage:
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage
            self._sse(usage_chunk)
        self._sse("[DONE]")
        self._end_stream()

    # ----- responses ------------------------------------------------------

    def _responses(self, body: Dict[str, Any]) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise HTTPError(400, "you must provide a model parameter", "model")
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            items: List[Dict[str, Any]] = [{"role": "user", "content": raw_input}]
        elif isinstance(raw_input, list):
            items = [i for i in raw_input if isinstance(i, dict)]
        else:
            raise HTTPError(400, "'input' must be a string or an array", "input")
        messages: List[Dict[str, Any]] = []
        if isinstance(body.get("instructions"), str):
            messages.append({"role": "system", "content": body["instructions"]})
        last_user = ""
        last_kind = "message"
        tool_output = ""
        for item in items:
            kind = item.get("type", "message")
            last_kind = kind
            if kind == "function_call_output":
                tool_output = str(item.get("output", ""))
                messages.append({"role": "tool", "content": tool_output})
            elif kind == "function_call":
                messages.append({"role": "assistant", "content": str(item.get("arguments", ""))})
            else:
                text = content_text(item.get("content"))
                messages.append({"role": item.get("role", "user"), "content": text})
                if item.get("role", "user") == "user":
                    last_user = text
        self._apply_switches(model, last_user)

        tool = None
        if last_kind == "message":
            tool = _pick_tool(body.get("tools") or [], body.get("tool_choice"), last_user)
        text = "Based on the tool result: " + tool_output if last_kind == "function_call_output" else reply_for(last_user)
        response_id = _stable_id("resp_", model, items)
        created = int(time.time())
        input_tokens = prompt_tokens_for(messages)
        if tool is not None:
            name, arguments = _tool_name_and_arguments(tool, last_user)
            output_item: Dict[str, Any] = {
                "type": "function_call",
                "id": _stable_id("fc_", name, arguments),
                "call_id": _stable_id("call_", name, arguments),
                "name": name,
                "arguments": arguments,
                "status": "completed",
            }
            output_tokens = count_tokens(name) + count_tokens(arguments) + 3
        else:
            output_item = {
                "type": "message",
                "id": _stable_id("msg_", response_id),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
            }
            output_tokens = count_tokens(text)
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }

        def response(status: str, output: List[Dict[str, Any]], with_usage: bool) -> Dict[str, Any]:
            return {
                "id": response_id,
                "object": "response",
                "created_at": created,
                "status": status,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": body.get("previous_response_id"),
                "temperature": body.get("temperature", 1.0),
                "text": {"format": {"type": "text"}},
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [],
                "top_p": body.get("top_p", 1.0),
                "truncation": "disabled",
                "usage": usage if with_usage else None,
                "metadata": body.get("metadata") or {},
            }

        if not body.get("stream"):
            self._send_json(200, response("completed", [output_item], True))
            return

        seq = [0]

        def event(kind: str, first: bool = False, **fields: Any) -> None:
            payload = {"type": kind, "sequence_number": seq[0]}
            payload.update(fields)
            seq[0] += 1
            self._sse(payload, event=kind, first=first)

        self._start_stream()
        event("response.created", first=True, response=response("in_progress", [], False))
        event("response.in_progress", response=response("in_progress", [], False))
        if output_item["type"] == "function_call":
            started = dict(output_item, arguments="", status="in_progress")
            event("response.output_item.added", output_index=0, item=started)
            for piece in _split(output_item["arguments"], 3):
                event("response.function_call_arguments.delta", item_id=output_item["id"], output_index=0, delta=piece)
            event("response.function_call_arguments.done", item_id=output_item["id"], output_index=0,
                  arguments=output_item["arguments"])
        else:
            item_id = output_item["id"]
            event("response.output_item.added", output_index=0,
                  item=dict(output_item, status="in_progress", content=[]))
            event("response.content_part.added", item_id=item_id, output_index=0, content_index=0,
                  part={"type": "output_text", "text": "", "annotations": []})
            for piece in re.findall(r"\S+\s*|\s+", text):
                event("response.output_text.delta", item_id=item_id, output_index=0, content_index=0,
                      delta=piece, logprobs=[])
            event("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text,
                  logprobs=[])
            event("response.content_part.done", item_id=item_id, output_index=0, content_index=0,
                  part={"type": "output_text", "text": text, "annotations": []})
        event("response.output_item.done", output_index=0, item=output_item)
        event("response.completed", response=response("completed", [output_item], True))
        self._end_stream()

    # ----- embeddings -----------------------------------------------------

    def _embeddings(self, body: Dict[str, Any]) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise HTTPError(400, "you must provide a model parameter", "model")
        raw = body.get("input")
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            texts = [" ".join(map(str, raw))]
        elif isinstance(raw, list) and raw:
            texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
        else:
            raise HTTPError(400, "'input' must be a non-empty string or array", "input")
        self._apply_switches(model, texts[0])
        dimensions = body.get("dimensions") or 16
        if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
            raise HTTPError(400, "'dimensions' must be an integer between 1 and 4096", "dimensions")
        data = []
        tokens = 0
        for index, text in enumerate(texts):
            vector = embedding_for(text, dimensions)
            tokens += max(1, count_tokens(text))
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack("<%df" % len(vector), *vector)).decode("ascii")
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        self._send_json(
            200,
            {"object": "list", "data": data, "model": model,
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
        )


def _split(text: str, parts: int) -> List[str]:
    if not text:
        return [""]
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def make_server(host: str, port: int, api_key: Optional[str] = None, chunk_delay_ms: float = 0.0,
                verbose: bool = False) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": State(api_key, chunk_delay_ms), "verbose": verbose})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="OpenAI-compatible deterministic test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require this Bearer key (default: accept any)")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between streamed chunks")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.api_key, args.chunk_delay_ms, args.verbose)
    host, port = server.server_address[:2]
    print("listening on http://%s:%d" % (host, port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
