"""Media in, end to end: simulator → warelay (fetch, store, read) → model on loopback → reply.

Each test runs warelay and the simulator as real HTTP servers on loopback, with the llm agent
pointed at the OpenAI-compatible fake (``tests/fakes_openai.py``), which also serves the
transcription endpoint. Every media type is sent by a simulated user and fetched through the
Graph media routes; what the model received is asserted on its requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from tests.fakes_openai import FakeOpenAIError, OpenAICompatibleServer
from tests.integration.stack import Stack, free_port, run_stack
from warelay.storage.direct import Tx

DATA = Path(__file__).parents[1] / "data" / "media"
PNG = (DATA / "red.png").read_bytes()
PDF = (DATA / "menu.pdf").read_bytes()
VOICE = b"OggS\x00\x02" + bytes(range(256)) * 16
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(2000)
STICKER = b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(300)
SORRY = "Sorry, I can't open that kind of message. Could you send it as text instead?"


def user_text(body: dict[str, Any]) -> str:
    """The text of the last user message of a Chat Completions request (text parts joined)."""
    content = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def user_images(body: dict[str, Any]) -> list[str]:
    """The image URLs of the last user message of a request."""
    content = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    if isinstance(content, str):
        return []
    return [part["image_url"]["url"] for part in content if part.get("type") == "image_url"]


def answer(body: dict[str, Any]) -> str:
    """The model: nothing for a lone sticker, else a reply quoting the first line it was given."""
    text = user_text(body)
    if text.startswith("[sticker") or text.startswith("[animated sticker"):
        return ""
    return "Got: " + text.splitlines()[0][:200]


async def media_rows(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every media_files row, by provider message id."""

    async def read(tx: Tx) -> dict[str, dict[str, Any]]:
        rows = await tx.fetch(
            "SELECT provider_message_id, media_type, status, error, size, sha256, store, storage_key, text,"
            " purged_at, message_id FROM media_files"
        )
        names = (
            "type",
            "status",
            "error",
            "size",
            "sha256",
            "store",
            "key",
            "text",
            "purged_at",
            "message_id",
        )
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            row = dict(zip(names, r[1:], strict=True))
            row["error"] = tx.json(row["error"]) if row["error"] is not None else None
            out[r[0]] = row
        return out

    return await stack.runtime.db.read(read)


@asynccontextmanager
async def media_stack(
    db_url: str, model: OpenAICompatibleServer, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Stack]:
    """warelay + simulator with the llm agent, transcription and a media folder under ``tmp_path``."""
    media: dict[str, Any] = {
        "directory": str(tmp_path / "media"),
        "download_backoff_seconds": 0.01,
        "transcription": {"base_url": model.base_url, "model": "whisper-test"},
    }
    media.update(overrides.pop("media", {}))
    async with run_stack(
        db_url,
        agent={"kind": "llm"},
        llm={"base_url": model.base_url, "model": "test-model"},
        media=media,
        **overrides,
    ) as stack:
        yield stack


def request_for(model: OpenAICompatibleServer, marker: str) -> dict[str, Any]:
    """The model request whose user text contains ``marker``."""
    found = [r for r in model.requests if marker in user_text(r)]
    assert found, f"no model request mentions {marker!r}: {[user_text(r) for r in model.requests]}"
    return found[-1]


