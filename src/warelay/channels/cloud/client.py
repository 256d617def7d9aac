"""Meta Cloud API client: the outbound half of the Cloud channel (protocol.md A7, A8, A10).

One pooled ``httpx.AsyncClient`` serves every number; each call carries the number's own bearer
token and goes to ``{graph_url}/{api_version}/{phone_number_id}/messages``. Errors come back as
:mod:`warelay.channels.cloud.errors` classes, chosen by Meta's error code, never by message text.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from warelay.channels.base import Account
from warelay.channels.cloud.errors import error_from_exception, error_from_response
from warelay.channels.cloud.payloads import mark_read_body, message_body
from warelay.domain import OutboundContent, UserRef
from warelay.errors import PermanentDeliveryError

log = logging.getLogger("warelay.channels.cloud")


class CloudChannel:
    """Sends messages and read receipts through Meta's Graph API."""

    name = "cloud"

    def __init__(self, *, timeout: float = 20.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def _url(self, account: Account) -> str:
        return f"{account.graph_url}/{account.api_version}/{account.phone_number_id}/messages"

    async def _post(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        if not account.access_token:
            raise PermanentDeliveryError(
                f"number {account.phone_number_id} has no access token",
                code=190,
                details="no token configured",
            )
        try:
            response = await self._http.post(
                self._url(account),
                json=body,
                headers={"Authorization": f"Bearer {account.access_token}"},
            )
        except httpx.HTTPError as exc:
            raise error_from_exception(exc) from exc
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.content, response.headers)
        try:
            data = response.json()
        except ValueError as exc:
            raise error_from_response(502, response.content, response.headers) from exc
        if not isinstance(data, dict):
            raise error_from_response(502, response.content, response.headers)
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
