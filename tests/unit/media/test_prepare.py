"""The prepare_turn hook against the simulator over loopback and a real database (SQLite and PostgreSQL).

Only the transcription endpoint is faked (at the transport); downloads go through the Cloud client
to the simulator's Graph routes, files land in a real folder, rows in a real ``media_files`` table.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.stack import ACCESS_TOKEN, PHONE_NUMBER_ID
from tests.unit.media.conftest import RunningSimulator
from warelay.agents.base import SessionState, Turn
from warelay.channels.cloud.client import CloudChannel
from warelay.config import MediaSettings
from warelay.domain import InboundMessage, MediaContent, MediaKind, TextContent, UserRef
from warelay.media.prepare import MediaPreparer, storage_key
from warelay.media.store import LocalMediaStore, MediaStoreError
from warelay.media.transcribe import Transcriber
from warelay.numbers import NumberInfo
from warelay.storage.direct import Database, Tx

DATA = Path(__file__).parents[2] / "data" / "media"
PNG = (DATA / "red.png").read_bytes()
PDF = (DATA / "menu.pdf").read_bytes()
VOICE = b"OggS" + bytes(range(256)) * 8
T0 = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


@dataclass
class Harness:
    """A preparer wired to the running simulator, a folder store and the test database."""

    preparer: MediaPreparer
    sim: RunningSimulator
    db: Database
    root: Path
    number: NumberInfo
    transcripts: list[bytes]

    def message(
        self,
        media_type: MediaKind,
        data: bytes,
        mime: str,
        *,
        wamid: str,
        caption: str | None = None,
        filename: str | None = None,
        voice: bool = False,
        animated: bool = False,
        media_id: str | None = "",
    ) -> InboundMessage:
        """A media message whose file the simulator holds for the number (like one a user sent)."""
        if media_id == "":
            media_id = self.sim.sim.add_media(data, mime, number_id=PHONE_NUMBER_ID, filename=filename)
        return InboundMessage(
            provider_message_id=wamid,
            number_id=PHONE_NUMBER_ID,
            sender=UserRef(wa_id="15551230001"),
            timestamp=T0,
            type=media_type,
            content=MediaContent(
                media_type=media_type,
                media_id=media_id,
                mime_type=mime,
                sha256=hashlib.sha256(data).hexdigest(),
                caption=caption,
                filename=filename,
                voice=voice,
                animated=animated,
            ),
        )

    async def prepare(self, *messages: InboundMessage) -> Turn:
        """Run the hook on a turn of these messages."""
        turn = Turn(
            tenant_id=self.number.tenant_id,
            tenant=self.number.tenant,
            number_id=self.number.id,
            phone_number_id=PHONE_NUMBER_ID,
            agent_id=None,
            user_key="15551230001",
            user_name="Ana",
            session=SessionState(session_id="s1"),
            messages=messages,
        )
        return await self.preparer.prepare(turn, self.number)

    async def rows(self) -> dict[str, dict[str, Any]]:
        """Every media_files row, by provider message id."""

        async def read(tx: Tx) -> dict[str, dict[str, Any]]:
            rows = await tx.fetch(
                "SELECT provider_message_id, status, error, mime_type, size, sha256, store, storage_key,"
                " text, text_truncated, text_error, expires_at, purged_at, tenant_id, number_id, created_at"
                " FROM media_files"
            )
            names = (
                *("wamid", "status", "error", "mime", "size", "sha256", "store", "key", "text"),
                *(
                    "truncated",
                    "text_error",
                    "expires_at",
                    "purged_at",
                    "tenant_id",
                    "number_id",
                    "created_at",
                ),
            )
            out = {}
            for r in rows:
                row = dict(zip(names, r, strict=True))
                for name in ("error", "text_error"):
                    row[name] = tx.json(row[name]) if row[name] is not None else None
                for name in ("expires_at", "purged_at", "created_at"):
                    row[name] = tx.time(row[name]) if row[name] is not None else None
                out[row.pop("wamid")] = row
            return out

        return await self.db.read(read)


def fake_stt(transcripts: list[bytes], answer: Callable[[], httpx.Response]) -> Transcriber:
    """A transcriber whose endpoint is faked at the transport, recording the audio it is sent."""

    def handler(request: httpx.Request) -> httpx.Response:
        transcripts.append(request.content)
        return answer()

    return Transcriber(
        base_url="https://stt.example/v1", model="whisper-1", transport=httpx.MockTransport(handler)
    )


def ok_transcript() -> httpx.Response:
    return httpx.Response(200, json={"text": "Do you deliver on Sundays?"})


@pytest.fixture
async def harness(
    simulator: RunningSimulator, database: Database, tmp_path: Path
) -> AsyncIterator[Callable[..., Harness]]:
    """Builds harnesses (settings and transcriber per test); closes what they opened."""
    made: list[MediaPreparer] = []
    channel = CloudChannel(timeout=5)

    def build(
        *, transcriber: Transcriber | None = None, transcripts: list[bytes] | None = None, **settings: Any
    ) -> Harness:
        values: dict[str, Any] = {"directory": tmp_path / "media", "download_backoff_seconds": 0.01}
        values.update(settings)
        media = MediaSettings(**values)
        preparer = MediaPreparer(
            db=database,
            channels={"cloud": channel},
            store=LocalMediaStore(media.directory),
            settings=media,
            transcriber=transcriber,
        )
        made.append(preparer)
        number = NumberInfo(
            id=3,
            tenant_id=7,
            tenant="bakery",
            channel="cloud",
            phone_number_id=PHONE_NUMBER_ID,
            display_phone_number="15550783881",
            status="active",
            agent_id=None,
            app_id=None,
            app_secret=None,
            access_token=ACCESS_TOKEN,
            verify_token=None,
            api_version="v23.0",
            graph_url=simulator.url,
            throughput_mps=80,
        )
        return Harness(preparer, simulator, database, tmp_path / "media", number, transcripts or [])

    yield build
    for preparer in made:
        await preparer.aclose()
    await channel.aclose()


async def test_every_media_type_is_fetched_stored_and_read(harness: Callable[..., Harness]) -> None:
    transcripts: list[bytes] = []
    h = harness(transcriber=fake_stt(transcripts, ok_transcript), transcripts=transcripts)
    messages = [
        h.message("image", PNG, "image/png", wamid="w.image", caption="Is this cake in stock?"),
        h.message("audio", VOICE, "audio/ogg; codecs=opus", wamid="w.voice", voice=True),
        h.message("video", b"\x00\x00\x00\x18ftypmp42" * 50, "video/mp4", wamid="w.video"),
        h.message("document", PDF, "application/pdf", wamid="w.doc", filename="menu.pdf"),
        h.message("sticker", b"RIFF....WEBPVP8 " * 20, "image/webp", wamid="w.sticker"),
        h.message("sticker", b"RIFF....WEBPVP8X" * 20, "image/webp", wamid="w.anim", animated=True),
    ]
    before = datetime.now(UTC)
    turn = await h.prepare(*messages)

    a = turn.attachments
    assert set(a) == {m.provider_message_id for m in messages}
    assert all(x.status == "stored" for x in a.values())
    assert a["w.image"].data == PNG
    assert a["w.image"].mime_type == "image/png"
    assert a["w.sticker"].data is not None
    assert a["w.anim"].data is None  # an animated sticker is not shown to the model
    assert a["w.voice"].text == "Do you deliver on Sundays?"
    assert a["w.voice"].data is None
    assert len(transcripts) == 1
    assert VOICE in transcripts[0]  # the audio bytes went to the endpoint
    assert a["w.doc"].text is not None
    assert a["w.doc"].text.startswith("Sunrise Bakery price list")
    assert a["w.doc"].filename == "menu.pdf"
    assert a["w.video"].text is None
    assert "Do you deliver on Sundays?" in turn.text
    assert "Sourdough loaf: 4.50 EUR" in turn.text

    rows = await h.rows()
    for message in messages:
        row = rows[message.provider_message_id]
        content = message.content
        assert isinstance(content, MediaContent)
        assert row["status"] == "stored"
        assert row["store"] == "local"
        assert row["tenant_id"] == 7
        assert row["number_id"] == 3
        assert row["sha256"] == content.sha256
        assert row["key"] == storage_key(tenant_id=7, number_id=3, message=message, mime_type=row["mime"])
        assert row["key"].startswith("7/3/2026/12/07/")
        stored = (h.root / row["key"]).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == content.sha256
        assert row["size"] == len(stored)
        assert before + timedelta(days=30) <= row["expires_at"] <= datetime.now(UTC) + timedelta(days=30)
    assert rows["w.voice"]["text"] == "Do you deliver on Sundays?"
    assert rows["w.doc"]["text"].startswith("Sunrise Bakery price list")
    assert rows["w.image"]["key"].endswith(".png")
    assert rows["w.doc"]["key"].endswith(".pdf")


async def test_a_text_only_turn_is_passed_through(harness: Callable[..., Harness]) -> None:
    h = harness()
    text = InboundMessage(
        provider_message_id="w.text",
        number_id=PHONE_NUMBER_ID,
        sender=UserRef(wa_id="1"),
        timestamp=T0,
        type="text",
        content=TextContent(body="hello"),
    )
    turn = Turn(
        tenant_id=7,
        tenant="bakery",
        number_id=3,
        phone_number_id=PHONE_NUMBER_ID,
        agent_id=None,
        user_key="1",
        user_name=None,
        session=SessionState(session_id="s"),
        messages=(text,),
    )
    assert await h.preparer.prepare(turn, h.number) is turn


async def test_voice_notes_without_transcription_say_why(harness: Callable[..., Harness]) -> None:
    h = harness()
    turn = await h.prepare(h.message("audio", VOICE, "audio/ogg", wamid="w.v", voice=True))
    voice = turn.attachments["w.v"]
    assert voice.status == "stored"
    assert voice.text is None
    assert voice.reason == "transcription is not configured"
    assert "[voice note: the customer sent a voice note I cannot listen to]" in turn.text
    assert (await h.rows())["w.v"]["text_error"] == {
        "message": "transcription is not configured",
        "transient": False,
    }


async def test_a_retried_turn_reuses_the_file_and_retries_only_a_passing_failure(
    harness: Callable[..., Harness],
) -> None:
    answers = iter([httpx.Response(503, json={"error": {"message": "busy"}}), ok_transcript()])
    transcripts: list[bytes] = []
    h = harness(transcriber=fake_stt(transcripts, lambda: next(answers)), transcripts=transcripts)
    image = h.message("image", PNG, "image/png", wamid="w.i")
    voice = h.message("audio", VOICE, "audio/ogg", wamid="w.v", voice=True)

    first = await h.prepare(image, voice)
    assert first.attachments["w.v"].text is None
    assert first.attachments["w.v"].reason == "transcription endpoint answered HTTP 503: busy"
    assert h.sim.sim.downloads == 2

    second = await h.prepare(image, voice)  # the worker runs the turn again (the agent failed, say)
    assert h.sim.sim.downloads == 2  # nothing downloaded again
    assert second.attachments["w.i"].data == PNG  # read back from the store for the model
    assert second.attachments["w.v"].text == "Do you deliver on Sundays?"
    assert len(transcripts) == 2  # only the transcription was tried again
    assert (await h.rows())["w.v"]["text"] == "Do you deliver on Sundays?"

    await h.prepare(image, voice)
    assert (h.sim.sim.downloads, len(transcripts)) == (2, 2)


async def test_a_permanent_download_failure_is_recorded_and_not_retried(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    h.sim.sim.media_faults.fail_next(1, 400, 131052, details="Media download error")
    image = h.message("image", PNG, "image/jpeg", wamid="w.i", caption="my order")
    turn = await h.prepare(image)
    attachment = turn.attachments["w.i"]
    assert attachment.status == "failed"
    assert attachment.data is None
    assert turn.text == "[image: it could not be downloaded] my order"
    row = (await h.rows())["w.i"]
    assert row["status"] == "failed"
    assert row["error"]["code"] == 131052
    assert row["error"]["transient"] is False
    assert row["key"] is None
    assert list(h.root.rglob("*.*")) == []
    requests = h.sim.sim.media_requests
    assert (await h.prepare(image)).attachments["w.i"].status == "failed"
    assert h.sim.sim.media_requests == requests  # the recorded failure is reused


async def test_transient_failures_are_retried_now_and_on_the_next_run(
    harness: Callable[..., Harness],
) -> None:
    h = harness(download_attempts=2)
    h.sim.sim.media_faults.fail_next(2, 500, 1)
    image = h.message("image", PNG, "image/png", wamid="w.i")
    turn = await h.prepare(image)
    assert turn.attachments["w.i"].status == "failed"
    assert h.sim.sim.media_requests == 2  # both attempts resolved the media id afresh
    row = (await h.rows())["w.i"]
    assert row["error"]["transient"] is True
    again = await h.prepare(image)  # a passing failure is tried again when the turn is
    assert again.attachments["w.i"].status == "stored"
    assert again.attachments["w.i"].data == PNG
    assert (await h.rows())["w.i"]["status"] == "stored"


async def test_a_corrupted_download_is_fetched_again(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.sim.sim.corrupt_downloads = 1
    turn = await h.prepare(h.message("document", PDF, "application/pdf", wamid="w.d", filename="menu.pdf"))
    assert turn.attachments["w.d"].status == "stored"
    assert h.sim.sim.downloads == 2
    assert (h.root / (await h.rows())["w.d"]["key"]).read_bytes() == PDF


async def test_an_oversized_file_is_refused_without_downloading(harness: Callable[..., Harness]) -> None:
    h = harness(max_video_bytes=1000)
    turn = await h.prepare(h.message("video", bytes(5000), "video/mp4", wamid="w.v", caption="look"))
    attachment = turn.attachments["w.v"]
    assert attachment.status == "too_large"
    assert attachment.reason == "media of 5000 bytes exceeds the limit of 1000 bytes"
    assert turn.text == "[video: it is too large to open] look"
    assert h.sim.sim.downloads == 0
    row = (await h.rows())["w.v"]
    assert (row["status"], row["key"], row["error"]["details"]) == ("too_large", None, "too large")


async def test_media_that_cannot_be_fetched_is_unsupported(harness: Callable[..., Harness]) -> None:
    h = harness()
    no_id = h.message("image", PNG, "image/png", wamid="w.noid", media_id=None)
    turn = await h.prepare(no_id)
    assert turn.attachments["w.noid"].status == "unsupported"
    assert turn.attachments["w.noid"].reason == "the message has no media id"
    assert (await h.rows())["w.noid"]["status"] == "unsupported"
    h.number = dataclasses.replace(h.number, channel="waha")  # a channel this process does not run
    other = await h.prepare(h.message("image", PNG, "image/png", wamid="w.waha"))
    assert other.attachments["w.waha"].status == "unsupported"
    assert other.attachments["w.waha"].reason == "no channel 'waha'"
    assert h.sim.sim.media_requests == 0


async def test_a_file_gone_from_the_store_is_fetched_again(harness: Callable[..., Harness]) -> None:
    h = harness()
    image = h.message("image", PNG, "image/png", wamid="w.i")
    await h.prepare(image)
    (h.root / (await h.rows())["w.i"]["key"]).unlink()
    turn = await h.prepare(image)
    assert turn.attachments["w.i"].data == PNG
    assert h.sim.sim.downloads == 2


async def test_a_failing_store_fails_the_turn_and_records_nothing(
    harness: Callable[..., Harness], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    h = harness(directory=blocker)
    with pytest.raises(MediaStoreError):
        await h.prepare(h.message("image", PNG, "image/png", wamid="w.i"))
    assert await h.rows() == {}  # the worker retries the turn; no row claims a file that is not there


async def test_the_purge_deletes_expired_files_and_marks_their_rows(harness: Callable[..., Harness]) -> None:
    h = harness()
    image = h.message("image", PNG, "image/png", wamid="w.i")
    document = h.message("document", PDF, "application/pdf", wamid="w.d", filename="menu.pdf")
    failed_voice = h.message("audio", VOICE, "audio/ogg", wamid="w.v", media_id="404404")
    await h.prepare(image, document, failed_voice)
    rows = await h.rows()
    assert rows["w.v"]["status"] == "failed"
    key = rows["w.i"]["key"]

    assert await h.preparer.purge() == 0  # nothing has expired yet
    assert (h.root / key).exists()

    purged = await h.preparer.purge(datetime.now(UTC) + timedelta(days=31))
    assert purged == 3
    assert list(h.root.rglob("*")) == []  # files and their empty folders are gone
    rows = await h.rows()
    assert {w: r["status"] for w, r in rows.items()} == {"w.i": "expired", "w.d": "expired", "w.v": "failed"}
    assert all(r["purged_at"] is not None and r["text"] is None for r in rows.values())
    assert await h.preparer.purge(datetime.now(UTC) + timedelta(days=31)) == 0

    turn = await h.prepare(image, document)
    assert turn.attachments["w.i"].status == "expired"
    assert turn.attachments["w.d"].text is None
    assert "[document menu.pdf: it is no longer available]" in turn.text
    assert h.sim.sim.downloads == 2  # expired media is not fetched again


def test_storage_keys_are_made_of_ids_only() -> None:
    message = InboundMessage(
        provider_message_id="wamid.HBgL../../etc/passwd",
        number_id=PHONE_NUMBER_ID,
        sender=UserRef(wa_id="1"),
        timestamp=T0,
        type="document",
        content=MediaContent(media_type="document", media_id="1", filename="../../evil.sh"),
    )
    key = storage_key(tenant_id=1, number_id=2, message=message, mime_type="application/x-sh; x=1")
    digest = hashlib.sha256(b"wamid.HBgL../../etc/passwd").hexdigest()[:40]
    assert key == f"1/2/2026/12/07/{digest}.sh"
    assert storage_key(tenant_id=1, number_id=2, message=message, mime_type=None).endswith(f"{digest}.bin")
