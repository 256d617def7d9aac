"""Messages sent through the API: seed 000's ``send-message`` and seed 004's ``/api/send-message``.

Where it sits in the path::

    POST …/send-message ──▶ send_via_api() ── one transaction ──▶ outbox rows + send work items,
                                                                   audit rows, idempotency record
    SendWorker ──▶ Graph API ──▶ the rows' status (accepted, sent, delivered, read, failed),
                                 which wait_for_sends() reads for callers that wait

A message sent through the API joins the recipient's active conversation with the sending number,
as an agent's reply does: it is stored there (history, statuses) and goes through the outbox
(WhatsApp formatting, splitting at 4096 characters, per-number pacing, retries). It may only go to
an *active contact*: someone whose conversation with that number is open because they wrote to it
recently (seed 000's best practice, which also keeps within WhatsApp's 24-hour window). The sending
number is the one the request names (``from``: its phone_number_id or display number), else the
tenant's only active number.

Every request is audited in ``api_send_audit`` (tenant, key, route, recipient, type, a summary, the
outbox message, the result), refused ones too, in the transaction that queues its messages. A
request with an ``Idempotency-Key`` is remembered for 24 hours in ``idempotency_records``, in the
same transaction: the same request again answers what the first one queued, and sends nothing; a
different request with the same key is refused. Only requests that queued something are
remembered, so a request refused (say, before the user wrote) can be retried with its key.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from warelay.agents.base import AgentReply
from warelay.channels.cloud.payloads import ContentLimitError, message_body
from warelay.domain import (
    OutboundContent,
    OutCatalog,
    OutFlow,
    OutMedia,
    OutProductList,
)
from warelay.inbox.store import Claimed, LeaseOffer
from warelay.inbox.worker import render_replies
from warelay.outbound.outbox import Draft, content_text, content_type, enqueue
from warelay.runtime import Runtime
from warelay.storage.direct import Tx
from warelay.storage.models import Base, utcnow

__all__ = [
    "IDEMPOTENCY_TTL",
    "ApiSend",
    "Caller",
    "NumberChoiceError",
    "SendQueued",
    "SendRejectedError",
    "SendState",
    "SendingNumber",
    "audit_rejection",
    "pick_number",
    "send_via_api",
    "summarize",
    "tenant_numbers",
    "wait_for_sends",
]

log = logging.getLogger("warelay.outbound.api")

IDEMPOTENCY_TTL: Final = timedelta(hours=24)
# Statuses after which Graph has answered a send: accepted (or later), or failed for good.
SETTLED: Final = frozenset({"accepted", "sent", "delivered", "read", "played", "failed"})
_SUMMARY_MAX: Final = 2000
_PURGE_BATCH: Final = 100

_AUDIT = Base.metadata.tables["api_send_audit"]
_AUDIT_COLUMNS = (
    "request_id",
    "tenant_id",
    "api_key_id",
    "route",
    "number_id",
    "recipient",
    "type",
    "summary",
    "message_id",
    "result",
    "reason",
    "created_at",
)
_IDEMPOTENCY = Base.metadata.tables["idempotency_records"]
_IDEMPOTENCY_COLUMNS = (
    "owner",
    "api_key_id",
    "idempotency_key",
    "route",
    "request_hash",
    "result",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends: the key's tenant (None: platform-wide) and the key's id (None: the admin token)."""

    tenant_id: int | None
    key_id: int | None

    @property
    def owner(self) -> str:
        """Whose Idempotency-Keys a request's key is kept among."""
        return f"key:{self.key_id}" if self.key_id is not None else "admin"


@dataclass(frozen=True, slots=True)
class ApiSend:
    """One send request, already checked for shape.

    ``to`` is the recipient as the user key warelay files them under (digits of a phone number, or a
    business-scoped user id); ``recipient`` is what the caller wrote, for the audit. ``sender`` is the
    optional sending number (``from``). ``request_hash`` identifies the request for its
    ``idempotency_key``.
    """

    route: str
    to: str
    recipient: str
    type: str
    contents: tuple[OutboundContent, ...]
    sender: str | None = None
    idempotency_key: str | None = None
    request_hash: str = ""