async def test_every_media_type_downloaded_failed_and_oversized(db_url: str, tmp_path: Path) -> None:
    limits = {
        "max_image_bytes": 1000,
        "max_audio_bytes": 8000,
        "max_video_bytes": 4000,
        "max_document_bytes": 20_000,
        "max_sticker_bytes": 1000,
    }
    files: dict[str, tuple[bytes, str, dict[str, Any]]] = {
        "image": (PNG, "image/png", {"caption": "Is this cake available?"}),
        "audio": (VOICE, "audio/ogg; codecs=opus", {"voice": True}),
        "video": (VIDEO, "video/mp4", {}),
        "document": (PDF, "application/pdf", {"filename": "menu.pdf"}),
        "sticker": (STICKER, "image/webp", {}),
    }
    big = {"image": 2000, "audio": 9000, "video": 5000, "document": 30_000, "sticker": 2000}
    async with (
        OpenAICompatibleServer(answer) as model,
        media_stack(db_url, model, tmp_path, media=limits) as stack,
    ):
        sim = stack.simulator
        sent: dict[tuple[str, str], tuple[str, str]] = {}
        for n, (kind, (data, mime, extra)) in enumerate(files.items()):
            ok = await sim.user_sends_media(f"1555100{n}001", kind, data, mime, **extra)
            oversized = await sim.user_sends_media(f"1555100{n}002", kind, bytes(big[kind]), mime, **extra)
            sent[kind, "ok"], sent[kind, "big"] = ok, oversized
            # A media id Graph does not know (expired, or never there): a permanent download failure.
            failing = await sim.user_sends(
                f"1555100{n}003", {"type": kind, kind: {"id": "999000111", "mime_type": mime, **extra}}
            )
            sent[kind, "gone"] = (failing, "999000111")

        # Everything but the stickers gets an answer; a sticker may go unanswered (the model said nothing).
        answered = [
            f"1555100{n}00{k}" for n, kind in enumerate(files) for k in (1, 2, 3) if kind != "sticker"
        ]
        for wa_id in answered:
            await stack.replies_to(wa_id, 1, timeout=20)
        # Model calls: 3 images (captioned), 3 voice notes (a transcript or a placeholder), 1 readable
        # document, 3 stickers; none for a video, document or image with nothing to read.
        await sim.wait_for(lambda: len(model.requests) >= 10, timeout=20)
        assert await stack.runtime.turns.idle(10)
        rows = await media_rows(stack)
    assert len(model.requests) == 10

    for n, kind in enumerate(files):
        stored, big_row, gone = (rows[sent[kind, outcome][0]] for outcome in ("ok", "big", "gone"))
        data, _, _ = files[kind]
        assert stored["status"] == "stored", kind
        assert stored["sha256"] == hashlib.sha256(data).hexdigest()
        assert stored["size"] == len(data)
        assert stored["message_id"] is not None  # the row points at the stored inbound message
        assert (tmp_path / "media" / stored["key"]).read_bytes() == data
        assert big_row["status"] == "too_large", kind
        assert big_row["key"] is None
        assert big_row["error"]["details"] == "too large"
        assert gone["status"] == "failed", kind
        assert gone["error"]["code"] == 100
        assert gone["error"]["transient"] is False
        if kind == "sticker":
            assert sim.messages_to(f"1555100{n}001") == []
            assert sim.messages_to(f"1555100{n}002") == []
    assert sim.downloads == len(files)  # oversized files were refused on their declared size

    image = request_for(model, "[image] Is this cake available?")
    assert user_images(image) == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    assert stack.simulator.messages_to("15551000001")[0].text == "Got: [image] Is this cake available?"
    too_big = stack.simulator.messages_to("15551000002")[0].text
    assert too_big == "Got: [image: it is too large to open] Is this cake available?"

    voice = request_for(model, "[voice note, transcribed]")
    assert f"transcript of voice.ogg ({len(VOICE)} bytes)" in user_text(voice)
    (transcription,) = [t for t in model.transcriptions if t["file"] == VOICE]
    assert (transcription["model"], transcription["filename"]) == ("whisper-test", "voice.ogg")
    assert "[voice note: it is too large to open]" in [user_text(r) for r in model.requests]
    assert "[voice note: it could not be downloaded]" in [user_text(r) for r in model.requests]

    sticker = request_for(model, "[sticker]")
    assert user_images(sticker) == ["data:image/webp;base64," + base64.b64encode(STICKER).decode()]
    assert "only a sticker or a reaction" in sticker["messages"][0]["content"]

    document = user_text(request_for(model, "[document menu.pdf]"))
    assert "Text of menu.pdf:" in document
    assert "Almond croissant: 2.80 EUR" in document
    # A video without a caption, and the failed and oversized image without one, get the polite reply.
    for wa_id in ("15551002001", "15551002002", "15551002003", "15551003002", "15551003003"):
        assert [m.text for m in stack.simulator.messages_to(wa_id)] == [SORRY], wa_id
    assert not any("[video" in user_text(r) for r in model.requests)


