"""Meta Cloud API client: the outbound half of the Cloud channel (protocol.md A7, A8, A10).

One pooled ``aiohttp.ClientSession`` serves every number; each call carries the number's own
bearer token and goes to ``{graph_url}/{api_version}/{phone_number_id}/messages``. Errors come back
as :mod:`warelay.channels.cloud.errors` classes, chosen by Meta's error code, never by message text.

Why aiohttp and not httpx: every turn makes two Graph calls (read receipt, send), and on the
reference machine httpx spent 1.5-3 ms of CPU per call in its connection pool against 0.17 ms for
aiohttp (bench/results/*.profile.txt), which made the HTTP client half of warelay's CPU per message.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson

from warelay.channels.base import Account
from warelay.channels.cloud.errors import error_from_client_exception, error_from_response
from warelay.channels.cloud.payloads import mark_read_body, message_body
from warelay.domain import OutboundContent, UserRef
from warelay.errors import PermanentDeliveryError

log = logging.getLogger("warelay.channels.cloud")


class CloudChannel:
    """Sends messages and read receipts through Meta's Graph API."""

    name = "cloud"
    unsupported: frozenset[str] = frozenset()  # the Cloud API sends every kind of content

    def __init__(self, *, timeout: float = 20.0, max_connections: int = 100) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
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

    async def _post(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        if not account.access_token:
            raise PermanentDeliveryError(
                f"number {account.phone_number_id} has no access token",
                code=190,
                details="no token configured",
            )
        body_bytes = orjson.dumps(body)
        headers = {"Authorization": f"Bearer {account.access_token}", "Content-Type": "application/json"}
        try:
            async with self._client().post(self._url(account), data=body_bytes, headers=headers) as response:
                status = response.status
                content = await response.read()
                response_headers = response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise error_from_client_exception(exc) from exc
        if status != 200:
            raise error_from_response(status, content, response_headers)
        try:
            data = orjson.loads(content)
        except ValueError as exc:
            raise error_from_response(502, content, response_headers) from exc
        if not isinstance(data, dict):
            raise error_from_response(502, content, response_headers)
        return data

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
