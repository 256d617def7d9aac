"""A running warelay and WhatsApp simulator, both real HTTP servers on loopback, for end-to-end tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

import tests.integration.agents  # noqa: F401  # registers the test-echo agent
from warelay.app import create_app
from warelay.config import Settings
from warelay.runtime import Runtime
from warelay.simulator.server import Simulator, SimulatorConfig, create_simulator_app

APP_SECRET = "test-app-secret-0123456789"
ACCESS_TOKEN = "test-access-token"
VERIFY_TOKEN = "test-verify-token"
ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET_KEY = "test-secret-key-" + "k" * 32
PHONE_NUMBER_ID = "106540352242922"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_settings(db_url: str, *, warelay_port: int, sim_url: str, **overrides: Any) -> Settings:
    """Settings for warelay in a test: fast polling and backoff, the simulator as Graph API."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "secret_key": SECRET_KEY,
        "admin_token": ADMIN_TOKEN,
        "public_url": f"http://127.0.0.1:{warelay_port}",
        "sqlite_synchronous": "NORMAL",
        "whatsapp": {
            "phone_number_id": PHONE_NUMBER_ID,
            "display_phone_number": "15550783881",
            "access_token": ACCESS_TOKEN,
            "app_secret": APP_SECRET,
            "verify_token": VERIFY_TOKEN,
            "graph_url": sim_url,
            "throughput_mps": 1000,
        },
        # The core's one-reply-per-message tests run with the burst settings off (issue 3).
        "agent": {"kind": "test-echo", "abort_on_newer": False, "burst_window_ms": 0},
        "worker": {"poll_interval_seconds": 0.05, "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


@dataclass
class Stack:
    """Handles on a running warelay + simulator."""

    settings: Settings
    app: FastAPI
    simulator: Simulator
    url: str
    sim_url: str
    http: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        """warelay's runtime (engine, inbox, workers)."""
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def api(self, path: str, **params: Any) -> Any:
        """GET warelay's own API as the admin; returns the JSON body (asserting 200)."""
        response = await self.http.get(
            f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def replies_to(self, wa_id: str, count: int, timeout: float = 10.0) -> list[str]:  # noqa: ASYNC109
        """Wait until ``wa_id`` got ``count`` messages from warelay; their texts."""
        await self.simulator.wait_for(
            lambda: len(self.simulator.messages_to(wa_id)) >= count, timeout=timeout
        )
        return [m.text or "" for m in self.simulator.messages_to(wa_id)]


async def _serve(server: uvicorn.Server) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.01)
    return task


@asynccontextmanager
async def run_stack(
    db_url: str,
    *,
    sim: dict[str, Any] | None = None,
    run_workers: bool = True,
    expect_rejected: bool = False,
    **settings_overrides: Any,
) -> AsyncIterator[Stack]:
    """Start the simulator and warelay on free loopback ports; stop both afterwards.

    Every Graph request warelay makes passes the simulator's validator: the stack fails the test
    if the simulator rejected one (unless ``expect_rejected``).
    """
    warelay_port, sim_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    simulator = Simulator(
        SimulatorConfig(
            webhook_url=f"http://127.0.0.1:{warelay_port}/webhooks/whatsapp",
            app_secret=APP_SECRET,
            access_token=ACCESS_TOKEN,
            phone_number_id=PHONE_NUMBER_ID,
            base_url=sim_url,
            **(sim or {}),
        )
    )
    settings = stack_settings(db_url, warelay_port=warelay_port, sim_url=sim_url, **settings_overrides)
    app = create_app(settings, run_workers=run_workers)
    sim_server = uvicorn.Server(
        uvicorn.Config(create_simulator_app(simulator), host="127.0.0.1", port=sim_port, log_level="warning")
    )
    app_server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=warelay_port, log_level="warning", lifespan="on")
    )
    await simulator.start()
    sim_task = await _serve(sim_server)
    app_task = await _serve(app_server)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            yield Stack(settings, app, simulator, f"http://127.0.0.1:{warelay_port}", sim_url, http)
    finally:
        app_server.should_exit = True
        await app_task
        sim_server.should_exit = True
        await sim_task
        await simulator.stop()
    if not expect_rejected:
        assert simulator.rejected == [], f"the simulator rejected warelay's requests: {simulator.rejected}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that configure another warelay process like ``settings``."""
    env: dict[str, str] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                put(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner)
        elif value is not None:
            env[f"WARELAY_{prefix}"] = str(value).lower() if isinstance(value, bool) else str(value)

    data = settings.model_dump(mode="json", exclude_none=True)
    # SecretStr values dump masked; take them from the settings themselves.
    data["secret_key"] = SECRET_KEY
    data["admin_token"] = ADMIN_TOKEN
    data["whatsapp"]["access_token"] = ACCESS_TOKEN
    data["whatsapp"]["app_secret"] = APP_SECRET
    data["whatsapp"]["verify_token"] = VERIFY_TOKEN
    data.pop("llm", None)
    put("", data)
    return env
