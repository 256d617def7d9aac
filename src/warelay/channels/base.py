"""The channel seam: how warelay talks to a WhatsApp provider (Meta Cloud API now, WAHA later).

A channel receives webhooks (verified and parsed by its own webhook module into
:mod:`warelay.domain` events) and makes calls on behalf of a business number: send a message,
mark a message read (with the typing indicator), fetch media. Implementations raise
:class:`warelay.errors.TransientDeliveryError` for anything worth retrying and
:class:`warelay.errors.PermanentDeliveryError` for the rest; they never retry themselves — the
outbox decides, so that retries survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from warelay.domain import OutboundContent, UserRef
from warelay.errors import PermanentDeliveryError


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


@dataclass(frozen=True, slots=True)
class MediaDownload:
    """A media file fetched from the provider: its bytes, its MIME type and the sha256 (hex) of the bytes."""

    data: bytes = field(repr=False)  # never in logs
    mime_type: str | None
    sha256: str

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)


class MediaTooLargeError(PermanentDeliveryError):
    """A media file is larger than warelay accepts for its type; it was not (fully) read."""

    def __init__(self, *, limit: int, size: int | None) -> None:
        told = f"{size} bytes" if size is not None else "more bytes"
        super().__init__(f"media of {told} exceeds the limit of {limit} bytes", details="too large")
        self.limit = limit
        self.size = size


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

    async def download_media(self, account: Account, media_id: str, *, max_bytes: int) -> MediaDownload:
        """Fetch an inbound media file by the provider's media id.

        Refuse a file larger than ``max_bytes`` with :class:`MediaTooLargeError` as soon as its size is
        known (declared, or counted while streaming) without reading the rest; verify the provider's
        checksum when it gives one. Never log the bytes or the credentials.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
