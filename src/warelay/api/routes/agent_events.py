"""External agents that poll: ``GET /api/v1/integration/ai/messages?after=<cursor>&wait=<seconds>``.

A tenant's key with ``conversations:read`` reads its ``delivery: poll`` agents' events (the same
bodies a push delivers: ``message.received``, ``message.status``) in order, after the cursor it
passes; answering with a page means nothing, passing its ``next_cursor`` back acknowledges every
event up to it. ``wait`` (up to 30 s) holds an empty answer open until an event arrives.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from warelay.api.deps import ReaderDep, RuntimeDep
from warelay.integrations.events import poll_events

router = APIRouter(prefix="/api/v1/integration/ai", tags=["external agents"])

MAX_WAIT_SECONDS = 30.0


class EventPage(BaseModel):
    """Events after the cursor, oldest first; pass ``next_cursor`` back as ``after`` for the next ones."""

    items: list[dict[str, Any]]
    next_cursor: str = Field(description="acknowledges every event up to it when passed back as `after`")


@router.get("/messages", response_model=EventPage)
async def poll_messages(
    runtime: RuntimeDep,
    principal: ReaderDep,
    after: Annotated[
        str | None, Query(max_length=20, pattern=r"^\d+$", description="`next_cursor` of the previous answer")
    ] = None,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for an event")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventPage:
    """The key's tenant's events for its polling agents, after ``after``."""
    if principal.tenant_id is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "events are read with a key of the tenant they belong to"
        )
    polled = await poll_events(
        runtime.db,
        tenant_id=principal.tenant_id,
        after=int(after or 0),
        limit=limit,
        wait=wait,
        notified=runtime.event_polls.wait,
    )
    return EventPage(items=polled.items, next_cursor=polled.next_cursor)
