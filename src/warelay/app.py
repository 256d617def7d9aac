"""The web application: ``create_app(settings)`` builds FastAPI with warelay's routes and runtime.

The runtime (database, workers, channels) starts in the lifespan and stops on shutdown, so a
SIGTERM to ``warelay serve`` stops claiming work, lets in-flight turns and sends finish, and hands
back what did not. Settings are built by the caller (the CLI, a test), never at import.

The app is a ``WarelayApp``: a FastAPI whose ``__call__`` gives webhook requests to the raw ASGI
front in ``warelay.api.intake`` before any of FastAPI's own code runs (the module says why).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from warelay import __version__
from warelay.api.deps import KeyCache
from warelay.api.intake import WebhookIntake, content_length_refusal
from warelay.api.routes import admin, agent_events, ai_agent, health, inspect, integration, seed004, webhooks
from warelay.api.routes import sync as sync_routes
from warelay.config import Settings
from warelay.runtime import Runtime
from warelay.supervisor import WorkerProcesses

if TYPE_CHECKING:
    from pydantic_ai.models import Model

log = logging.getLogger("warelay.api")


class BodyLimit:
    """Refuse (413) requests that declare a body over the limit, before any route reads it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check Content-Length, then pass the request on."""
        if scope["type"] == "http":
            declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
            refusal = content_length_refusal(declared, self.limit)
            if refusal is not None:
                code, detail = refusal
                await JSONResponse({"detail": detail}, status_code=code)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class WarelayApp(FastAPI):
    """FastAPI with the webhook front (``warelay.api.intake``) answering first."""

    def __init__(self, intake: WebhookIntake, **options: Any) -> None:
        super().__init__(**options)
        self.intake = intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Webhook requests to the front, everything else to FastAPI."""
        if self.intake.serves(scope):
            await self.intake(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    run_workers: bool | None = None,
    migrate: bool = True,
    worker_processes: WorkerProcesses | None = None,
    llm_model: Model | None = None,
) -> FastAPI:
    """Build the application; its runtime (and worker processes, if any) start and stop with its lifespan.

    ``llm_model`` is a pydantic-ai model the ``llm`` agents use instead of their configured endpoint.
    """
    settings.check_serving()
    runtime = Runtime(settings, run_workers=run_workers, migrate=migrate, llm_model=llm_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            if worker_processes is not None:  # after the set-up they rely on
                runtime.metrics.include_worker_processes(await worker_processes.start())
                runtime.wake_others = worker_processes.wake
            try:
                yield
            finally:
                if worker_processes is not None:
                    await worker_processes.stop()
        finally:
            await runtime.stop()

    app = WarelayApp(
        WebhookIntake(runtime),
        title="warelay",
        version=__version__,
        summary="Self-hosted gateway that puts AI agents on WhatsApp Business numbers",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.key_cache = KeyCache()
    app.include_router(webhooks.router)
    app.include_router(inspect.router)
    app.include_router(sync_routes.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(ai_agent.router)
    app.include_router(agent_events.router)
    app.include_router(integration.router)
    app.include_router(seed004.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    _ = unexpected
    return app


def app_factory() -> Any:
    """Entry point for ``uvicorn --factory warelay.app:app_factory`` (settings from the environment)."""
    from warelay.config import load_settings
    from warelay.observability import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, json_output=settings.log_json)
    return create_app(settings)
