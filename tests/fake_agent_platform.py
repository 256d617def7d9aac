"""An external AI agent platform's webhook on loopback: records warelay's event deliveries.

``failures`` answers HTTP 500 to that many deliveries first (retries), ``delay`` holds each answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass(frozen=True)
class Delivery:
    """One POST warelay made, and what the platform answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON body."""
        data: dict[str, Any] = json.loads(self.body)
        return data

    def signature_valid(self, secret: str) -> bool:
        """Whether ``X-Warelay-Signature`` is the HMAC-SHA256 of "<t>.<body>" with ``secret``."""
        header = self.headers.get("x-warelay-signature", "")
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        expected = hmac.new(
            secret.encode(), f"{parts.get('t')}.".encode() + self.body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(parts.get("v1", ""), expected)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FakeAgentPlatform:
    """POST anything under ``/``: recorded in ``deliveries``; 500 for the first ``failures``."""

    def __init__(self, *, failures: int = 0) -> None:
        self.failures = failures
        self.deliveries: list[Delivery] = []
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """The platform's base URL."""
        return f"http://127.0.0.1:{self._port}"

    def accepted(self) -> list[Delivery]:
        """The deliveries answered 2xx, in order."""
        return [d for d in self.deliveries if d.answered == 200]

    async def _receive(self, request: Request) -> JSONResponse:
        body = await request.body()
        status = 500 if self.failures > 0 else 200
        self.failures -= 1 if self.failures > 0 else 0
        self.deliveries.append(Delivery(request.url.path, dict(request.headers), body, status))
        return JSONResponse({"ok": status == 200}, status_code=status)

    async def __aenter__(self) -> FakeAgentPlatform:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])
        self._server = _QuietServer(
            uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        )
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the fake platform stopped during start-up")
            await asyncio.sleep(0.005)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
