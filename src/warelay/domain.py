"""Channel-agnostic domain events: what every stage after ``channels/`` speaks.

Where it sits in the path::

    channel webhook ──parse──▶ InboundMessage / StatusUpdate / ChannelErrorEvent ──▶ inbox
    agent replies ──▶ OutboundContent ──▶ outbox ──▶ channel client (wire format)

Nothing here knows a wire format. Channels translate provider payloads into these frozen models and
translate outbound content into provider requests. This module imports nothing of warelay's own.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base of every domain model: immutable, no unknown fields silently accepted."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------- users


class UserRef(Frozen):
    """Who wrote to the business: a phone number (``wa_id``), a business-scoped user id, or both."""

    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    username: str | None = None
    profile_name: str | None = None

    @property
    def key(self) -> str:
        """The stable key warelay files the user under: the phone number, else the BSUID."""
        key = self.wa_id or self.user_id
        if not key:
            raise ValueError("a user needs a wa_id or a user_id")
        return key


class ProviderError(Frozen):
    """An error object as a provider reports it (Meta: code, title, message, error_data.details)."""

    code: int | None = None
    title: str | None = None
    message: str | None = None
    details: str | None = None
    href: str | None = None


# ------------------------------------------------------------------------------------ inbound content


class TextContent(Frozen):
    """Plain text written by the user."""

    kind: Literal["text"] = "text"
    body: str


MediaKind = Literal["image", "audio", "video", "document", "sticker"]


class MediaContent(Frozen):
    """A media attachment; the bytes stay at the provider until fetched by media id."""

    kind: Literal["media"] = "media"
    media_type: MediaKind
    media_id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool = False
    animated: bool = False
    url: str | None = None


class LocationContent(Frozen):
    """A location pin: coordinates, and name/address/url for a chosen place."""

    kind: Literal["location"] = "location"
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None
    url: str | None = None


class ContactPhone(Frozen):
    """One phone number of a shared contact card."""

    phone: str | None = None
    wa_id: str | None = None
    type: str | None = None


class SharedContact(Frozen):
    """One shared contact card; any field may be missing."""

    formatted_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phones: tuple[ContactPhone, ...] = ()
    emails: tuple[str, ...] = ()
    organization: str | None = None
    urls: tuple[str, ...] = ()
    birthday: str | None = None
    addresses: tuple[dict[str, Any], ...] = ()


class ContactsContent(Frozen):
    """One or more contact cards shared by the user."""

    kind: Literal["contacts"] = "contacts"
    contacts: tuple[SharedContact, ...]


class InteractiveReplyContent(Frozen):
    """The user's answer to an interactive message: a reply button, a list row or a Flow form."""

    kind: Literal["interactive"] = "interactive"
    reply_type: Literal["button_reply", "list_reply", "flow_reply"]
    id: str | None = None
    title: str | None = None
    description: str | None = None
    flow_name: str | None = None
    flow_body: str | None = None
    flow_response: dict[str, Any] | None = None


class ButtonContent(Frozen):
    """A tap on a template quick-reply button."""

    kind: Literal["button"] = "button"
    payload: str | None = None
    text: str | None = None


class ReactionContent(Frozen):
    """A reaction to a message; ``emoji`` is None when the user removed the reaction."""

    kind: Literal["reaction"] = "reaction"
    message_id: str | None = None
    emoji: str | None = None

    @property
    def removed(self) -> bool:
        """True when this event takes a reaction back."""
        return not self.emoji


class OrderItem(Frozen):
    """One line of a cart sent from a catalog."""

    product_retailer_id: str
    quantity: int | None = None
    item_price: float | None = None
    currency: str | None = None


class OrderContent(Frozen):
    """A cart the user sent from the business's catalog."""

    kind: Literal["order"] = "order"
    catalog_id: str | None = None
    text: str | None = None
    items: tuple[OrderItem, ...] = ()


class SystemContent(Frozen):
    """A system notice, such as the user changing their number."""

    kind: Literal["system"] = "system"
    body: str | None = None
    system_type: str | None = None
    new_wa_id: str | None = None
    new_user_id: str | None = None


class RevokeContent(Frozen):
    """The user deleted one of their earlier messages."""

    kind: Literal["revoke"] = "revoke"
    original_message_id: str | None = None


