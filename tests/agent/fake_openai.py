"""A loopback OpenAI-compatible chat completions server that replays a recorded transcript.

It checks requests the way OpenAI's API does for the parts gpuwarden uses, and answers
errors in OpenAI's error shape: a bearer key; ``model`` and a non-empty ``messages`` list;
roles; every ``tool`` message answering a ``tool_calls`` id of an earlier assistant message,
and every such id answered before the next assistant turn; ``tools`` as
``{"type": "function", "function": {"name", "parameters"}}`` with OpenAI's name pattern.
Responses are ``chat.completion`` objects, or ``chat.completion.chunk`` server-sent events
ending in ``data: [DONE]`` when ``stream`` is true (with a usage chunk when
``stream_options.include_usage`` asks for it).

A transcript (``tests/agent/data/*.json``) is the list of assistant turns: step N answers the
request holding N assistant messages.  A turn is ``{"tool_calls": [{"name", "arguments"}]}``
or ``{"content": "..."}``; ``"content_from_tool": true`` answers with the last tool
message's content, the way a faithful model would relay it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ROLES = {"system", "developer", "user", "assistant", "tool"}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _tokens(value: Any) -> int:
    return max(1, len(json.dumps(value)) // 4)


def check(body: dict[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must contain at least one message", "messages")
    open_ids: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            raise BadRequest(f"Invalid value for 'messages[{i}].role': {role!r}",
                             f"messages[{i}].role")
        if role == "tool":
            if m.get("tool_call_id") not in open_ids:
                raise BadRequest("messages with role 'tool' must be a response to a preceeding "
                                 "message with 'tool_calls'.", f"messages[{i}]")
            open_ids.discard(m["tool_call_id"])
            continue
        if open_ids:
            raise BadRequest("An assistant message with 'tool_calls' must be followed by tool "
                             "messages responding to each 'tool_call_id'. The following "
                             f"tool_call_ids did not have response messages: "
                             f"{', '.join(sorted(open_ids))}", f"messages[{i}]")
        if role == "assistant":
            for call in m.get("tool_calls") or []:
                if call.get("type") != "function" or not NAME.match(
                        call.get("function", {}).get("name", "")):
                    raise BadRequest("invalid tool call", f"messages[{i}].tool_calls")
                json.loads(call["function"]["arguments"])
                open_ids.add(call["id"])
    if open_ids:
        raise BadRequest("An assistant message with 'tool_calls' must be followed by tool "
                         "messages responding to each 'tool_call_id'. The following "
                         f"tool_call_ids did not have response messages: "
                         f"{', '.join(sorted(open_ids))}", "messages")
    for j, tool in enumerate(body.get("tools") or []):
        fn = tool.get("function") or {}
        if tool.get("type") != "function" or not NAME.match(fn.get("name", "")):
            raise BadRequest(f"Invalid 'tools[{j}]'", f"tools[{j}]")
        if "parameters" in fn and fn["parameters"].get("type") != "object":
            raise BadRequest(f"Invalid schema for function '{fn['name']}'",
                             f"tools[{j}].function.parameters")


class FakeOpenAI:
    def __init__(self, transcript: list[dict[str, Any]], key: str = "sk-test-key") -> None:
        self.transcript = transcript
        self.key = key
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str, param: str | None = None,
                       code: str | None = None) -> None:
                self._json(status, {"error": {"message": message, "type": kind,
                                              "param": param, "code": code}})

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._error(404, f"Unknown request URL: POST {self.path}",
                                       "invalid_request_error", code="unknown_url")
                if self.headers.get("Authorization") != f"Bearer {fake.key}":
                    return self._error(401, "Incorrect API key provided.",
                                       "invalid_request_error", code="invalid_api_key")
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    check(body)
                except (ValueError, KeyError) as exc:
                    return self._error(400, f"could not parse the request: {exc}",
                                       "invalid_request_error")
                except BadRequest as exc:
                    return self._error(400, str(exc), "invalid_request_error", exc.param)
                fake.requests.append(body)
                step = sum(1 for m in body["messages"] if m["role"] == "assistant")
                turn = fake.transcript[min(step, len(fake.transcript) - 1)]
                message: dict[str, Any] = {"role": "assistant", "content": None}
                if turn.get("tool_calls"):
                    message["tool_calls"] = [
                        {"id": f"call_{uuid.uuid4().hex[:16]}", "type": "function",
                         "function": {"name": c["name"], "arguments": c["arguments"]}}
                        for c in turn["tool_calls"]]
                elif turn.get("content_from_tool"):
                    last = next(m for m in reversed(body["messages"]) if m["role"] == "tool")
                    message["content"] = "From the tools: " + str(last["content"])
                else:
                    message["content"] = turn["content"]
                usage = {"prompt_tokens": _tokens(body["messages"]) + _tokens(
                    body.get("tools")), "completion_tokens": _tokens(message)}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                finish = "tool_calls" if "tool_calls" in message else "stop"
                ident, created = f"chatcmpl-{uuid.uuid4().hex[:20]}", int(time.time())
                if not body.get("stream"):
                    return self._json(200, {
                        "id": ident, "object": "chat.completion", "created": created,
                        "model": body["model"], "usage": usage,
                        "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                     "logprobs": None}]})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()

                def chunk(delta: dict[str, Any], finish_reason: str | None = None,
                          with_usage: bool = False) -> None:
                    event = {"id": ident, "object": "chat.completion.chunk",
                             "created": created, "model": body["model"],
                             "choices": [] if with_usage else [
                                 {"index": 0, "delta": delta, "finish_reason": finish_reason,
                                  "logprobs": None}]}
                    if with_usage:
                        event["usage"] = usage
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())

                chunk({"role": "assistant", "content": ""})
                if message.get("content"):
                    text = message["content"]
                    for i in range(0, len(text), 50):
                        chunk({"content": text[i:i + 50]})
                for i, call in enumerate(message.get("tool_calls", [])):
                    chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                           "function": {"name": call["function"]["name"],
                                                        "arguments": ""}}]})
                    chunk({"tool_calls": [{"index": i, "function": {
                        "arguments": call["function"]["arguments"]}}]})
                chunk({}, finish)
                if (body.get("stream_options") or {}).get("include_usage"):
                    chunk({}, with_usage=True)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
