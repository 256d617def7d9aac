"""Meta Cloud API client: the outbound half of the Cloud channel (protocol.md A7, A8, A10).

One pooled ``aiohttp.ClientSession`` serves every number; each call carries the number's own
bearer token and goes to ``{graph_url}/{api_version}/{phone_number_id}/messages``. Errors come back
as :mod:`warelay.channels.cloud.errors` classes, chosen by Meta's error code, never by message text.
Inbound media is fetched in two steps (A8): ``GET /{version}/{media-id}`` resolves a download URL,
valid for five minutes, which is then read with the same bearer token.

Why aiohttp and not httpx: every turn makes two Graph calls (read receipt, send), and on the
reference machine httpx spent 1.5-3 ms of CPU per call in its connection pool against 0.17 ms for
aiohttp (bench/results/*.profile.txt), which made the HTTP client half of warelay's CPU per message.
"""

from __future__ import annotations

import hashlib
import logging
from base64 import b64encode
from typing import Any

import aiohttp
import orjson

from warelay.channels.base import Account, MediaDownload, MediaTooLargeError
from warelay.channels.cloud.errors import (
    UnknownTransientError,
    error_from_client_exception,
    error_from_response,
)
from warelay.channels.cloud.payloads import mark_read_body, message_body
from warelay.domain import OutboundContent, UserRef
from warelay.errors import PermanentDeliveryError

log = logging.getLogger("warelay.channels.cloud")

_CHUNK = 64 * 1024
# An error body is read for its Graph error object only; a download URL may answer with anything.
_MAX_ERROR_BODY = 64 * 1024