class EditContent(Frozen):
    """The user edited one of their earlier messages; ``body`` is the new text when there is one."""

    kind: Literal["edit"] = "edit"
    original_message_id: str | None = None
    body: str | None = None


class UnsupportedContent(Frozen):
    """A message warelay cannot read: the provider's unsupported/unknown type or a type new to us."""

    kind: Literal["unsupported"] = "unsupported"
    original_type: str | None = None


InboundContent = Annotated[
    TextContent
    | MediaContent
    | LocationContent
    | ContactsContent
    | InteractiveReplyContent
    | ButtonContent
    | ReactionContent
    | OrderContent
    | SystemContent
    | RevokeContent
    | EditContent
    | UnsupportedContent,
    Field(discriminator="kind"),
]


class ReferredProduct(Frozen):
    """The catalog product a user asked about ("Message business" on a product)."""

    catalog_id: str | None = None
    product_retailer_id: str | None = None


class MessageContext(Frozen):
    """Reply, forward and product-enquiry context of an inbound message."""

    reply_to_id: str | None = None
    reply_to_from: str | None = None
    forwarded: bool = False
    frequently_forwarded: bool = False
    referred_product: ReferredProduct | None = None


class Referral(Frozen):
    """Click-to-WhatsApp ad or post that started the chat."""

    source_url: str | None = None
    source_id: str | None = None
    source_type: str | None = None
    headline: str | None = None
    body: str | None = None
    media_type: str | None = None
    image_url: str | None = None
    video_url: str | None = None
    thumbnail_url: str | None = None
    ctwa_clid: str | None = None
    welcome_message: str | None = None


class InboundMessage(Frozen):
    """One message a user sent to a business number, as every later stage sees it."""

    provider_message_id: str
    number_id: str = Field(description="the provider's id of the business number (phone_number_id)")
    display_phone_number: str | None = None
    sender: UserRef
    timestamp: datetime
    type: str = Field(description="the provider's own type name, kept as sent")
    content: InboundContent
    context: MessageContext | None = None
    referral: Referral | None = None
    errors: tuple[ProviderError, ...] = ()
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def wants_reply(self) -> bool:
        """Whether this message starts a turn for the agent (reactions, revokes and notices do not)."""
        return not isinstance(self.content, ReactionContent | RevokeContent | SystemContent | EditContent)


# ------------------------------------------------------------------------------------------ statuses


class DeliveryStatus(enum.StrEnum):
    """Where an outbound message is; ``rank`` orders them so a status never moves backwards."""

    QUEUED = "queued"
    SENDING = "sending"
    ACCEPTED = "accepted"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        """Position in the life of a message; later statuses never yield to earlier ones."""
        return _STATUS_RANK[self]


_STATUS_RANK = {
    DeliveryStatus.QUEUED: 0,
    DeliveryStatus.SENDING: 1,
    DeliveryStatus.ACCEPTED: 2,
    DeliveryStatus.SENT: 3,
    DeliveryStatus.DELIVERED: 4,
    DeliveryStatus.READ: 5,
    DeliveryStatus.PLAYED: 6,
    DeliveryStatus.FAILED: 7,
}


class StatusUpdate(Frozen):
    """A delivery receipt for a message the business sent."""

    provider_message_id: str
    number_id: str
    status: str = Field(description="the provider's status name (sent, delivered, read, played, failed, …)")
    timestamp: datetime
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    errors: tuple[ProviderError, ...] = ()
    pricing: dict[str, Any] | None = None
    conversation: dict[str, Any] | None = None
    biz_opaque_callback_data: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def known_status(self) -> DeliveryStatus | None:
        """The status as warelay's enum, or None for a name warelay does not know."""
        try:
            status = DeliveryStatus(self.status)
        except ValueError:
            return None
        return status if status.rank >= DeliveryStatus.SENT.rank else None


