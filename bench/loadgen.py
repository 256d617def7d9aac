"""The benchmark's load generator: plays Meta, posting signed webhooks to warelay's webhook route.

Where it sits: the very start of the message path (webhook → inbox → worker → agent → outbox →
Graph). It runs as its own process so its CPU is not warelay's, builds every signed body with
``Simulator.build_inbound`` before the clock starts, and speaks raw HTTP/1.1 over keep-alive loopback
connections (cheaper than an HTTP library, so more of the shared 2 cores go to warelay).

Protocol with ``bench/run.py``: ``python bench/loadgen.py SPEC.json OUT.json``; the process builds
its requests, prints ``ready``, waits for a line on stdin, sends, writes ``OUT.json`` and exits.

Two modes:

- ``open``: every user sends their messages in order (the next one after the previous one was
  answered 200); at most ``concurrency`` requests are in flight, so the load is as fast as warelay
  acknowledges.
- ``rate``: a closed schedule, one delivery at ``t = i / rate``; latency is measured from the
  scheduled time, so a stalled server cannot hide its queueing (no coordinated omission).

A fraction of the messages is delivered twice, as Meta does when it misses a 200: half of them
concurrently with the first delivery, half after the user's next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_ATTEMPTS = 3  # a request retried on a dropped keep-alive connection (webhook delivery is idempotent)


@dataclass(slots=True)
class Delivery:
    """One webhook POST: a user's message (``dup`` 0) or a redelivery of it (``dup`` 1)."""

    user: int
    seq: int
    wamid: str
    dup: int
    request: bytes
    text: str
    concurrent: bool = False
    sent_wall: float = 0.0
    ack_ms: float = -1.0
    status: int = 0
    attempts: int = 0
    error: str = ""


@dataclass(slots=True)
class Plan:
    """Every delivery, grouped per user in sending order."""

    per_user: list[list[Delivery]] = field(default_factory=list)

    def all(self) -> list[Delivery]:
        """Every delivery, user by user."""
        return [d for items in self.per_user for d in items]


def wa_id_of(offset: int, user: int) -> str:
    """The WhatsApp number of bench user ``user`` (``offset`` separates phases and scenarios)."""
    return f"1555{offset + user:07d}"


def build_plan(spec: dict[str, Any]) -> Plan:
    """Build and sign every request before the clock starts."""
    from warelay.simulator.server import Simulator, SimulatorConfig

    sim = Simulator(
        SimulatorConfig(
            webhook_url=f"http://{spec['host']}:{spec['port']}{spec['path']}",
            app_secret=spec["app_secret"],
            access_token=secrets.token_urlsafe(16),  # the load generator never calls the Graph API
            phone_number_id=spec["phone_number_id"],
            display_phone_number=spec["display_phone_number"],
        )
    )
    rng = random.Random(spec["seed"])
    texts: list[str] = spec["texts"]
    users, per_user = int(spec["users"]), int(spec["per_user"])
    total = users * per_user
    chosen = sorted(rng.sample(range(total), round(total * float(spec["redeliver_fraction"]))))
    # Every other redelivered message races its first delivery; the rest come after the next message.
    racing_set = set(chosen[::2])
    redelivered = set(chosen)
    head = f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
    plan = Plan()
    for u in range(users):
        wa_id = wa_id_of(int(spec["user_offset"]), u)
        items: list[Delivery] = []
        later: Delivery | None = None
        for s in range(per_user):
            text = texts[(u * 7 + s) % len(texts)]
            if spec.get("tag_texts"):
                text = f"{text} [u{u} m{s}]"
            body, headers, wamid = sim.build_inbound(wa_id, text, name=f"Bench User {u}")
            lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            request = f"{head}{lines}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
            index = u * per_user + s
            racing = index in racing_set
            items.append(Delivery(u, s, wamid, 0, request, text, concurrent=racing))
            if racing:
                items.append(Delivery(u, s, wamid, 1, request, text, concurrent=True))
            if later is not None:
                items.append(later)
                later = None
            if index in redelivered and not racing:
                later = Delivery(u, s, wamid, 1, request, text)
        if later is not None:
            items.append(later)
        plan.per_user.append(items)
    return plan


class Connection:
    """One keep-alive HTTP/1.1 connection to warelay."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """(Re)connect."""
        await self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        """Drop the connection."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> int:
        """Send one request and read the whole response; returns the HTTP status."""
        if self.writer is None or self.reader is None:
            await self.open()
        reader, writer = self.reader, self.writer
        if reader is None or writer is None:
            raise ConnectionError("not connected")
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"connection" and value.strip().lower() == b"close":
                close = True
        if length < 0:
            raise ConnectionError("response without Content-Length")
        if length:
            await reader.readexactly(length)
        if close:
            await self.close()
        return status


