"""Per-key rate limits, counted in the database: fixed one-minute windows shared by every process,
429 with Retry-After when a key is over its limit, the key's own limit or the default, 0 unlimited,
and the admin token never limited. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.stack import ADMIN_TOKEN, SECRET_KEY, free_port, run_stack, settings_env
from warelay.api.ratelimit import WINDOW_SECONDS, count_request
from warelay.crypto import SecretBox
from warelay.storage.direct import Database
from warelay.storage.models import ApiKey, ApiKeyUsage
from warelay.tenancy import create_key

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T0 = 1_800_000_010.5  # 10.5 s into the window that starts at 1_800_000_000


async def _usage(engine: AsyncEngine, key_id: int) -> list[tuple[int, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ApiKeyUsage.window_start, ApiKeyUsage.requests)
            .where(ApiKeyUsage.key_id == key_id)
            .order_by(ApiKeyUsage.window_start)
        )
        return [(int(w), int(n)) for w, n in rows]


async def test_requests_are_counted_per_key_and_window(engine: AsyncEngine, db_url: str) -> None:
    box = SecretBox([SECRET_KEY])
    first, _ = await create_key(engine, box, tenant_id=None, scopes=["admin"])
    second, _ = await create_key(engine, box, tenant_id=None, scopes=["admin"])
    here, there = Database(db_url), Database(db_url)  # two processes' connections to one database
    try:
        decisions = [await count_request(here, key_id=first.id, limit=3, now=T0 + i) for i in range(3)]
        assert [(d.allowed, d.count) for d in decisions] == [(True, 1), (True, 2), (True, 3)]
        refused = await count_request(there, key_id=first.id, limit=3, now=T0 + 5)
        assert (refused.allowed, refused.count, refused.limit) == (False, 4, 3)
        assert refused.retry_after == math.ceil(60 - 15.5)  # the seconds left in the window
        assert (await count_request(here, key_id=first.id, limit=3, now=T0 + 49.2)).retry_after == 1
        # Another key has its own count.
        assert (await count_request(there, key_id=second.id, limit=3, now=T0)).count == 1
        # The next window starts from zero and forgets the previous one.
        fresh = await count_request(there, key_id=first.id, limit=3, now=T0 + WINDOW_SECONDS)
        assert (fresh.allowed, fresh.count, fresh.retry_after) == (True, 1, 50)
        assert await _usage(engine, first.id) == [(1_800_000_060, 1)]
        assert await _usage(engine, second.id) == [(1_800_000_000, 1)]
        # A window left idle is forgotten too: the key's next request counts from one.
        later = await count_request(here, key_id=first.id, limit=3, now=T0 + 10 * WINDOW_SECONDS)
        assert later.count == 1
        assert await _usage(engine, first.id) == [(1_800_000_600, 1)]
    finally:
        await here.close()
        await there.close()
    # A deleted key's counts go with it (as when its tenant is deleted).
    async with engine.begin() as conn:
        await conn.execute(delete(ApiKey).where(ApiKey.id == first.id))
    assert await _usage(engine, first.id) == []
    assert await _usage(engine, second.id) == [(1_800_000_000, 1)]


async def wait_for_a_fresh_window(needed: float = 8.0) -> float:
    """Sleep into the next window when the current one ends within ``needed`` seconds; its end."""
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < needed:
        await asyncio.sleep(left + 0.05)
    return (time.time() // WINDOW_SECONDS + 1) * WINDOW_SECONDS


async def _second_server(env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    """``warelay serve`` in its own process on ``port`` (no workers), once it answers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "warelay.cli",
        "serve",
        "--port",
        str(port),
        "--no-workers",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                _, err = await proc.communicate()
                raise AssertionError(f"warelay serve exited: {err.decode()}")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    await proc.wait()
    raise AssertionError("warelay serve did not start within 60 s")


async def test_limits_hold_across_processes(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False, api={"rate_limit_per_minute": 5}) as stack:
        keys: dict[str, str] = {}
        for label, limit in (("default", None), ("own", 3), ("unlimited", 0)):
            body = {"scopes": ["conversations:read"], "name": label, "rate_limit_per_minute": limit}
            response = await stack.http.post(
                f"{stack.url}/api/v1/tenants/default/keys", json=body, headers=ADMIN
            )
            assert response.status_code == 201, response.text
            keys[label] = response.json()["key"]
        port = free_port()
        env = {**os.environ, **settings_env(stack.settings), "WARELAY_LOG_LEVEL": "WARNING"}
        other = await _second_server(env, port)
        try:
            urls = [f"{stack.url}/api/v1/conversations", f"http://127.0.0.1:{port}/api/v1/conversations"]
            window_end = await wait_for_a_fresh_window()

            async def statuses(key: str, count: int) -> list[int]:
                codes = []
                for i in range(count):  # alternately to each process
                    response = await stack.http.get(urls[i % 2], headers={"x-api-key": key})
                    codes.append(response.status_code)
                return codes

            assert await statuses(keys["default"], 8) == [200] * 5 + [429] * 3
            assert await statuses(keys["own"], 6) == [200] * 3 + [429] * 3
            assert await statuses(keys["unlimited"], 20) == [200] * 20
            for url in urls:
                refused = await stack.http.get(url, headers={"Authorization": f"Bearer {keys['own']}"})
                assert refused.status_code == 429
                assert "3 requests per minute" in refused.json()["detail"]
                retry_after = int(refused.headers["Retry-After"])
                assert 1 <= retry_after <= WINDOW_SECONDS
                assert abs(retry_after - (window_end - time.time())) <= 2
                # The admin token is not a key: never limited.
                for _ in range(10):
                    assert (await stack.http.get(url, headers=ADMIN)).status_code == 200
        finally:
            other.terminate()
            await asyncio.wait_for(other.communicate(), timeout=30)
