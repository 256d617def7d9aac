"""CloudChannel over real loopback HTTP: success, Meta errors by code, network failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.integration.stack import free_port
from warelay.channels.base import MediaTooLargeError
from warelay.channels.cloud.client import CloudChannel, download_url_allowed
from warelay.channels.cloud.errors import NetworkError
from warelay.domain import OutText, UserRef
from warelay.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError


@dataclass(frozen=True)
class Account:
    phone_number_id: str
    access_token: str | None
    api_version: str
    graph_url: str


@pytest.fixture
async def graph() -> AsyncIterator[tuple[str, list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]]:
    """A fake Graph endpoint on loopback: replies are popped from a script, requests recorded."""
    seen: list[dict[str, Any]] = []
    script: list[tuple[int, dict[str, Any]]] = []

    async def messages(request: web.Request) -> web.Response:
        seen.append({"auth": request.headers.get("Authorization"), "body": await request.json()})
        status, body = script.pop(0) if script else (200, {"messages": [{"id": "wamid.OK"}]})
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v23.0/{pnid}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}", seen, script
    await runner.cleanup()


async def test_send_returns_wamid_with_bearer_and_body(graph: Any) -> None:
    url, seen, _ = graph
    channel = CloudChannel(timeout=5)
    try:
        wamid = await channel.send(
            Account("123", "tok", "v23.0", url),
            UserRef(wa_id="15551234567"),
            OutText(body="héllo"),
            reply_to="w1",
        )
    finally:
        await channel.aclose()
    assert wamid == "wamid.OK"
    assert seen[0]["auth"] == "Bearer tok"
    assert seen[0]["body"]["text"]["body"] == "héllo"
    assert seen[0]["body"]["context"] == {"message_id": "w1"}


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, 130429, TransientDeliveryError),
        (500, 1, TransientDeliveryError),
        (400, 131026, PermanentDeliveryError),
    ],
)
async def test_meta_errors_become_classes_by_code(
    graph: Any, status: int, code: int, expected: type[DeliveryError]
) -> None:
    url, _, script = graph
    script.append((status, {"error": {"message": "x", "type": "OAuthException", "code": code}}))
    channel = CloudChannel(timeout=5)
    try:
        with pytest.raises(expected) as info:
            await channel.mark_read(Account("123", "tok", "v23.0", url), "wamid.IN", typing=True)
    finally:
        await channel.aclose()
    assert info.value.code == code


async def test_connection_refused_is_transient_and_not_delivered() -> None:
    channel = CloudChannel(timeout=2)
    try:
        with pytest.raises(NetworkError) as info:
            await channel.send(
                Account("1", "t", "v23.0", f"http://127.0.0.1:{free_port()}"),
                UserRef(wa_id="1"),
                OutText(body="x"),
            )
    finally:
        await channel.aclose()
    assert info.value.maybe_delivered is False


async def test_missing_token_is_permanent() -> None:
    channel = CloudChannel()
    with pytest.raises(PermanentDeliveryError):
        await channel.send(
            Account("1", None, "v23.0", "http://127.0.0.1:1"), UserRef(wa_id="1"), OutText(body="x")
        )
    await channel.aclose()


# ------------------------------------------------------------------------------------------ media

MEDIA = bytes(range(256)) * 40  # 10 KiB
ACCESS = "tok"


@dataclass
class MediaGraph:
    """A fake Graph for media: ``GET /v23.0/{media-id}`` and a download URL, both scriptable."""

    url: str
    resolves: list[dict[str, Any]]
    downloads: list[dict[str, Any]]
    info: dict[str, Any]
    resolve_reply: tuple[int, dict[str, Any]] | None = None
    download_status: int = 200
    download_body: bytes = MEDIA
    chunked: bool = False
    written: int = 0


@pytest.fixture
async def media_graph() -> AsyncIterator[MediaGraph]:
    """Resolve answers ``info`` (its url is the download route) unless ``resolve_reply`` is set."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    graph = MediaGraph(
        url=base,
        resolves=[],
        downloads=[],
        info={
            "messaging_product": "whatsapp",
            "url": f"{base}/lookaside/file?hash=abc",
            "mime_type": "image/jpeg",
            "sha256": hashlib.sha256(MEDIA).hexdigest(),
            "file_size": len(MEDIA),
            "id": "1234",
        },
    )

    async def resolve(request: web.Request) -> web.Response:
        graph.resolves.append(
            {
                "id": request.match_info["media_id"],
                "auth": request.headers.get("Authorization"),
                "query": dict(request.query),
            }
        )
        status, body = graph.resolve_reply or (200, graph.info)
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    async def download(request: web.Request) -> web.StreamResponse:
        graph.downloads.append({"auth": request.headers.get("Authorization"), "query": dict(request.query)})
        if graph.download_status != 200 or not graph.chunked:
            return web.Response(status=graph.download_status, body=graph.download_body)
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for start in range(0, len(graph.download_body), 16 * 1024):
                await response.write(graph.download_body[start : start + 16 * 1024])
                graph.written = start + 16 * 1024
                await asyncio.sleep(0.005)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client hung up: what it refused was never sent whole
        return response

    app = web.Application()
    app.router.add_get("/v23.0/{media_id}", resolve)
    app.router.add_get("/lookaside/file", download)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield graph
    await runner.cleanup()


async def download(graph: MediaGraph, *, max_bytes: int = 1 << 20, token: str | None = ACCESS) -> Any:
    channel = CloudChannel(timeout=5)
    try:
        return await channel.download_media(
            Account("106540352242922", token, "v23.0", graph.url), "1234", max_bytes=max_bytes
        )
    finally:
        await channel.aclose()


