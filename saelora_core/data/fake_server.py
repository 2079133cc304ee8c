"""A scripted OpenAI-compatible chat server on loopback, for tests and benchmarks.

It speaks just enough of the protocol (POST /v1/chat/completions -> a JSON body with
`choices[0].message.content` and `usage`) for the real `openai` client to talk to it. A script
decides each reply (an answer, a 429 with Retry-After, a 500, a slow answer, malformed or
off-schema JSON), and every request is logged with the row it was about, so tests can count
requests per input. It never leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from saelora_core.data.prompts import CLASSIFY_SYSTEM, REWRITE_SYSTEM

_BLOCK = re.compile(r"<<<\n(.*?)\n>>>", re.DOTALL)


@dataclass
class ChatCall:
    """One request as the script sees it."""

    task: str
    """"classify", "rewrite" or "other" (recognised from the system prompt)."""
    param: str
    """The topic or guideline named in the request."""
    prompt: str
    response: str
    """The original response to rewrite ("" for classify)."""
    attempt: int
    """1 for the first request about this (task, prompt), 2 for the next, ..."""
    authorization: str
    body: dict[str, Any]
    time: float


@dataclass
class Reply:
    """What the server sends back: `content` as the assistant message, or an error status."""

    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (on top of the server's own latency)."""
    prompt_tokens: int = 20
    completion_tokens: int = 5
    raw_body: bytes | None = None
    """Send these bytes as the whole HTTP-200 body instead of a chat completion (a broken
    server or proxy: a body that is not JSON, or an HTML page), with ``content_type``."""
    content_type: str = "application/json"


Script = Callable[[ChatCall], Reply]


def answer_json(value: dict[str, Any], **kwargs: Any) -> Reply:
    """A 200 reply whose assistant message is `value` as JSON."""
    return Reply(content=json.dumps(value, ensure_ascii=False), **kwargs)


def keyword_script(keyword: str = "math", prefix: str = "[rewritten] ") -> Script:
    """A well-behaved model: a prompt is in-topic when it contains `keyword`; a rewrite is
    `prefix` + the original response."""

    def script(call: ChatCall) -> Reply:
        if call.task == "classify":
            return answer_json({"topic_match": keyword in call.prompt.lower()})
        if call.task == "rewrite":
            return answer_json({"response": prefix + call.response})
        return Reply(status=400, content="unknown request")

    return script


def _parse(body: dict[str, Any]) -> tuple[str, str, str, str]:
    messages = body.get("messages") or [{}]
    system = str(messages[0].get("content", ""))
    user = str(messages[-1].get("content", ""))
    task = {CLASSIFY_SYSTEM: "classify", REWRITE_SYSTEM: "rewrite"}.get(system, "other")
    head = user.split("\n", 1)[0]
    param = head.split(": ", 1)[1] if ": " in head else ""
    blocks = _BLOCK.findall(user) + ["", ""]
    return task, param, blocks[0], blocks[1]


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when 32+ clients connect at once.
    request_queue_size = 256
    daemon_threads = True


class FakeChatServer:
    """`with FakeChatServer(script) as server:` serves on `server.base_url` from a thread."""

    def __init__(self, script: Script | None = None, latency: float = 0.0) -> None:
        self.script = script or keyword_script()
        self.latency = latency
        self.calls: list[ChatCall] = []
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        # A short poll interval makes `stop()` quick (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """The URL to pass as `base_url` to an OpenAI client."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def count(self, task: str | None = None, prompt: str | None = None) -> int:
        """Requests received, optionally only those for `task` and/or `prompt`."""
        with self._lock:
            return sum(
                (task is None or c.task == task) and (prompt is None or c.prompt == prompt)
                for c in self.calls
            )

    def start(self) -> FakeChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _reply_for(self, body: dict[str, Any], authorization: str) -> Reply:
        task, param, prompt, response = _parse(body)
        with self._lock:
            self._attempts[(task, prompt)] += 1
            call = ChatCall(
                task, param, prompt, response, self._attempts[(task, prompt)], authorization,
                body, time.monotonic(),
            )  # fmt: skip
            self.calls.append(call)
        return self.script(call)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections alive, as real APIs do; each reply sets Content-Length.
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes; without NODELAY, Nagle's algorithm and
                # delayed ACKs add ~40 ms to every reply.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                body = json.loads(raw or b"{}")
                reply = server._reply_for(body, self.headers.get("Authorization", ""))
                time.sleep(server.latency + reply.delay)
                if reply.status != 200:
                    error = {"error": {"message": reply.content or "error", "code": reply.status}}
                    self._send(reply.status, error, reply.headers)
                    return
                if reply.raw_body is not None:
                    self._send(200, None, reply.headers, reply.raw_body, reply.content_type)
                    return
                self._send(200, self._completion(body, reply), reply.headers)

            def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
                return {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                    },
                }

            def _send(
                self,
                status: int,
                payload: Any,
                headers: dict[str, str] | None = None,
                raw: bytes | None = None,
                content_type: str = "application/json",
            ):
                data = raw if raw is not None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up (timeout test); nothing to answer any more.
                    self.close_connection = True

        return Handler