async def test_a_retried_turn_reuses_the_stored_media(db_url: str, tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(body: dict[str, Any]) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise FakeOpenAIError(400, "model overloaded", error_type="invalid_request_error")
        return f"Nice photo ({len(user_images(body))} image)"

    async with (
        OpenAICompatibleServer(flaky) as model,
        media_stack(db_url, model, tmp_path) as stack,
    ):
        wamid, _ = await stack.simulator.user_sends_media(
            "15552000001", "image", PNG, "image/png", caption="for the party"
        )
        assert await stack.replies_to("15552000001", 1, timeout=20) == ["Nice photo (1 image)"]
        assert stack.simulator.downloads == 1  # the second attempt read the image from the store
        assert len(model.requests) == 2
        assert user_images(model.requests[0]) == user_images(model.requests[1])
        assert (await media_rows(stack))[wamid]["status"] == "stored"


async def test_transcription_failure_reaches_the_model_as_a_placeholder(db_url: str, tmp_path: Path) -> None:
    def broken(request: dict[str, Any]) -> str:
        raise FakeOpenAIError(400, "Invalid file format.")

    async with (
        OpenAICompatibleServer(answer, transcriber=broken) as model,
        media_stack(db_url, model, tmp_path) as stack,
    ):
        wamid, _ = await stack.simulator.user_sends_media("15553000001", "audio", VOICE, "audio/aac")
        texts = await stack.replies_to("15553000001", 1, timeout=20)
        rows = await media_rows(stack)
    assert texts == ["Got: [audio: the customer sent an audio I cannot listen to]"]
    assert rows[wamid]["status"] == "stored"
    assert rows[wamid]["text"] is None


async def test_the_runtime_purges_expired_media(db_url: str, tmp_path: Path) -> None:
    async with (
        OpenAICompatibleServer(answer) as model,
        media_stack(
            db_url, model, tmp_path, media={"retention_days": 0.00002, "purge_interval_seconds": 1}
        ) as stack,
    ):
        wamid, _ = await stack.simulator.user_sends_media("15554000001", "document", PDF, "application/pdf")
        await stack.replies_to("15554000001", 1, timeout=20)
        deadline = asyncio.get_running_loop().time() + 15
        while (row := (await media_rows(stack))[wamid])["purged_at"] is None:
            assert asyncio.get_running_loop().time() < deadline, "the purge never ran"
            await asyncio.sleep(0.2)
    assert row["status"] == "expired"
    assert row["text"] is None
    assert not (tmp_path / "media" / row["key"]).exists()
    assert list((tmp_path / "media").rglob("*.pdf")) == []


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


async def test_media_in_an_s3_bucket(db_url: str, tmp_path: Path, s3_endpoint: str) -> None:
    from aiobotocore.session import get_session

    bucket = f"warelay-it-{datetime.now(UTC):%H%M%S%f}"
    async with get_session().create_client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="it-key",
        aws_secret_access_key="it-secret",
    ) as client:
        await client.create_bucket(Bucket=bucket)
        s3 = {
            "bucket": bucket,
            "endpoint_url": s3_endpoint,
            "region": "us-east-1",
            "access_key_id": "it-key",
            "secret_access_key": "it-secret",
            "prefix": "inbound/",
        }
        async with (
            OpenAICompatibleServer(answer) as model,
            media_stack(db_url, model, tmp_path, media={"s3": s3}) as stack,
        ):
            wamid, _ = await stack.simulator.user_sends_media(
                "15555000001", "image", PNG, "image/png", caption="this one"
            )
            assert await stack.replies_to("15555000001", 1, timeout=20) == ["Got: [image] this one"]
            row = (await media_rows(stack))[wamid]
        assert row["store"] == "s3"
        stored = await client.get_object(Bucket=bucket, Key=f"inbound/{row['key']}")
        async with stored["Body"] as body:
            assert await body.read() == PNG
        assert not (tmp_path / "media").exists()  # nothing was written locally


async def test_a_transcript_becomes_the_messages_text_and_later_turns_history(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        OpenAICompatibleServer(answer) as model,
        media_stack(db_url, model, tmp_path) as stack,
    ):
        user = "15553000002"
        await stack.simulator.user_sends_media(user, "audio", VOICE, "audio/ogg", filename="voice.ogg")
        await stack.replies_to(user, 1, timeout=20)
        await stack.simulator.user_sends(user, "and one more thing")
        await stack.replies_to(user, 2, timeout=20)
        (conversation,) = (await stack.api("/api/v1/conversations", user=user))["items"]
        messages = (await stack.api(f"/api/v1/conversations/{conversation['id']}/messages"))["items"]
    transcript = f"transcript of voice.ogg ({len(VOICE)} bytes)"
    assert transcript in messages[0]["text"]
    history = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "user"]
    assert any(transcript in str(h) for h in history[:-1])
