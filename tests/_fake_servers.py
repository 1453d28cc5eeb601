"""Local OpenAI-compatible HTTP servers for tests: a well-behaved one and misbehaving ones.

Each ``FakeServer`` listens on 127.0.0.1 at an ephemeral port, serves in a background thread,
and is a context manager that stops it (and releases any hanging handler) on exit. It speaks
just enough of ``GET /v1/models`` and ``POST /v1/chat/completions``.

Behaviour is set by ``mode``:
- ``"ok"``: deterministic answers: choice i of a request with seed s says ``"sample {s+i}: {last
  user message}"`` (s = 0 without seed); usage counts words; per-choice ``token_ids`` unless
  ``token_ids=False``; ``reasoning_field`` adds the reasoning under that name.
- ``"status"``: answers HTTP ``status`` (500, 429, 400, ...) to the first ``fail_times`` chat
  requests (every one if ``fail_times`` is None), then behaves like ``"ok"``.
- ``"drop"``: closes the connection without a response (``fail_times`` as above).
- ``"hang"``: never answers a chat request (until the server stops, at most ``hang_limit`` s).

``gate``: if set, "ok" answers wait for it (bounded), to hold requests in flight. ``delay``:
seconds every "ok" answer waits first (a slow server).
``stream: true`` requests get server-sent events as vLLM sends them: choice i's words one chunk
at a time, round robin, and choice i padded with ``n - 1 - i`` extra words (so the last choice
ends first); per-chunk usage with ``stream_options.continuous_usage_stats`` (completion tokens of
that chunk's choice so far), a final usage chunk with ``include_usage``. ``drop_after_choices``:
close the stream once that many choices have ended (a failure mid-stream). ``continuous_usage=False``:
no per-chunk usage (a server without vLLM's extension: counts come from ``token_ids``).
``stall_first=k``: the first chat request streams its first k chunks, then stalls (until the
server stops, at most ``hang_limit`` s); every other request is answered
only once it has stalled (and 0.3 s later, for the client to read those chunks): a straggler.
Every request is recorded in ``requests`` as ``Recorded(method, path, headers, body)``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["ok", "status", "drop", "hang"]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


class FakeServer:
    """A fake OpenAI-compatible server; use ``with FakeServer(...) as server: server.url``."""

    def __init__(
        self,
        mode: Mode = "ok",
        *,
        status: int = 500,
        fail_times: int | None = None,
        models: tuple[str, ...] = ("fake-model",),
        max_model_len: int | None = 4096,
        reasoning_field: str | None = None,
        token_ids: bool = True,
        usage: bool = True,
        cached_tokens: int | None = None,
        gate: threading.Event | None = None,
        hang_limit: float = 30.0,
        drop_after_choices: int | None = None,
        continuous_usage: bool = True,
        delay: float = 0.0,
        stall_first: int | None = None,
    ) -> None:
        self.delay = delay
        self.stall_first = stall_first
        self.stalled = threading.Event()
        self.drop_after_choices = drop_after_choices
        self.continuous_usage = continuous_usage
        self.mode = mode
        self.status = status
        self.fail_times = fail_times
        self.models = models
        self.max_model_len = max_model_len
        self.reasoning_field = reasoning_field
        self.token_ids = token_ids
        self.usage = usage
        self.cached_tokens = cached_tokens
        self.gate = gate
        self.hang_limit = hang_limit
        self.requests: list[Recorded] = []
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._chat_count = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        if self.gate is not None:
            self.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- behaviour ------------------------------------------------------------------------

    def _record(self, rec: Recorded) -> int:
        with self._lock:
            self.requests.append(rec)
            if rec.path.endswith("/chat/completions"):
                self._chat_count += 1
            return self._chat_count

    def _failing(self, count: int) -> bool:
        return self.fail_times is None or count <= self.fail_times

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages", [])
        last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        n = int(body.get("n") or 1)
        seed = int(body.get("seed") or 0)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        choices = []
        total = 0
        for i in range(n):
            content = f"sample {seed + i}: {last_user}"
            words = len(content.split())
            total += words
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if self.reasoning_field:
                message[self.reasoning_field] = f"thinking about sample {seed + i}"
            choice: dict[str, Any] = {"index": i, "message": message, "finish_reason": "stop",
                                      "logprobs": None}
            if self.token_ids:
                choice["token_ids"] = list(range(words))
            choices.append(choice)
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": total,
                                 "total_tokens": prompt_tokens + total}
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                "model": body.get("model", ""), "choices": choices,
                **({"usage": usage} if self.usage else {})}


    def stream_events(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
        """The chunks of a streamed answer, and after how many to drop the connection."""
        whole = self.completion(body)
        n = len(whole["choices"])
        options = body.get("stream_options") or {}
        continuous = bool(options.get("continuous_usage_stats")) and self.continuous_usage
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        words = [c["message"]["content"].split() + ["more"] * (n - 1 - c["index"]) for c in whole["choices"]]
        sent = [0] * n
        chunks: list[dict[str, Any]] = []
        drop_at: int | None = None
        ended = 0

        def chunk(i: int, delta: dict[str, Any], finish: str | None, ids: list[int] | None) -> None:
            choice: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": finish, "logprobs": None}
            if self.token_ids and ids is not None:
                choice["token_ids"] = ids
            event: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                                     "model": body.get("model", ""), "choices": [choice]}
            if continuous:
                event["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": sent[i],
                                  "total_tokens": prompt_tokens + sent[i]}
            chunks.append(event)

        while any(sent[i] < len(words[i]) for i in range(n)):
            for i in range(n):
                if sent[i] < len(words[i]):
                    sent[i] += 1
                    text = words[i][sent[i] - 1] + ("" if sent[i] == len(words[i]) else " ")
                    chunk(i, {"role": "assistant", "content": text}, None, [sent[i] - 1])
                    if sent[i] == len(words[i]):
                        chunk(i, {}, "stop", [])
                        ended += 1
                        if self.drop_after_choices is not None and ended == self.drop_after_choices:
                            drop_at = len(chunks)
        if options.get("include_usage"):
            total = sum(sent)
            chunks.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                           "model": body.get("model", ""), "choices": [],
                           "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": total,
                                     "total_tokens": prompt_tokens + total}})
        return chunks, drop_at


def _handler_for(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (cancelled)
                self.close_connection = True

        def do_GET(self) -> None:
            server._record(Recorded("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake",
                         **({"max_model_len": server.max_model_len} if server.max_model_len else {})}
                        for m in server.models]
                self._send_json(200, {"object": "list", "data": data})
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            body = json.loads(raw or b"{}")
            count = server._record(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if not self.path.endswith("/chat/completions"):
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            mode = server.mode
            if mode != "ok" and not server._failing(count):
                mode = "ok"
            if mode == "hang":
                server.stopped.wait(server.hang_limit)
                self.close_connection = True
                return
            if mode == "drop":
                self.close_connection = True
                return
            if mode == "status":
                self._send_json(server.status, {"error": {"message": f"fake error {server.status}",
                                                          "type": "fake", "code": server.status}})
                return
            if server.gate is not None:
                server.gate.wait(10)
            if server.delay:
                server.stopped.wait(server.delay)
            stall = server.stall_first is not None and count == 1
            if server.stall_first is not None and not stall and server.stalled.wait(10):
                server.stopped.wait(0.3)
            if body.get("stream"):
                chunks, drop_at = server.stream_events(body)
                self._send_stream(chunks, server.stall_first if stall else drop_at, stall=stall)
                return
            self._send_json(200, server.completion(body))

        def _send_stream(self, chunks: list[dict[str, Any]], drop_at: int | None, *, stall: bool = False) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.close_connection = True
            try:
                self.end_headers()
                for k, event in enumerate(chunks):
                    if drop_at is not None and k == drop_at:
                        if stall:  # a straggler: hold the stream open until it is cancelled
                            server.stalled.set()
                            server.stopped.wait(server.hang_limit)
                        return  # the connection closes mid-stream
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                return

    return Handler