async def test_media_is_resolved_then_downloaded_with_the_bearer(media_graph: MediaGraph) -> None:
    media = await download(media_graph)
    assert media.data == MEDIA
    assert media.mime_type == "image/jpeg"
    assert media.sha256 == hashlib.sha256(MEDIA).hexdigest()
    assert media.size == len(MEDIA)
    assert media_graph.resolves == [
        {"id": "1234", "auth": "Bearer tok", "query": {"phone_number_id": "106540352242922"}}
    ]
    assert media_graph.downloads == [{"auth": "Bearer tok", "query": {"hash": "abc"}}]
    assert repr(media) == f"MediaDownload(mime_type='image/jpeg', sha256='{media.sha256}')"  # no bytes


async def test_a_base64_checksum_is_accepted(media_graph: MediaGraph) -> None:
    media_graph.info["sha256"] = base64.b64encode(hashlib.sha256(MEDIA).digest()).decode()
    assert (await download(media_graph)).data == MEDIA


async def test_a_declared_size_over_the_limit_is_refused_before_downloading(media_graph: MediaGraph) -> None:
    with pytest.raises(MediaTooLargeError) as info:
        await download(media_graph, max_bytes=len(MEDIA) - 1)
    assert (info.value.size, info.value.limit) == (len(MEDIA), len(MEDIA) - 1)
    assert isinstance(info.value, PermanentDeliveryError)
    assert media_graph.downloads == []


async def test_a_content_length_over_the_limit_is_refused_unread(media_graph: MediaGraph) -> None:
    del media_graph.info["file_size"]
    with pytest.raises(MediaTooLargeError) as info:
        await download(media_graph, max_bytes=1000)
    assert info.value.size == len(MEDIA)
    assert len(media_graph.downloads) == 1


async def test_a_stream_without_a_size_is_cut_at_the_limit(media_graph: MediaGraph) -> None:
    del media_graph.info["file_size"]
    media_graph.chunked = True
    media_graph.download_body = bytes(1024) * 1024  # 1 MiB, sent in 16 KiB chunks
    with pytest.raises(MediaTooLargeError) as info:
        await download(media_graph, max_bytes=100 * 1024)
    assert info.value.size is None
    await asyncio.sleep(0.1)
    assert media_graph.written < len(media_graph.download_body) // 2  # the client hung up early


async def test_a_checksum_mismatch_is_transient(media_graph: MediaGraph) -> None:
    media_graph.download_body = MEDIA[:-1] + b"\x00"
    with pytest.raises(TransientDeliveryError, match="sha256"):
        await download(media_graph)


async def test_a_short_download_is_transient(media_graph: MediaGraph) -> None:
    del media_graph.info["sha256"]
    media_graph.download_body = MEDIA[:100]
    with pytest.raises(TransientDeliveryError, match="Graph said has 10240"):
        await download(media_graph)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, 100, PermanentDeliveryError),  # unknown or foreign media id
        (401, 190, PermanentDeliveryError),  # token expired
        (500, 1, TransientDeliveryError),
        (429, 130429, TransientDeliveryError),
    ],
)
async def test_resolve_errors_become_classes_by_code(
    media_graph: MediaGraph, status: int, code: int, expected: type[DeliveryError]
) -> None:
    media_graph.resolve_reply = (status, {"error": {"message": "x", "type": "OAuthException", "code": code}})
    with pytest.raises(expected) as info:
        await download(media_graph)
    assert info.value.code == code
    assert media_graph.downloads == []


@pytest.mark.parametrize(
    ("status", "expected"), [(404, PermanentDeliveryError), (503, TransientDeliveryError)]
)
async def test_download_url_errors(
    media_graph: MediaGraph, status: int, expected: type[DeliveryError]
) -> None:
    media_graph.download_status = status
    media_graph.download_body = b"<html>not here</html>"
    with pytest.raises(expected) as info:
        await download(media_graph)
    assert info.value.http_status == status


async def test_a_resolve_answer_without_a_url_is_an_error(media_graph: MediaGraph) -> None:
    media_graph.resolve_reply = (200, {"id": "1234", "mime_type": "image/jpeg"})
    with pytest.raises(TransientDeliveryError):
        await download(media_graph)


async def test_media_without_a_token_or_with_a_bad_id_is_refused(media_graph: MediaGraph) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        await download(media_graph, token=None)
    assert info.value.code == 190
    channel = CloudChannel(timeout=5)
    try:
        for bad in ("", "12/../messages", "12?x=1"):
            with pytest.raises(PermanentDeliveryError, match="invalid media id"):
                await channel.download_media(
                    Account("1", "tok", "v23.0", media_graph.url), bad, max_bytes=100
                )
    finally:
        await channel.aclose()
    assert media_graph.resolves == []


@pytest.mark.parametrize(
    ("graph_url", "url", "allowed"),
    [
        (
            "https://graph.facebook.com",
            "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1",
            True,
        ),
        (
            "https://graph.facebook.com",
            "http://lookaside.fbsbx.com/x",
            False,
        ),  # the token never goes in clear
        ("https://graph.facebook.com", "ftp://x/y", False),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/media/1", True),  # the simulator
        ("http://127.0.0.1:9000", "file:///etc/passwd", False),
    ],
)
def test_where_the_bearer_token_may_go(graph_url: str, url: str, allowed: bool) -> None:
    assert download_url_allowed(graph_url, url) is allowed