class CloudChannel:
    """Sends messages and read receipts through Meta's Graph API."""

    name = "cloud"
    unsupported: frozenset[str] = frozenset()  # the Cloud API sends every kind of content

    def __init__(
        self, *, timeout: float = 20.0, max_connections: int = 100, media_timeout: float = 120.0
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        # A media file can take longer than a Graph call as a whole, but a stalled read fails as soon.
        self._media_timeout = aiohttp.ClientTimeout(
            total=media_timeout, connect=min(timeout, 10.0), sock_read=timeout
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the event loop it was made in.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, account: Account) -> str:
        return f"{account.graph_url}/{account.api_version}/{account.phone_number_id}/messages"

    @staticmethod
    def _token(account: Account) -> str:
        if not account.access_token:
            raise PermanentDeliveryError(
                f"number {account.phone_number_id} has no access token",
                code=190,
                details="no token configured",
            )
        return account.access_token

    async def _post(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        token = self._token(account)
        body_bytes = orjson.dumps(body)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._client().post(self._url(account), data=body_bytes, headers=headers) as response:
                status = response.status
                content = await response.read()
                response_headers = response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise error_from_client_exception(exc) from exc
        return _json_object(status, content, response_headers)

    async def send(
        self, account: Account, recipient: UserRef, content: OutboundContent, *, reply_to: str | None = None
    ) -> str:
        """Send one message and return its wamid."""
        use_user_id = recipient.wa_id is None
        to = recipient.wa_id or recipient.user_id
        if not to:
            raise PermanentDeliveryError("recipient has neither a phone number nor a user id", code=100)
        body = message_body(to, content, reply_to=reply_to, recipient_is_user_id=use_user_id)
        data = await self._post(account, body)
        try:
            return str(data["messages"][0]["id"])
        except (KeyError, IndexError, TypeError) as exc:
            raise error_from_response(502, b"", None) from exc

    async def mark_read(self, account: Account, message_id: str, *, typing: bool) -> None:
        """Mark ``message_id`` read, with the typing indicator when asked."""
        await self._post(account, mark_read_body(message_id, typing=typing))

    async def download_media(self, account: Account, media_id: str, *, max_bytes: int) -> MediaDownload:
        """Resolve ``media_id`` (``GET /{version}/{media-id}``), then stream the file with the size cap."""
        if not media_id or "/" in media_id or "?" in media_id:
            raise PermanentDeliveryError(f"invalid media id {media_id!r}", code=100)
        headers = {"Authorization": f"Bearer {self._token(account)}"}
        info = await self._resolve_media(account, media_id, headers)
        url = info.get("url")
        if not isinstance(url, str) or not download_url_allowed(account.graph_url, url):
            raise error_from_response(502, b"", None)
        declared = _as_size(info.get("file_size"))
        if declared is not None and declared > max_bytes:
            raise MediaTooLargeError(limit=max_bytes, size=declared)
        mime = info.get("mime_type")
        data, content_type = await self._stream(url, headers, max_bytes)
        digest = hashlib.sha256(data)
        expected = info.get("sha256")
        if isinstance(expected, str) and expected and not _same_digest(expected, digest.digest()):
            # A transfer cut short or altered on the way: a new download may well succeed.
            raise UnknownTransientError(
                "downloaded media does not match the sha256 Graph gave for it", details="sha256 mismatch"
            )
        if declared is not None and declared != len(data):
            raise UnknownTransientError(
                f"downloaded {len(data)} bytes of a media file Graph said has {declared}",
                details="size mismatch",
            )
        return MediaDownload(
            data=data,
            mime_type=mime if isinstance(mime, str) and mime else content_type,
            sha256=digest.hexdigest(),
        )

    async def _resolve_media(
        self, account: Account, media_id: str, headers: dict[str, str]
    ) -> dict[str, Any]:
        url = f"{account.graph_url}/{account.api_version}/{media_id}"
        # phone_number_id makes Graph check that the media belongs to this number (A8).
        params = {"phone_number_id": account.phone_number_id}
        try:
            async with self._client().get(url, params=params, headers=headers) as response:
                status = response.status
                content = await _read_capped(response, _MAX_ERROR_BODY)
                response_headers = response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise error_from_client_exception(exc) from exc
        return _json_object(status, content, response_headers)

    async def _stream(self, url: str, headers: dict[str, str], max_bytes: int) -> tuple[bytes, str | None]:
        """Read a download URL into memory, refusing it once it passes ``max_bytes``."""
        chunks: list[bytes] = []
        total = 0
        try:
            async with self._client().get(url, headers=headers, timeout=self._media_timeout) as response:
                if response.status != 200:
                    content = await _read_capped(response, _MAX_ERROR_BODY)
                    raise error_from_response(response.status, content, response.headers)
                length = response.content_length
                if length is not None and length > max_bytes:
                    response.close()  # the connection goes: the body is never read
                    raise MediaTooLargeError(limit=max_bytes, size=length)
                async for chunk in response.content.iter_chunked(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        response.close()
                        raise MediaTooLargeError(limit=max_bytes, size=None)
                    chunks.append(chunk)
                content_type = response.headers.get("Content-Type")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise error_from_client_exception(exc) from exc
        mime = content_type.split(";")[0].strip() if content_type else None
        return b"".join(chunks), mime or None


def download_url_allowed(graph_url: str, url: str) -> bool:
    """Whether the bearer token may go to a download URL Graph gave: over TLS when Graph is.

    A plain-HTTP Graph is a local simulator; aiohttp drops the header on a cross-origin redirect.
    """
    if graph_url.startswith("https://"):
        return url.startswith("https://")
    return url.startswith(("https://", "http://"))


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """At most ``cap`` bytes of a body that should be small (a Graph JSON object or error)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        chunks.append(chunk)
        total += len(chunk)
        if total >= cap:
            response.close()
            break
    return b"".join(chunks)[:cap]


def _as_size(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _same_digest(expected: str, digest: bytes) -> bool:
    """Graph's sha256 is hex on ``GET /{media-id}``; webhooks have carried base64 too: accept either."""
    expected = expected.strip()
    return expected.lower() == digest.hex() or expected == b64encode(digest).decode()


def _json_object(status: int, content: bytes, headers: Any) -> dict[str, Any]:
    """A Graph response's JSON object; Graph's error (or a 502 for a body that is not one) otherwise."""
    if status != 200:
        raise error_from_response(status, content, headers)
    try:
        data = orjson.loads(content)
    except ValueError as exc:
        raise error_from_response(502, content, headers) from exc
    if not isinstance(data, dict):
        raise error_from_response(502, content, headers)
    return data