@dataclass(frozen=True, slots=True)
class SendQueued:
    """What a send request queued: its outbox messages (in order) and where they go."""

    message_ids: tuple[int, ...]
    conversation_id: str
    phone_number_id: str
    wa_id: str | None
    user_id: str | None
    replayed: bool = False

    def record(self) -> dict[str, Any]:
        """How it is kept for an Idempotency-Key."""
        return {
            "message_ids": list(self.message_ids),
            "conversation_id": self.conversation_id,
            "phone_number_id": self.phone_number_id,
            "wa_id": self.wa_id,
            "user_id": self.user_id,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SendQueued:
        """The first answer again, for a retried request."""
        return cls(
            message_ids=tuple(int(i) for i in record["message_ids"]),
            conversation_id=str(record["conversation_id"]),
            phone_number_id=str(record["phone_number_id"]),
            wa_id=record.get("wa_id"),
            user_id=record.get("user_id"),
            replayed=True,
        )


class SendRejectedError(Exception):
    """A send request refused, and audited: the HTTP status to answer, the reason, for the caller, and
    the Graph field at fault when the content broke one of WhatsApp's limits."""

    def __init__(
        self, status: int, reason: str, *, field: str | None = None, problem: str | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class SendState:
    """Where one outbox message is: its status, the wamid Graph gave it, the error that failed it."""

    message_id: int
    status: str
    wamid: str | None
    error: dict[str, Any] | None

    @property
    def settled(self) -> bool:
        """Whether Graph has answered the send (accepted it, or it failed for good)."""
        return self.status in SETTLED


# -------------------------------------------------------------------------------------------- sending


async def send_via_api(runtime: Runtime, caller: Caller, send: ApiSend) -> SendQueued:
    """Queue ``send`` in the outbox (or answer what its Idempotency-Key already queued).

    Raises :class:`SendRejectedError` — after auditing the refusal — when the content breaks one of
    WhatsApp's limits (422), the sending number is unknown to the caller's tenant (404) or
    ambiguous (422), or the recipient is not an active contact of that number (422).
    """
    parts = tuple(render_replies(AgentReply(replies=send.contents)))
    try:
        for part in parts:
            # WhatsApp's limits hold whatever the channel: a 422 now, not a failed message later.
            message_body(send.to, part)
    except ContentLimitError as exc:
        reason = f"the message cannot be sent: {exc}"
        await audit_rejection(
            runtime,
            caller,
            route=send.route,
            reason=reason,
            recipient=send.recipient,
            kind=send.type,
            summary=_summary(send),
        )
        raise SendRejectedError(422, reason, field=exc.field, problem=exc.reason) from None
    for _ in range(3):
        offer = runtime.sender.offer()
        try:
            outcome = await runtime.db.write(_queue, caller, send, parts, utcnow(), offer)
        except _RacedError:
            # Another request with the same Idempotency-Key committed first: answer what it queued.
            log.info("a request with the same Idempotency-Key was queued first; answering its result")
            continue
        if isinstance(outcome, _Refusal):
            raise SendRejectedError(outcome.status, outcome.reason)
        if not outcome.queued.replayed:
            runtime.sender.hand_over(outcome.leased, left=outcome.left)
            if outcome.left and runtime.wake_others is not None:
                runtime.wake_others()
            log.info(
                "api send queued %d message(s) via %s",
                len(outcome.queued.message_ids),
                send.route,
                extra={"conversation": outcome.queued.conversation_id},
            )
        return outcome.queued
    raise SendRejectedError(409, "another request with this Idempotency-Key is being processed; retry it")


async def audit_rejection(
    runtime: Runtime,
    caller: Caller,
    *,
    route: str,
    reason: str,
    recipient: str | None = None,
    kind: str | None = None,
    summary: str | None = None,
) -> None:
    """Record a send request refused before it was understood (what is known of it, and why)."""
    row = _audit_row(
        secrets.token_hex(8),
        caller,
        tenant_id=caller.tenant_id,
        number_id=None,
        route=route,
        recipient=recipient,
        type_=kind,
        summary=summary,
        message_id=None,
        result="rejected",
        reason=reason,
        now=utcnow(),
    )
    await runtime.db.write(_insert_audit, [row])


async def _insert_audit(tx: Tx, rows: Sequence[tuple[Any, ...]]) -> None:
    await tx.insert_many(_AUDIT, _AUDIT_COLUMNS, rows)


def summarize(content: OutboundContent) -> str:
    """What a message says, in a line, for the audit."""
    if isinstance(content, OutMedia):
        text = " — ".join(x for x in (content.link or content.media_id, content.caption) if x)
    elif isinstance(content, OutProductList):
        count = sum(len(s.product_retailer_ids) for s in content.sections)
        text = f"{content.header}: {content.body} [catalog {content.catalog_id}, {count} products]"
    elif isinstance(content, OutCatalog):
        text = f"{content.body} [catalog]"
    elif isinstance(content, OutFlow):
        text = f"{content.body} [flow {content.flow_id}: {content.flow_cta}]"
    else:
        text = content_text(content) or content_type(content)
    return text if len(text) <= _SUMMARY_MAX else text[: _SUMMARY_MAX - 1] + "…"


def _summary(send: ApiSend) -> str:
    return " | ".join(summarize(c) for c in send.contents)


# --------------------------------------------------------------------------------------- transaction


class _RacedError(Exception):
    """A concurrent request stored the same Idempotency-Key first (the transaction is rolled back)."""


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Accepted:
    queued: SendQueued
    leased: list[Claimed]
    left: int


@dataclass(frozen=True, slots=True)
class SendingNumber:
    """A number of the caller's tenant, as the send APIs choose among them."""

    id: int
    tenant_id: int
    phone_number_id: str
    display_phone_number: str | None
    status: str


class NumberChoiceError(Exception):
    """No number can be chosen: the HTTP status (404 unknown ``from``, 422 none or several) and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _audit_row(
    request_id: str,
    caller: Caller,
    *,
    tenant_id: int | None,
    number_id: int | None,
    route: str,
    recipient: str | None,
    type_: str | None,
    summary: str | None,
    message_id: int | None,
    result: str,
    reason: str | None,
    now: datetime,
) -> tuple[Any, ...]:
    def clip(value: str | None, limit: int) -> str | None:
        return value if value is None or len(value) <= limit else value[:limit]

    return (
        request_id,
        tenant_id,
        caller.key_id,
        clip(route, 100),
        number_id,
        clip(recipient, 160),
        clip(type_, 20),
        clip(summary, _SUMMARY_MAX),
        message_id,
        result,
        clip(reason, _SUMMARY_MAX),
        now,
    )


async def _queue(
    tx: Tx,
    caller: Caller,
    send: ApiSend,
    parts: tuple[OutboundContent, ...],
    now: datetime,
    offer: LeaseOffer | None,
) -> _Accepted | _Refusal:
    request_id = secrets.token_hex(8)

    async def refuse(status: int, reason: str, number: SendingNumber | None = None) -> _Refusal:
        row = _audit_row(
            request_id,
            caller,
            tenant_id=number.tenant_id if number is not None else caller.tenant_id,
            number_id=number.id if number is not None else None,
            route=send.route,
            recipient=send.recipient,
            type_=send.type,
            summary=_summary(send),
            message_id=None,
            result="rejected",
            reason=reason,
            now=now,
        )
        await _insert_audit(tx, [row])
        return _Refusal(status, reason)

    if send.idempotency_key is not None:
        earlier = await _earlier_request(tx, caller, send, now)
        if isinstance(earlier, SendQueued):
            return _Accepted(earlier, [], 0)
        if earlier is not None:
            return await refuse(422, earlier)

    try:
        number = pick_number(await tenant_numbers(tx, caller.tenant_id), send.sender)
    except NumberChoiceError as exc:
        return await refuse(exc.status, exc.reason)
    if number.status != "active":
        return await refuse(422, f"number {number.phone_number_id} is {number.status}; it does not send")

    found = await tx.fetchrow(
        "SELECT v.id, c.wa_id, c.user_id FROM conversations AS v JOIN contacts AS c ON c.id = v.contact_id"
        " WHERE v.number_id = $1 AND c.user_key = $2 AND v.is_active AND v.expires_at > $3",
        number.id,
        send.to,
        now,
    )
    if found is None:
        reason = (
            f"{send.recipient} is not an active contact of number {number.phone_number_id}: "
            "warelay sends only to people who wrote to the number recently (their conversation is "
            "open), so an AI cannot message strangers and replies stay within WhatsApp's 24-hour window"
        )
        return await refuse(422, reason, number)
    conversation_id, wa_id, user_id = str(found[0]), found[1], found[2]

    drafts = [
        Draft(conversation_id=conversation_id, number_id=number.id, content=part, part=i)
        for i, part in enumerate(parts)
    ]
    queued = await enqueue(tx, drafts, now, offer)
    rows = [
        _audit_row(
            request_id,
            caller,
            tenant_id=number.tenant_id,
            number_id=number.id,
            route=send.route,
            recipient=send.recipient,
            type_=send.type,
            summary=summarize(part),
            message_id=message_id,
            result="queued",
            reason=None,
            now=now,
        )
        for part, message_id in zip(parts, queued.ids, strict=True)
    ]
    await _insert_audit(tx, rows)
    result = SendQueued(
        message_ids=tuple(queued.ids),
        conversation_id=conversation_id,
        phone_number_id=number.phone_number_id,
        wa_id=wa_id,
        user_id=user_id,
    )
    if send.idempotency_key is not None:
        stored = await tx.insert_many(
            _IDEMPOTENCY,
            _IDEMPOTENCY_COLUMNS,
            [
                (
                    caller.owner,
                    caller.key_id,
                    send.idempotency_key,
                    send.route,
                    send.request_hash,
                    result.record(),
                    now,
                )
            ],
            suffix="ON CONFLICT (owner, idempotency_key) DO NOTHING",
            returning="id",
        )
        if not stored:
            raise _RacedError
    return _Accepted(result, queued.leased, queued.left)


async def _earlier_request(tx: Tx, caller: Caller, send: ApiSend, now: datetime) -> SendQueued | str | None:
    """What an earlier request with the same Idempotency-Key queued, a reason to refuse, or None."""
    cutoff = now - IDEMPOTENCY_TTL
    # This key's expired record first (so it cannot block the new one), then a few of anybody's.
    await tx.execute(
        "DELETE FROM idempotency_records WHERE owner = $1 AND idempotency_key = $2 AND created_at < $3",
        caller.owner,
        send.idempotency_key,
        cutoff,
    )
    await tx.execute(
        "DELETE FROM idempotency_records WHERE id IN (SELECT id FROM idempotency_records"
        " WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
        cutoff,
        _PURGE_BATCH,
    )
    row = await tx.fetchrow(
        "SELECT request_hash, route, result FROM idempotency_records"
        " WHERE owner = $1 AND idempotency_key = $2",
        caller.owner,
        send.idempotency_key,
    )
    if row is None:
        return None
    if row[0] != send.request_hash:
        where = "" if row[1] == send.route else f" on {row[1]}"
        return (
            f"Idempotency-Key {send.idempotency_key!r} was used{where} for a different request in the "
            "last 24 hours; a new message needs a new key"
        )
    return SendQueued.from_record(tx.json(row[2]))


async def tenant_numbers(tx: Tx, tenant_id: int | None) -> list[SendingNumber]:
    """The numbers of a tenant (of every tenant for None: a platform-wide caller), oldest first."""
    query = "SELECT id, tenant_id, phone_number_id, display_phone_number, status FROM numbers"
    rows = (
        await tx.fetch(f"{query} ORDER BY id")
        if tenant_id is None
        else await tx.fetch(f"{query} WHERE tenant_id = $1 ORDER BY id", tenant_id)
    )
    return [SendingNumber(int(r[0]), int(r[1]), r[2], r[3], r[4]) for r in rows]


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def pick_number(numbers: Sequence[SendingNumber], sender: str | None) -> SendingNumber:
    """The number named by ``from`` (phone_number_id or display number), else the only active one.

    Raises :class:`NumberChoiceError` when ``from`` names none of them, or there is not exactly one.
    """
    if sender is not None:
        wanted = sender.strip()
        digits = _digits(wanted)
        for number in numbers:
            if number.phone_number_id == wanted or (
                number.display_phone_number and digits and _digits(number.display_phone_number) == digits
            ):
                return number
        # The same answer whether the number is another tenant's or nobody's.
        raise NumberChoiceError(
            404, f"no number {wanted!r} in this tenant ('from' takes its phone_number_id)"
        )
    active = [n for n in numbers if n.status == "active"]
    if len(active) == 1:
        return active[0]
    if not active:
        raise NumberChoiceError(422, "this tenant has no active WhatsApp number")
    names = ", ".join(n.phone_number_id for n in active)
    raise NumberChoiceError(
        422, f"this tenant has {len(active)} numbers ({names}): say which one with 'from'"
    )


# ---------------------------------------------------------------------------------------- waiting


async def wait_for_sends(runtime: Runtime, message_ids: Sequence[int], timeout: float) -> list[SendState]:  # noqa: ASYNC109  # a bound on polling, not one await
    """The outbox messages' states once Graph has answered every one, or as they are after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.0)
    delay = 0.02
    while True:
        states = await runtime.db.read(_states, list(message_ids))
        remaining = deadline - loop.time()
        if all(s.settled for s in states) or remaining <= 0:
            return states
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.25)


async def _states(tx: Tx, message_ids: list[int]) -> list[SendState]:
    rows = await tx.fetch(
        "SELECT id, status, provider_message_id, error FROM messages WHERE id = ANY($1)", message_ids
    )
    by_id = {int(r[0]): SendState(int(r[0]), r[1], r[2], tx.json(r[3])) for r in rows}
    # A message deleted meanwhile (its conversation removed) reads as failed, not as pending forever.
    gone = SendState(0, "failed", None, {"message": "the message no longer exists"})
    return [by_id.get(i, SendState(i, gone.status, None, gone.error)) for i in message_ids]