class Sender:
    """A fixed pool of connections; at most one request in flight on each."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(size):
            self.pool.put_nowait(Connection(host, port))

    async def post(self, d: Delivery, *, since: float | None = None) -> None:
        """Deliver ``d``; ack latency from ``since`` (the scheduled time) or from the actual send."""
        conn = await self.pool.get()
        try:
            if d.sent_wall == 0.0:
                d.sent_wall = time.time()
            started = time.perf_counter() if since is None else since
            for attempt in range(1, MAX_ATTEMPTS + 1):
                d.attempts = attempt
                try:
                    d.status = await conn.exchange(d.request)
                    d.error = ""
                    break
                except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                    d.status, d.error = 0, f"{type(exc).__name__}: {exc}"
                    await conn.close()
            d.ack_ms = (time.perf_counter() - started) * 1000.0
        finally:
            self.pool.put_nowait(conn)

    async def close(self) -> None:
        """Close every connection."""
        while not self.pool.empty():
            await self.pool.get_nowait().close()


async def run_open(plan: Plan, sender: Sender) -> None:
    """Each user in order; a redelivery marked concurrent goes out together with the first delivery."""

    async def user(items: list[Delivery]) -> None:
        i = 0
        while i < len(items):
            d = items[i]
            if d.concurrent and i + 1 < len(items) and items[i + 1].concurrent:
                items[i + 1].sent_wall = time.time()
                d.sent_wall = items[i + 1].sent_wall
                await asyncio.gather(sender.post(d), sender.post(items[i + 1]))
                i += 2
            else:
                await sender.post(d)
                i += 1

    await asyncio.gather(*(user(items) for items in plan.per_user))


async def run_rate(plan: Plan, sender: Sender, rate: float) -> int:
    """Closed schedule: message round by round across users, one delivery per slot of ``1/rate`` s."""
    slots: list[list[Delivery]] = []
    cursors = [0] * len(plan.per_user)
    remaining = sum(len(items) for items in plan.per_user)
    while remaining:
        for u, items in enumerate(plan.per_user):
            # Take this user's next delivery (with its concurrent twin, which shares the slot).
            i = cursors[u]
            if i >= len(items):
                continue
            slot = [items[i]]
            if items[i].concurrent and i + 1 < len(items) and items[i + 1].concurrent:
                slot.append(items[i + 1])
            cursors[u] += len(slot)
            remaining -= len(slot)
            slots.append(slot)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    start_wall, start = time.time(), time.perf_counter()
    late = 0
    for n, slot in enumerate(slots):
        due = start + n / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.001:
            late += 1
        for d in slot:
            d.sent_wall = start_wall + n / rate
            tasks.append(loop.create_task(sender.post(d, since=due)))
    await asyncio.gather(*tasks)
    return late


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    """Build, wait for the go, send; returns the results."""
    plan = build_plan(spec)
    deliveries = plan.all()
    sender = Sender(spec["host"], int(spec["port"]), int(spec["concurrency"]))
    # Connect before the clock starts, like Meta's long-lived connections.
    conns = list(sender.pool._queue)  # type: ignore[attr-defined]  # asyncio.Queue keeps a deque
    await asyncio.gather(*(c.open() for c in conns))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu0 = time.process_time()
    t0_wall, t0 = time.time(), time.perf_counter()
    late = 0
    timed_out = False
    try:
        if spec["mode"] == "rate":
            late = await asyncio.wait_for(run_rate(plan, sender, float(spec["rate"])), spec["time_limit"])
        else:
            await asyncio.wait_for(run_open(plan, sender), spec["time_limit"])
    except TimeoutError:
        timed_out = True
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    await sender.close()
    return {
        "mode": spec["mode"],
        "start_wall": t0_wall,
        "elapsed_s": elapsed,
        "timed_out": timed_out,
        "late_sends": late,
        "cpu_s": cpu,
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        # One row per delivery: user, seq, wamid, dup, sent_wall, ack_ms, status, attempts, error, text.
        "deliveries": [
            [
                d.user,
                d.seq,
                d.wamid,
                d.dup,
                d.sent_wall,
                round(d.ack_ms, 3),
                d.status,
                d.attempts,
                d.error,
                d.text if d.dup == 0 else "",
            ]
            for d in deliveries
        ],
    }


def main() -> None:
    """Entry point: ``loadgen.py SPEC OUT``."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        result = asyncio.run(main_async(spec))
    else:
        result = uvloop.run(main_async(spec))
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
