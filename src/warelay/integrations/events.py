"""Events for external agent platforms: stored with the work that produced them, delivered in order.

Where it sits: after a turn of an ``external`` agent (:mod:`warelay.agents.external`) and after
delivery statuses of messages such a platform sent. Each event is a row of ``agent_events``,
written in the transaction that produced it, so it exists exactly when its cause does. Then:

- **push** (an agent's ``delivery: push``, the default): :class:`EventPusher` POSTs each event to
  the platform — the agent's ``webhook_url``, else ``AI_AGENT_BASE_URL`` + ``webhook_path``
  (``/webhooks/warelay``) — with ``X-Warelay-Event``, ``X-Warelay-Delivery`` (the event id, for the
  platform to deduplicate), ``X-Warelay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
  "<t>.<body>">`` keyed with the agent's signing secret, and ``Authorization: Bearer`` with the
  tenant's OAuth access token when the tenant connected the platform. Any 2xx acknowledges; anything
  else is retried with exponential backoff until the agent's ``max_delivery_attempts``, then the
  event is dead and the next one goes. Events of one conversation go one at a time, in id order
  (a conversation's head blocks the ones behind it); conversations go concurrently.
- **poll** (``delivery: poll``): the platform reads ``GET /api/v1/integration/ai/messages?after=…``
  (:func:`poll_events`), which answers the tenant's events after the cursor and takes the cursor as
  the acknowledgement of everything up to it.

The only possible duplicate: the platform answered 2xx and the process died before recording it;
the retry carries the same ``X-Warelay-Delivery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
import orjson

from warelay.agents.base import AgentEventDraft
from warelay.agents.config import AgentConfig
from warelay.crypto import SecretBox
from warelay.errors import DeliveryError
from warelay.outbound.retry import backoff_delay
from warelay.storage.direct import Database, Tx
from warelay.storage.models import utcnow

__all__ = [
    "DEFAULT_WEBHOOK_PATH",
    "EventPusher",
    "Notifier",
    "insert_events",
    "poll_events",
    "sign",
    "status_events",
]

log = logging.getLogger("warelay.events")

DEFAULT_WEBHOOK_PATH: Final = "/webhooks/warelay"
DEFAULT_MAX_ATTEMPTS: Final = 10
BATCH: Final = 64

_COLUMNS = (
    "tenant_id, agent_id, conversation_id, message_id, event, delivery, delivery_id, payload, state,"
    " attempts, available_at, created_at"
)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Warelay-Signature`` header value: ``t=<unix seconds>,v1=<hex HMAC-SHA256("<t>.<body>")>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


async def insert_events(
    tx: Tx,
    events: Sequence[tuple[AgentEventDraft, int, str, int]],
    now: datetime,
) -> None:
    """Store events ``(draft, tenant id, conversation id, number id)``; each links to its message."""
    if not events:
        return
    await tx.executemany(
        f"INSERT INTO agent_events ({_COLUMNS}) VALUES ($1, $2, $3,"  # noqa: S608  # fixed column list
        " (SELECT id FROM messages WHERE number_id = $4 AND provider_message_id = $5), $6, $7, $8, $9,"
        " 'pending', 0, $10, $10)",
        [
            (
                tenant_id,
                draft.agent_id,
                conversation_id,
                number_id,
                draft.provider_message_id,
                draft.event,
                draft.delivery,
                str(draft.payload["id"]),
                dict(draft.payload),
                now,
            )
            for draft, tenant_id, conversation_id, number_id in events
        ],
    )


# The route whose messages' statuses go back to the platform (api/routes/integration.py ROUTE).
SEND_ROUTE: Final = "/api/v1/integration/ai/send-message"
STATUS: Final = "message.status"


async def status_events(
    tx: Tx,
    changes: Sequence[tuple[int | None, int | None, str | None, str, int, Any]],
    now: datetime,
) -> None:
    """Queue ``message.status`` events for messages an external platform sent through send-message.

    ``changes`` are ``(message id, number id, wamid, status, rank, errors)``, identified by message id
    or by number and wamid; each status that moves a message forward makes one event, in rank order
    (never backwards, as the message itself moves). Runs before the status is written.
    """
    by_id = sorted({c[0] for c in changes if c[0] is not None})
    by_wamid = sorted({c[2] for c in changes if c[0] is None and c[2] is not None})
    if not by_id and not by_wamid:
        return
    rows = await tx.fetch(
        "SELECT m.id, m.number_id, m.provider_message_id, m.status_rank, m.conversation_id, n.tenant_id,"
        " t.subdomain, n.phone_number_id, ag.id, ag.config FROM messages AS m"
        " JOIN api_send_audit AS a ON a.message_id = m.id AND a.route = $3"
        " JOIN numbers AS n ON n.id = m.number_id JOIN tenants AS t ON t.id = n.tenant_id"
        " JOIN agents AS ag ON ag.id = n.agent_id AND ag.kind = 'external'"
        " WHERE m.direction = 'out' AND (m.id = ANY($1) OR m.provider_message_id = ANY($2))",
        by_id,
        by_wamid,
        SEND_ROUTE,
    )
    if not rows:
        return
    found = {int(r[0]): r for r in rows}
    by_pair = {(int(r[1]), r[2]): int(r[0]) for r in rows if r[2] is not None}
    # Every status that moves a message forward, once each, in order: a webhook may bring "sent",
    # "delivered" and "read" together, and the platform hears of each.
    moves: dict[tuple[int, int], tuple[str, Any]] = {}
    for message_id, number_id, wamid, status, rank, errors in changes:
        key = message_id if message_id is not None else by_pair.get((number_id or 0, wamid or ""))
        if key is None or key not in found or rank <= int(found[key][3]):
            continue
        moves.setdefault((key, rank), (status, errors))
    drafts = []
    for (message_id, _), (status, errors) in sorted(moves.items()):
        r = found[message_id]
        config = tx.json(r[9]) or {}
        delivery_id = f"evt_{secrets.token_hex(12)}"
        payload = {
            "id": delivery_id,
            "event": STATUS,
            "timestamp": now.isoformat(),
            "tenant": r[6],
            "number": {"phone_number_id": r[7]},
            "conversation": {"sessionId": r[4]},
            "message": {"id": str(message_id), "wamid": r[2], "status": status, "errors": errors or []},
        }
        draft = AgentEventDraft(int(r[8]), STATUS, str(config.get("delivery") or "push"), None, payload)
        drafts.append((draft, int(r[5]), r[4], message_id))
    await tx.executemany(
        f"INSERT INTO agent_events ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"  # noqa: S608  # fixed columns
        " 'pending', 0, $9, $9)",
        [
            (
                tenant_id,
                d.agent_id,
                conversation_id,
                message_id,
                d.event,
                d.delivery,
                d.payload["id"],
                dict(d.payload),
                now,
            )
            for d, tenant_id, conversation_id, message_id in drafts
        ],
    )


# ------------------------------------------------------------------------------------------- poll


@dataclass(frozen=True, slots=True)
class Polled:
    """A page of polled events and the cursor that acknowledges them."""

    items: list[dict[str, Any]]
    next_cursor: str


async def _poll(tx: Tx, tenant_id: int, after: int, limit: int, now: datetime) -> list[tuple[int, Any]]:
    if after > 0:
        # The cursor acknowledges everything up to it.
        await tx.execute(
            "UPDATE agent_events SET state = 'delivered', delivered_at = $3"
            " WHERE tenant_id = $1 AND delivery = 'poll' AND state = 'pending' AND id <= $2",
            tenant_id,
            after,
            now,
        )
    rows = await tx.fetch(
        "SELECT id, payload FROM agent_events WHERE tenant_id = $1 AND delivery = 'poll'"
        " AND state = 'pending' AND id > $2 ORDER BY id LIMIT $3",
        tenant_id,
        after,
        limit,
    )
    return [(int(r[0]), tx.json(r[1])) for r in rows]


async def poll_events(
    db: Database,
    *,
    tenant_id: int,
    after: int,
    limit: int,
    wait: float,
    notified: Callable[[float], Awaitable[None]] | None = None,
) -> Polled:
    """The tenant's polled events after ``after``, waiting up to ``wait`` seconds for one to arrive.

    ``notified(timeout)`` returns early when this process stored new events; events stored by
    other processes are seen by re-reading every half second.
    """
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        rows = await db.write(_poll, tenant_id, after, limit, utcnow())
        left = deadline - time.monotonic()
        if rows or left <= 0:
            break
        if notified is not None:
            await notified(min(left, 0.5))
        else:
            await asyncio.sleep(min(left, 0.5))
    cursor = rows[-1][0] if rows else after
    return Polled(items=[payload for _, payload in rows], next_cursor=str(cursor))


class Notifier:
    """Wakes long polls of this process when it stored events (others re-read every half second)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Events were stored: every current waiter wakes."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109  # a bounded wait, not one await
        """Until the next :meth:`notify`, at most ``timeout`` seconds."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout)


# ------------------------------------------------------------------------------------------- push


@dataclass(frozen=True, slots=True)
class _Due:
    id: int
    tenant_id: int
    agent_id: int
    event: str
    delivery_id: str
    payload: Any
    attempts: int


async def _claim(tx: Tx, now: datetime, limit: int, lease_seconds: float) -> list[_Due]:
    rows = await tx.fetch(
        "SELECT e.id, e.tenant_id, e.agent_id, e.event, e.delivery_id, e.payload, e.attempts"
        " FROM agent_events AS e WHERE e.delivery = 'push' AND e.state = 'pending' AND e.available_at <= $1"
        " AND (e.leased_until IS NULL OR e.leased_until < $1)"
        " AND NOT EXISTS (SELECT 1 FROM agent_events AS p WHERE p.conversation_id = e.conversation_id"
        "  AND p.state = 'pending' AND p.id < e.id)"
        " ORDER BY e.id LIMIT $2 FOR UPDATE OF e SKIP LOCKED",
        now,
        limit,
    )
    if not rows:
        return []
    await tx.execute(
        "UPDATE agent_events SET leased_until = $2, attempts = attempts + 1 WHERE id = ANY($1)",
        [int(r[0]) for r in rows],
        now + timedelta(seconds=lease_seconds),
    )
    return [_Due(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], tx.json(r[5]), int(r[6]) + 1) for r in rows]


async def _settle(tx: Tx, results: Sequence[tuple[int, str, datetime, dict[str, Any] | None]]) -> None:
    """Record outcomes ``(event id, state, when, error)``: delivered, dead, or pending (retry at ``when``)."""
    for event_id, state, when, error in results:
        if state == "delivered":
            await tx.execute(
                "UPDATE agent_events SET state = 'delivered', delivered_at = $2, leased_until = NULL,"
                " last_error = NULL WHERE id = $1",
                event_id,
                when,
            )
        else:
            await tx.execute(
                "UPDATE agent_events SET state = $2, available_at = $3, leased_until = NULL, last_error = $4"
                " WHERE id = $1",
                event_id,
                state,
                when,
                error,
            )


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    secret: str | None
    max_attempts: int


class EventPusher:
    """Pushes ``delivery: push`` events to their platforms (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        agent_config: Callable[[int], Awaitable[tuple[int, AgentConfig] | None]],
        access_token: Callable[[int], Awaitable[str | None]],
        base_url: Callable[[], str | None],
        poll_interval: float = 0.5,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        timeout: float = 15.0,
        lease_seconds: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._db = db
        self._agent_config = agent_config
        self._access_token = access_token
        self._base_url = base_url
        self._poll = poll_interval
        # A claimed event is another process's again after its lease: longer than one push may take,
        # so a slow platform is not pushed the same event twice at once.
        self._lease = max(lease_seconds, timeout + 5)
        self._backoff = (backoff_base, backoff_max)
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._rng = random.Random()  # noqa: S311  # jitter only

    def wake(self) -> None:
        """New events were stored: look now instead of at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until stopped."""
        while not self._stopping:
            self._wakeup.clear()
            try:
                due = await self._db.write(_claim, utcnow(), BATCH, self._lease)
            except Exception:
                log.exception("claiming agent events failed; retrying")
                due = []
            if due:
                results = await asyncio.gather(*(self._deliver(e) for e in due))
                try:
                    await self._db.write(_settle, results)
                except Exception:
                    log.exception("recording agent event deliveries failed (their leases lapse)")
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll)

    async def stop(self) -> None:
        """Stop claiming and close the HTTP client (in-flight leases lapse and are retried)."""
        self._stopping = True
        self._wakeup.set()
        await self._client.aclose()

    async def _target(self, due: _Due) -> _Target | str:
        found = await self._agent_config(due.agent_id)
        if found is None:
            return "the agent no longer exists"
        _, config = found
        url = config.webhook_url
        if url is None:
            base = self._base_url()
            if not base:
                return "no webhook_url for the agent and no AI_AGENT_BASE_URL"
            url = base.rstrip("/") + (config.webhook_path or DEFAULT_WEBHOOK_PATH)
        secret = config.signing_secret.get_secret_value() if config.signing_secret else None
        return _Target(url, secret, config.max_delivery_attempts or DEFAULT_MAX_ATTEMPTS)

    async def _deliver(self, due: _Due) -> tuple[int, str, datetime, dict[str, Any] | None]:
        now = utcnow()
        target = await self._target(due)
        if isinstance(target, str):
            log.error("agent event %s cannot be delivered: %s", due.delivery_id, target)
            return due.id, "dead", now, {"message": target}
        body = orjson.dumps(due.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "warelay",
            "X-Warelay-Event": due.event,
            "X-Warelay-Delivery": due.delivery_id,
        }
        if target.secret:
            headers["X-Warelay-Signature"] = sign(target.secret, body, int(time.time()))
        error: dict[str, Any]
        try:
            # The tenant's OAuth token, refreshed when due; a platform that cannot refresh it now
            # fails this attempt, to be retried like a failed push.
            token = await self._access_token(due.tenant_id)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            response = await self._client.post(target.url, content=body, headers=headers)
        except (httpx.HTTPError, DeliveryError) as exc:
            error = {"type": type(exc).__name__, "message": str(exc)[:500]}
        else:
            if 200 <= response.status_code < 300:
                log.debug("agent event %s delivered", due.delivery_id)
                return due.id, "delivered", utcnow(), None
            error = {"status": response.status_code, "body": response.text[:500]}
        if due.attempts >= target.max_attempts:
            log.error("agent event %s dead after %d attempts: %s", due.delivery_id, due.attempts, error)
            return due.id, "dead", now, error
        delay = backoff_delay(due.attempts, base=self._backoff[0], cap=self._backoff[1], rng=self._rng)
        log.warning(
            "agent event %s attempt %d failed (%s); retrying in %.1fs",
            due.delivery_id,
            due.attempts,
            error,
            delay,
        )
        return due.id, "pending", now + timedelta(seconds=delay), error


def stored_agent_config(
    read: Callable[[int], Awaitable[Mapping[str, Any] | None]], box: SecretBox
) -> Callable[[int], Awaitable[tuple[int, AgentConfig] | None]]:
    """An agent-config lookup for :class:`EventPusher` from a reader of stored agent rows."""

    async def lookup(agent_id: int) -> tuple[int, AgentConfig] | None:
        stored = await read(agent_id)
        return None if stored is None else (agent_id, AgentConfig.from_stored(stored, box))

    return lookup
