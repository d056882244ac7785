"""A scripted stand-in for an OpenAI-compatible model server, over real HTTP.

It speaks the chat-completions wire protocol the way OpenAI, vLLM, Ollama and llama.cpp do:
`POST /v1/chat/completions` answering with `tool_calls` or text, `response_format` JSON mode,
`stream: true` as server-sent `chat.completion.chunk` events (with a final usage chunk when
`stream_options.include_usage` is set), error statuses with OpenAI's error body, and
`GET /v1/models`. What it answers comes from a `responder(body) -> Reply` the test supplies;
every request body it received is kept in `requests` so tests can assert on what the model saw.
"""

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted model turn."""

    content: str | None = None
    # (tool name, arguments): a str is sent verbatim (so it can be broken JSON), a dict is dumped.
    tool_calls: list[tuple[str, str | dict]] = field(default_factory=list)
    refusal: str | None = None
    status: int = 200  # anything else: an OpenAI-style error body with `error_message`
    error_message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering, to make the client time out


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return max(1, math.ceil(len(text) / 4))


class FakeOpenAIServer:
    def __init__(self, responder: Callable[[dict], Reply], model: str = "fake-model"):
        self.responder = responder
        self.model = model
        self.requests: list[dict] = []  # chat-completion bodies, in arrival order
        self.usage_sent: list[dict] = []  # the usage reported for each successful completion
        self.other_posts: list[str] = []  # paths of POSTs to other routes (e.g. a tracer's uploads)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------ protocol

    def _completion(self, body: dict) -> tuple[Reply, dict]:
        with self._lock:
            self.requests.append(body)
        reply = self.responder(body)
        return reply, self._message(reply)

    @staticmethod
    def _message(reply: Reply) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}_{time.monotonic_ns() % 10**9}",
                    "type": "function",
                    "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
                }
                for i, (name, args) in enumerate(reply.tool_calls)
            ]
        return message

    def _usage(self, body: dict, message: dict) -> dict:
        prompt = count_tokens(json.dumps(body.get("messages", [])))
        completion = count_tokens((message.get("content") or "") + json.dumps(message.get("tool_calls") or []))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        with self._lock:
            self.usage_sent.append(usage)
        return usage

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send_json(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "created": 0, "owned_by": "fake"}]})
                else:
                    self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                data = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    with fake._lock:
                        fake.other_posts.append(self.path)
                    self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                    return
                body = json.loads(data or b"{}")
                reply, message = fake._completion(body)
                try:
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    if reply.status != 200:
                        error = {"error": {"message": reply.error_message, "type": "scripted", "code": reply.status}}
                        self._send_json(reply.status, error, reply.headers)
                    elif body.get("stream"):
                        self._stream(body, message)
                    else:
                        self._complete(body, message)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing left to answer

            def _complete(self, body: dict, message: dict) -> None:
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                self._send_json(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", fake.model),
                        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                        "usage": fake._usage(body, message),
                    },
                )

            def _stream(self, body: dict, message: dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def chunk(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> None:
                    payload: dict[str, Any] = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": body.get("model", fake.model),
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else [],
                    }
                    if usage is not None:
                        payload["usage"] = usage
                    self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                    self.wfile.flush()

                chunk({"role": "assistant", "content": ""})
                if message.get("refusal"):
                    chunk({"refusal": message["refusal"]})
                text = message.get("content") or ""
                for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                    if piece:
                        chunk({"content": piece})
                for index, call in enumerate(message.get("tool_calls") or []):
                    head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
                    chunk({"tool_calls": [head]})
                    args = call["function"]["arguments"]
                    for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
                        chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                chunk({}, finish="tool_calls" if message.get("tool_calls") else "stop")
                if (body.get("stream_options") or {}).get("include_usage"):
                    chunk({}, usage=fake._usage(body, message), choices=False)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler
