"""The worker's ``prepare_turn`` hook: fetch, store and read a turn's media before the agent sees it.

Where it sits in the path::

    worker ──Turn──▶ MediaPreparer ──▶ channel.download_media (size cap, checksum)
                                   ──▶ media store (local folder / S3)
                                   ──▶ transcription endpoint (voice notes) / text extraction (documents)
                                   ──▶ media_files row (every outcome, failures included)
           ◀──Turn with attachments──

Each media message of the turn becomes an :class:`~warelay.agents.base.Attachment`. Whatever
happens to the file is recorded in ``media_files`` and logged, and the agent is told in words
(``describe_inbound``): a failed or oversized download, a voice note that cannot be transcribed, a
document without text. Transient download failures are retried a few times right away (a Graph
download URL lives five minutes, so each try resolves the media id again); after that the turn
goes on with the placeholder. A turn run again (after a crash, or because the agent failed) reuses
the stored file and its text instead of downloading again, and retries only what failed for a
passing reason. Only a failing media store raises, so the worker retries the turn as it would for
a database outage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import mimetypes
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, get_args

from warelay.agents.base import Attachment, AttachmentStatus, Turn, describe_inbound
from warelay.channels.base import Channel, MediaDownload, MediaTooLargeError
from warelay.config import MediaSettings
from warelay.domain import InboundMessage, MediaContent
from warelay.errors import DeliveryError, TransientDeliveryError
from warelay.media.extract import Extracted, extract_text
from warelay.media.records import MediaRecord, due_for_purge, load_records, mark_purged, save_record
from warelay.media.store import MediaMissingError, MediaStore, MediaStoreError
from warelay.media.transcribe import Transcriber, TranscriptionError
from warelay.numbers import NumberInfo
from warelay.storage.direct import Database, Tx
from warelay.storage.models import utcnow

__all__ = ["MediaPreparer", "storage_key"]

log = logging.getLogger("warelay.media")

_SUFFIXES: Final = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/amr": ".amr",
    "video/mp4": ".mp4",
    "video/3gpp": ".3gp",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
}
_STATUSES: Final[dict[str, AttachmentStatus]] = {s: s for s in get_args(AttachmentStatus)}
_PURGE_BATCH: Final = 500
_PURGE_BATCHES_PER_RUN: Final = 20
_MAX_BACKOFF: Final = 10.0


def _base_type(mime_type: str | None) -> str:
    return (mime_type or "").split(";")[0].strip().lower()


def storage_key(*, tenant_id: int, number_id: int, message: InboundMessage, mime_type: str | None) -> str:
    """Where a message's file is stored: ids and a hash only, the same on every attempt."""
    digest = hashlib.sha256(message.provider_message_id.encode()).hexdigest()[:40]
    base = _base_type(mime_type)
    suffix = _SUFFIXES.get(base) or mimetypes.guess_extension(base) or ".bin"
    if not suffix[1:].isalnum():
        suffix = ".bin"
    day = message.timestamp.strftime("%Y/%m/%d")
    return f"{tenant_id}/{number_id}/{day}/{digest}{suffix}"


def _sees_image(content: MediaContent) -> bool:
    """Files whose bytes go to the model as an image: photos, and stickers that do not move."""
    return content.media_type == "image" or (content.media_type == "sticker" and not content.animated)


class MediaPreparer:
    """Prepares the media of turns (the worker's ``prepare_turn``) and purges expired files."""

    def __init__(
        self,
        *,
        db: Database,
        channels: Mapping[str, Channel],
        store: MediaStore,
        settings: MediaSettings,
        transcriber: Transcriber | None = None,
    ) -> None:
        self.db = db
        self.channels = channels
        self.store = store
        self.settings = settings
        self.transcriber = transcriber
        self.retention = timedelta(days=settings.retention_days)

    async def aclose(self) -> None:
        """Close the store's and the transcriber's connections."""
        await self.store.aclose()
        if self.transcriber is not None:
            await self.transcriber.aclose()

    async def prepare(self, turn: Turn, number: NumberInfo) -> Turn:
        """The turn with an attachment for each of its media messages (text-only turns pass untouched)."""
        media = [
            m
            for m in turn.messages
            if isinstance(m.content, MediaContent) and m.provider_message_id not in turn.attachments
        ]
        if not media:
            return turn
        known = await self.db.read(
            load_records,
            number_id=turn.number_id,
            provider_message_ids=[m.provider_message_id for m in media],
        )
        prepared = await asyncio.gather(
            *(self._prepare_one(turn, number, m, known.get(m.provider_message_id)) for m in media)
        )
        attachments = dict(turn.attachments)
        attachments.update((m.provider_message_id, a) for m, a in zip(media, prepared, strict=True))
        # The message's text (what the API shows and later turns see as history) becomes what was
        # read from the file: "[voice note, transcribed] …" instead of "[voice note]".
        read = [
            (m.provider_message_id, describe_inbound(m, a))
            for m, a in zip(media, prepared, strict=True)
            if a.text
        ]
        if read:
            await self.db.write(_describe_messages, turn.number_id, read)
        return dataclasses.replace(turn, attachments=attachments)

    __call__ = prepare

    # ------------------------------------------------------------------------------------- one file

    async def _prepare_one(
        self, turn: Turn, number: NumberInfo, message: InboundMessage, record: MediaRecord | None
    ) -> Attachment:
        content = message.content
        assert isinstance(content, MediaContent)
        extra = {"wamid": message.provider_message_id}
        if record is not None:
            reused = await self._reuse(turn, message, content, record)
            if reused is not None:
                log.debug("media reused (%s)", reused.status, extra=extra)
                return reused
        channel = self.channels.get(number.channel)
        if channel is None or not content.media_id:
            reason = "the message has no media id" if channel else f"no channel {number.channel!r}"
            return await self._record_failure(turn, message, content, "unsupported", reason, None)
        limit = self.settings.max_bytes(content.media_type)
        started = time.perf_counter()
        try:
            download = await self._download(channel, number, content.media_id, limit, extra)
        except MediaTooLargeError as exc:
            log.warning("%s refused: %s", content.media_type, exc, extra=extra)
            return await self._record_failure(turn, message, content, "too_large", str(exc), exc.as_dict())
        except DeliveryError as exc:
            log.warning(
                "%s could not be downloaded (code %s: %s)", content.media_type, exc.code, exc, extra=extra
            )
            return await self._record_failure(turn, message, content, "failed", str(exc), exc.as_dict())
        mime = download.mime_type or content.mime_type
        key = storage_key(tenant_id=turn.tenant_id, number_id=turn.number_id, message=message, mime_type=mime)
        await self.store.put(key, download.data, mime_type=mime)
        text = await self._read(content, download.data, mime, extra)
        record = MediaRecord(
            provider_message_id=message.provider_message_id,
            media_id=content.media_id,
            media_type=content.media_type,
            status="stored",
            mime_type=mime,
            size=download.size,
            sha256=download.sha256,
            filename=content.filename,
            store=self.store.name,
            storage_key=key,
            text=text.text,
            text_truncated=text.truncated,
            text_error=text.error,
        )
        await self._save(turn, record)
        log.info(
            "%s stored (%d bytes in %.0f ms)%s",
            content.media_type,
            download.size,
            (time.perf_counter() - started) * 1000,
            f"; no text: {text.error['message']}" if text.error else "",
            extra=extra,
        )
        return self._attachment(content, record, download.data if _sees_image(content) else None)

    async def _download(
        self, channel: Channel, number: NumberInfo, media_id: str, limit: int, extra: dict[str, Any]
    ) -> MediaDownload:
        attempts = self.settings.download_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await channel.download_media(number, media_id, max_bytes=limit)
            except TransientDeliveryError as exc:
                if attempt == attempts:
                    raise
                delay = exc.retry_after
                if delay is None:
                    delay = self.settings.download_backoff_seconds * 2 ** (attempt - 1)
                log.info(
                    "media download attempt %d failed (%s); retrying in %.2fs",
                    attempt,
                    exc,
                    delay,
                    extra=extra,
                )
                await asyncio.sleep(min(delay, _MAX_BACKOFF))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _read(
        self, content: MediaContent, data: bytes, mime: str | None, extra: dict[str, Any]
    ) -> _Text:
        """A voice note's transcript or a document's text (nothing for other kinds)."""
        cap = self.settings.document_text_chars
        if content.media_type == "audio":
            if self.transcriber is None:
                return _Text(error={"message": "transcription is not configured", "transient": False})
            try:
                transcript = await self.transcriber.transcribe(data, mime_type=mime)
            except TranscriptionError as exc:
                log.warning("voice note not transcribed: %s", exc, extra=extra)
                return _Text(error={"message": str(exc), "transient": exc.transient})
            if not transcript:
                return _Text(error={"message": "the transcript is empty", "transient": False})
            return _Text(text=transcript[:cap], truncated=len(transcript) > cap)
        if content.media_type == "document":
            extracted: Extracted = await asyncio.to_thread(
                extract_text, data, mime, content.filename, max_chars=cap
            )
            if extracted.text is None:
                return _Text(error={"message": extracted.reason or "no text", "transient": False})
            return _Text(text=extracted.text, truncated=extracted.truncated)
        return _Text()

    async def _reuse(
        self, turn: Turn, message: InboundMessage, content: MediaContent, record: MediaRecord
    ) -> Attachment | None:
        """The attachment an earlier attempt prepared, or None when the file must be fetched again."""
        if record.purged_at is not None:
            return self._attachment(content, dataclasses.replace(record, status="expired"), None)
        if record.status != "stored":
            return None if record.transient_failure else self._attachment(content, record, None)
        if record.store != self.store.name or record.storage_key is None:
            return None  # kept by a store no longer configured: fetch again into this one
        needs_bytes = _sees_image(content) or (
            record.text is None and bool((record.text_error or {}).get("transient"))
        )
        if not needs_bytes:
            return self._attachment(content, record, None)
        try:
            data = await self.store.get(record.storage_key)
        except MediaMissingError:
            return None
        if record.text is None and (record.text_error or {}).get("transient"):
            text = await self._read(content, data, record.mime_type, {"wamid": message.provider_message_id})
            record = dataclasses.replace(
                record, text=text.text, text_truncated=text.truncated, text_error=text.error
            )
            await self._save(turn, record)
        return self._attachment(content, record, data if _sees_image(content) else None)

    async def _record_failure(
        self,
        turn: Turn,
        message: InboundMessage,
        content: MediaContent,
        status: AttachmentStatus,
        reason: str,
        error: dict[str, Any] | None,
    ) -> Attachment:
        record = MediaRecord(
            provider_message_id=message.provider_message_id,
            media_id=content.media_id,
            media_type=content.media_type,
            status=status,
            error=error or {"message": reason, "transient": False},
            mime_type=content.mime_type,
            filename=content.filename,
        )
        await self._save(turn, record)
        return self._attachment(content, record, None)

    async def _save(self, turn: Turn, record: MediaRecord) -> None:
        now = utcnow()
        await self.db.write(
            save_record,
            tenant_id=turn.tenant_id,
            number_id=turn.number_id,
            record=record,
            now=now,
            expires_at=now + self.retention,
        )

    @staticmethod
    def _attachment(content: MediaContent, record: MediaRecord, data: bytes | None) -> Attachment:
        status = _STATUSES.get(record.status, "failed")  # a status this version does not know: unusable
        reason = (record.error or {}).get("message") if status != "stored" else None
        if status == "stored" and record.text is None and record.text_error:
            reason = record.text_error.get("message")
        return Attachment(
            media_type=content.media_type,
            status=status,
            mime_type=record.mime_type,
            size=record.size,
            sha256=record.sha256,
            filename=record.filename,
            storage_key=record.storage_key if status == "stored" else None,
            text=record.text if status == "stored" else None,
            text_truncated=record.text_truncated,
            reason=str(reason) if reason else None,
            data=data,
        )

    # ---------------------------------------------------------------------------------------- purge

    async def purge(self, now: datetime | None = None) -> int:
        """Delete the files whose retention has passed and mark their rows; how many rows were purged."""
        now = now or utcnow()
        purged = 0
        for _ in range(_PURGE_BATCHES_PER_RUN):
            due = await self.db.read(due_for_purge, now=now, limit=_PURGE_BATCH)
            done: list[int] = []
            for row_id, store, key in due:
                if key is not None and store == self.store.name:
                    try:
                        await self.store.delete(key)
                    except MediaStoreError as exc:
                        log.warning("expired media file %s not deleted: %s", key, exc)
                        continue  # stays due: tried again at the next purge
                elif key is not None:
                    log.warning(
                        "expired media file %s is in the %s store, not configured now: left there", key, store
                    )
                done.append(row_id)
            purged += await self.db.write(mark_purged, done, now)
            if len(due) < _PURGE_BATCH or not done:
                break
        return purged


@dataclasses.dataclass(frozen=True, slots=True)
class _Text:
    text: str | None = None
    truncated: bool = False
    error: dict[str, Any] | None = None


async def _describe_messages(tx: Tx, number_id: int, texts: Sequence[tuple[str, str]]) -> None:
    await tx.executemany(
        "UPDATE messages SET text = $3"
        " WHERE number_id = $1 AND provider_message_id = $2 AND direction = 'in'",
        [(number_id, wamid, text) for wamid, text in texts],
    )
