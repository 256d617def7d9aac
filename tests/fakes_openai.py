"""A tiny OpenAI-compatible Chat Completions server on loopback, for tests of the model path.

The built-in ``llm`` agent talks to its model through the openai package's own HTTP client, so the
honest way to test that path is a real HTTP server: :class:`OpenAICompatibleServer` serves
``POST /v1/chat/completions`` (and ``GET /v1/models``) on ``127.0.0.1`` with a free port, records
every request body, and answers in OpenAI's response shape with whatever its ``responder`` returns.

Usage::

    async with OpenAICompatibleServer(responder=lambda body: "Hi!") as server:
        agent = LLMAgent(spec_with(base_url=server.base_url), deps)
        ...
        assert server.requests[0]["model"] == "test-model"

A responder may raise :class:`FakeOpenAIError` to answer with an HTTP error in OpenAI's error shape.

``POST /v1/audio/transcriptions`` (multipart, as OpenAI's) answers ``{"text": …}`` from its
``transcriber`` (which may raise :class:`FakeOpenAIError` too) and records each request's form
fields and file in ``transcriptions``. ``POST /v1/embeddings`` answers with the deterministic
lexical vectors of ``tests.unit.knowledge.fake_embeddings`` and records each request body in
``embedding_requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import inspect
import itertools
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.unit.knowledge.fake_embeddings import fake_vector


@dataclass(frozen=True)
class ToolCall:
    """A responder's answer that calls a tool instead of answering with text."""

    name: str
    arguments: dict[str, Any]


Responder = Callable[[dict[str, Any]], "str | ToolCall | Awaitable[str | ToolCall]"]
Transcriber = Callable[[dict[str, Any]], str]


def transcribe_by_size(request: dict[str, Any]) -> str:
    """The default transcriber: a text naming the file it was given."""
    return f"transcript of {request['filename']} ({len(request['file'])} bytes)"


class FakeOpenAIError(Exception):
    """Raised by a responder to make the server answer with an HTTP error."""

    def __init__(
        self, status_code: int, message: str = "fake error", *, error_type: str = "server_error"
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type


def echo_last_user(body: dict[str, Any]) -> str:
    """The default responder: repeat the last user message's text."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return f"echo: {content}"
            if isinstance(content, list):
                texts = [c.get("text", "") for c in content if isinstance(c, dict)]
                return "echo: " + "".join(texts)
    return "echo"


def _count_tokens(body: dict[str, Any]) -> int:
    # A rough, deterministic stand-in for a tokenizer: words across all message texts.
    total = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(str(c.get("text", "")).split()) for c in content if isinstance(c, dict))
    return total


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers, so the test process keeps its own Ctrl-C behaviour."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpenAICompatibleServer:
    """An OpenAI-compatible Chat Completions endpoint served on loopback inside the running event loop."""

    def __init__(
        self,
        responder: Responder = echo_last_user,
        *,
        delay: float = 0.0,
        model_name: str | None = None,
        transcriber: Transcriber = transcribe_by_size,
    ) -> None:
        self.responder: Responder = responder
        self.transcriber = transcriber
        self.transcriptions: list[dict[str, Any]] = []
        self.embedding_requests: list[dict[str, Any]] = []
        self.delay = delay
        self.model_name = model_name
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client as ``base_url`` (ends in ``/v1``)."""
        if self._port is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._port}/v1"

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )

    async def _models(self, request: Request) -> JSONResponse:
        name = self.model_name or "fake-model"
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "fake"}]})

    async def _transcriptions(self, request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return JSONResponse({"error": {"message": "expected multipart/form-data"}}, status_code=400)
        raw = f"Content-Type: {content_type}\r\n\r\n".encode() + await request.body()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        fields: dict[str, Any] = {"authorization": request.headers.get("authorization")}
        for part in form.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if name == "file":
                fields.update(
                    file=payload, filename=part.get_filename(), content_type=part.get_content_type()
                )
            elif isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload.decode()
        self.transcriptions.append(fields)
        if "file" not in fields or "model" not in fields:
            return JSONResponse({"error": {"message": "file and model are required"}}, status_code=400)
        try:
            text = self.transcriber(fields)
        except FakeOpenAIError as exc:
            return JSONResponse(
                {"error": {"message": exc.message, "type": exc.error_type, "param": None, "code": None}},
                status_code=exc.status_code,
            )
        return JSONResponse({"text": text})

    async def _embeddings(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.embedding_requests.append(body)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(texts)]
        return JSONResponse(
            {
                "object": "list",
                "model": body["model"],
                "data": data,
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    async def _chat_completions(self, request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.delay > 0:
            # Wait out the delay, unless the server is stopping: a test that gave up on a slow answer
            # should not wait for it at shutdown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.delay)
            if self._stopping.is_set():
                return JSONResponse({"error": {"message": "server stopping", "type": "server_error"}}, 503)
        try:
            produced = self.responder(body)
            text = await produced if inspect.isawaitable(produced) else produced
        except FakeOpenAIError as exc:
            return JSONResponse(
                {"error": {"message": exc.message, "type": exc.error_type, "param": None, "code": None}},
                status_code=exc.status_code,
            )
        prompt_tokens = _count_tokens(body)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish_reason = "stop"
        if isinstance(text, ToolCall):
            call_id = f"call_{next(self._ids)}"
            function = {"name": text.name, "arguments": json.dumps(text.arguments)}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": function}],
            }
            finish_reason = "tool_calls"
            text = ""
        completion_tokens = len(text.split())
        return JSONResponse(
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name or body.get("model", "fake-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def start(self) -> None:
        """Bind a free loopback port and start serving in a task of the running loop."""
        self._stopping.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", access_log=False)
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # surfaces the start-up error
                raise RuntimeError("the fake OpenAI server stopped during start-up")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop serving and wait for the server task to finish."""
        self._stopping.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = None
        self._task = None

    async def __aenter__(self) -> OpenAICompatibleServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
