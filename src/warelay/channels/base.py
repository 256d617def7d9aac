"""The channel seam: how warelay talks to a WhatsApp provider (Meta Cloud API now, WAHA later).

A channel receives webhooks (verified and parsed by its own webhook module into
:mod:`warelay.domain` events) and makes calls on behalf of a business number: send a message,
mark a message read (with the typing indicator), fetch media. Implementations raise
:class:`warelay.errors.TransientDeliveryError` for anything worth retrying and
:class:`warelay.errors.PermanentDeliveryError` for the rest; they never retry themselves — the
outbox decides, so that retries survive restarts.
"""

from __future__ import annotations

from typing import Protocol

from warelay.domain import OutboundContent, UserRef


class Account(Protocol):
    """The number a call is made for, with its credentials (warelay's NumberInfo satisfies it)."""

    @property
    def phone_number_id(self) -> str:
        """The provider's id of the business number."""
        ...

    @property
    def access_token(self) -> str | None:
        """Bearer token for the provider's API."""
        ...

    @property
    def api_version(self) -> str:
        """API version path segment, e.g. ``v23.0``."""
        ...

    @property
    def graph_url(self) -> str:
        """Base URL of the provider's API."""
        ...


class Channel(Protocol):
    """Outbound calls to one provider."""

    name: str
    # Content kinds (OutboundContent.kind) this channel cannot send: the sender sends them as text
    # (warelay.outbound.degrade) instead.
    unsupported: frozenset[str]

    async def send(
        self, account: Account, recipient: UserRef, content: OutboundContent, *, reply_to: str | None = None
    ) -> str:
        """Send one message; returns the provider's id for it (used to match statuses)."""
        ...

    async def mark_read(self, account: Account, message_id: str, *, typing: bool) -> None:
        """Mark an inbound message read, optionally showing the typing indicator."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