class ChannelErrorEvent(Frozen):
    """An out-of-band error the provider reported for a number (no message or status attached)."""

    number_id: str | None
    errors: tuple[ProviderError, ...]
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class ParsedWebhook(Frozen):
    """Everything one webhook delivery carried, split by kind."""

    messages: tuple[InboundMessage, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()
    errors: tuple[ChannelErrorEvent, ...] = ()
    ignored: tuple[str, ...] = Field(
        default=(), description="fields and types that were present but not handled, for logs"
    )


# ---------------------------------------------------------------------------------- outbound content


class OutText(Frozen):
    """A text message; ``body`` may use WhatsApp markup (already formatted)."""

    kind: Literal["text"] = "text"
    body: str
    preview_url: bool = False


class OutMedia(Frozen):
    """An image, video, audio, document or sticker sent by link or by uploaded media id."""

    kind: Literal["media"] = "media"
    media_type: MediaKind
    link: str | None = None
    media_id: str | None = None
    caption: str | None = None
    filename: str | None = None


class OutLocation(Frozen):
    """A location pin."""

    kind: Literal["location"] = "location"
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class OutReaction(Frozen):
    """A reaction to a message; an empty emoji removes the business's reaction."""

    kind: Literal["reaction"] = "reaction"
    message_id: str
    emoji: str


class ReplyButton(Frozen):
    """One reply button (id ≤ 256, title ≤ 20)."""

    id: str
    title: str


class OutButtons(Frozen):
    """A message with up to three reply buttons."""

    kind: Literal["buttons"] = "buttons"
    body: str
    buttons: tuple[ReplyButton, ...]
    header: str | None = None
    footer: str | None = None


class ListRow(Frozen):
    """One selectable row of a list message."""

    id: str
    title: str
    description: str | None = None


class ListSection(Frozen):
    """A titled group of rows in a list message."""

    title: str | None = None
    rows: tuple[ListRow, ...]


class OutList(Frozen):
    """A list message: a menu button that opens sections of rows."""

    kind: Literal["list"] = "list"
    body: str
    button: str
    sections: tuple[ListSection, ...]
    header: str | None = None
    footer: str | None = None


class OutCtaUrl(Frozen):
    """A message with one call-to-action button that opens a URL."""

    kind: Literal["cta_url"] = "cta_url"
    body: str
    display_text: str
    url: str
    header: str | None = None
    footer: str | None = None


class OutLocationRequest(Frozen):
    """A message with a "Send location" button that asks the user to share where they are."""

    kind: Literal["location_request"] = "location_request"
    body: str


class OutCatalog(Frozen):
    """A catalog message: a body and a "View catalog" button that opens the business's catalog.

    ``thumbnail_product_retailer_id`` names the product whose image heads the message (WhatsApp
    uses the catalog's first product when it is left out).
    """

    kind: Literal["catalog"] = "catalog"
    body: str
    thumbnail_product_retailer_id: str | None = None
    footer: str | None = None


class ProductSection(Frozen):
    """A titled group of catalog products in a product list (titles are needed with several sections)."""

    title: str | None = None
    product_retailer_ids: tuple[str, ...]


class OutProductList(Frozen):
    """A product list (multi-product message): products of one catalog, in sections, under a header."""

    kind: Literal["product_list"] = "product_list"
    header: str
    body: str
    catalog_id: str
    sections: tuple[ProductSection, ...]
    footer: str | None = None


class OutFlow(Frozen):
    """A WhatsApp Flow message: a body and a button that opens the Flow ``flow_id``.

    ``flow_action`` is ``navigate`` (Meta's default: open ``screen``, given ``data``) or
    ``data_exchange`` (the Flow's endpoint decides the first screen; no screen or data here).
    ``flow_token`` comes back in the user's Flow reply, to tell which message it answers.
    """

    kind: Literal["flow"] = "flow"
    body: str
    flow_id: str
    flow_cta: str
    flow_token: str | None = None
    flow_action: Literal["navigate", "data_exchange"] | None = None
    screen: str | None = None
    data: dict[str, Any] | None = None
    header: str | None = None
    footer: str | None = None


class OutRaw(Frozen):
    """A provider-specific body passed through as given (for the compatibility APIs' richer types)."""

    kind: Literal["raw"] = "raw"
    type: str
    payload: dict[str, Any]


OutboundContent = Annotated[
    OutText
    | OutMedia
    | OutLocation
    | OutReaction
    | OutButtons
    | OutList
    | OutCtaUrl
    | OutLocationRequest
    | OutCatalog
    | OutProductList
    | OutFlow
    | OutRaw,
    Field(discriminator="kind"),
]
