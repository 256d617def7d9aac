"""Operator-initiated sends (``warelay send``): queue a text in the outbox and see it delivered.

The text goes through the same path as an agent's reply — formatting, splitting, per-number
pacing, retries, status tracking — in the user's active conversation (opened if there is none).
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from warelay.agents.base import AgentReply
from warelay.config import Settings
from warelay.domain import OutText, UserRef
from warelay.inbox.store import upsert_contacts
from warelay.inbox.worker import render_replies
from warelay.outbound.outbox import Draft, enqueue
from warelay.runtime import Runtime
from warelay.storage.direct import Tx
from warelay.storage.models import Message, utcnow

_SETTLED = {"accepted", "sent", "delivered", "read", "played", "failed"}


async def send_text(
    settings: Settings, *, phone_number_id: str, to: str, text: str, wait: float
) -> list[tuple[int, str]]:
    """Queue ``text`` for ``to`` from ``phone_number_id``; wait up to ``wait`` s for each part's status."""
    runtime = Runtime(settings, run_workers=False)
    await runtime.start()
    try:
        number = runtime.registry.by_phone_number_id(phone_number_id)
        if number is None:
            raise LookupError(f"no number with phone_number_id {phone_number_id!r}")
        if not to.isdigit():
            raise ValueError("--to must be a phone number in digits, e.g. 628123456789")
        parts = render_replies(AgentReply(replies=(OutText(body=text),)))

        async def queue(tx: Tx) -> list[int]:
            now = utcnow()
            contacts = await upsert_contacts(tx, [(number, UserRef(wa_id=to))], now, inbound=False)
            contact_id = contacts[(number.id, to)]
            conversations = await runtime.inbox.active_conversations(tx, {contact_id: (number, to)}, now)
            drafts = [
                Draft(conversation_id=conversations[contact_id], number_id=number.id, content=part, part=i)
                for i, part in enumerate(parts)
            ]
            return (await enqueue(tx, drafts, now)).ids

        ids = await runtime.db.write(queue)
        if wait <= 0:
            return [(i, "queued") for i in ids]
        sender = asyncio.create_task(runtime.sender.run())
        deadline = time.monotonic() + wait
        statuses: dict[int, str] = {}
        while time.monotonic() < deadline:
            async with runtime.reader.connect() as conn:
                rows = await conn.execute(select(Message.id, Message.status).where(Message.id.in_(ids)))
                statuses = {r.id: r.status for r in rows}
            if all(statuses.get(i) in _SETTLED for i in ids):
                break
            runtime.sender.wake()
            await asyncio.sleep(0.1)
        await runtime.sender.stop(grace=5)
        sender.cancel()
        return [(i, statuses.get(i, "queued")) for i in ids]
    finally:
        await runtime.stop()
