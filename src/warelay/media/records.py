"""The ``media_files`` table on the message path's direct driver access (:mod:`warelay.storage.direct`).

One row per inbound media message, keyed by (number, provider message id): written after every
fetch, successful or not, read before fetching so a retried turn reuses it, and swept by the purge
when it expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from warelay.storage.direct import Tx

__all__ = ["MediaRecord", "due_for_purge", "load_records", "mark_purged", "save_record"]

_COLUMNS = (
    "provider_message_id, media_id, media_type, status, error, mime_type, size, sha256, filename, store,"
    " storage_key, text, text_truncated, text_error, expires_at, purged_at"
)


@dataclass(frozen=True, slots=True)
class MediaRecord:
    """What is known about one inbound media file."""

    provider_message_id: str
    media_id: str | None
    media_type: str
    status: str
    error: dict[str, Any] | None = None
    mime_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    filename: str | None = None
    store: str | None = None
    storage_key: str | None = None
    text: str | None = None
    text_truncated: bool = False
    text_error: dict[str, Any] | None = None
    expires_at: datetime | None = None
    purged_at: datetime | None = None

    @property
    def transient_failure(self) -> bool:
        """The fetch failed in a way that may not happen again."""
        return self.status == "failed" and bool((self.error or {}).get("transient"))


async def load_records(
    tx: Tx, *, number_id: int, provider_message_ids: Sequence[str]
) -> dict[str, MediaRecord]:
    """The rows of these messages of a number, by provider message id."""
    rows = await tx.fetch(
        f"SELECT {_COLUMNS} FROM media_files"  # noqa: S608  # a constant column list
        " WHERE number_id = $1 AND provider_message_id = ANY($2)",
        number_id,
        list(provider_message_ids),
    )
    out: dict[str, MediaRecord] = {}
    for r in rows:
        out[r[0]] = MediaRecord(
            provider_message_id=r[0],
            media_id=r[1],
            media_type=r[2],
            status=r[3],
            error=tx.json(r[4]) if r[4] is not None else None,
            mime_type=r[5],
            size=r[6],
            sha256=r[7],
            filename=r[8],
            store=r[9],
            storage_key=r[10],
            text=r[11],
            text_truncated=bool(r[12]),
            text_error=tx.json(r[13]) if r[13] is not None else None,
            expires_at=tx.time(r[14]) if r[14] is not None else None,
            purged_at=tx.time(r[15]) if r[15] is not None else None,
        )
    return out


async def save_record(
    tx: Tx, *, tenant_id: int, number_id: int, record: MediaRecord, now: datetime, expires_at: datetime
) -> None:
    """Insert the row of a message's media, or replace what an earlier attempt wrote."""
    await tx.execute(
        "INSERT INTO media_files (tenant_id, number_id, message_id, provider_message_id, media_id,"
        " media_type, status, error, mime_type, size, sha256, filename, store, storage_key, text,"
        " text_truncated, text_error, created_at, updated_at, expires_at)"
        " VALUES ($1, $2, (SELECT id FROM messages WHERE number_id = $2 AND provider_message_id = $3),"
        " $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18)"
        " ON CONFLICT (number_id, provider_message_id) DO UPDATE SET media_id = excluded.media_id,"
        " media_type = excluded.media_type, status = excluded.status, error = excluded.error,"
        " mime_type = excluded.mime_type, size = excluded.size, sha256 = excluded.sha256,"
        " filename = excluded.filename, store = excluded.store, storage_key = excluded.storage_key,"
        " text = excluded.text, text_truncated = excluded.text_truncated, text_error = excluded.text_error,"
        " updated_at = excluded.updated_at, expires_at = excluded.expires_at, purged_at = NULL",
        tenant_id,
        number_id,
        record.provider_message_id,
        record.media_id,
        record.media_type,
        record.status,
        record.error,
        record.mime_type,
        record.size,
        record.sha256,
        record.filename,
        record.store,
        record.storage_key,
        record.text,
        record.text_truncated,
        record.text_error,
        now,
        expires_at,
    )


async def due_for_purge(tx: Tx, *, now: datetime, limit: int) -> list[tuple[int, str | None, str | None]]:
    """Rows past their expiry not yet purged, oldest first: (id, store, storage key)."""
    rows = await tx.fetch(
        "SELECT id, store, storage_key FROM media_files WHERE purged_at IS NULL AND expires_at <= $1"
        " ORDER BY expires_at LIMIT $2",
        now,
        limit,
    )
    return [(int(r[0]), r[1], r[2]) for r in rows]


async def mark_purged(tx: Tx, ids: Sequence[int], now: datetime) -> int:
    """Mark rows purged: their file is gone, and so is the text read from it."""
    if not ids:
        return 0
    return await tx.execute(
        "UPDATE media_files SET purged_at = $2, updated_at = $2, text = NULL,"
        " status = CASE WHEN status = 'stored' THEN 'expired' ELSE status END"
        " WHERE id = ANY($1) AND purged_at IS NULL",
        list(ids),
        now,
    )
