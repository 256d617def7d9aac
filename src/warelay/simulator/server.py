"""A local WhatsApp: a Graph-API-compatible server, its state, and the chat page's control API.

Where it sits: it stands in for Meta at both ends of warelay's message path (DESIGN.md section 1).
Users "type" through :meth:`Simulator.user_sends` or the chat page; the simulator builds, signs and
POSTs Meta-shaped webhooks to warelay's ``channels/cloud`` route. warelay's ``outbound/`` sender calls
``POST /{version}/{phone-number-id}/messages`` here; every body goes through the hand-written
validator (:mod:`warelay.simulator.validate`), is recorded, answered like Graph, and followed by
``sent → delivered → read`` statuses delivered as signed, batched webhooks. A :class:`FaultPlan`
injects Meta's errors and latency for retry tests and benchmarks.

Everything is in memory and single-threaded on the event loop, so no locks are needed. Per-request
work is kept to a dict lookup, a JSON parse, the validator and a heap push; statuses are produced by one
background task and delivered in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from warelay.simulator.validate import (
    GraphRequestError,
    graph_error,
    invalid_parameter,
    missing_parameter,
    validate_send_request,
)
from warelay.simulator.webhooks import (
    DeliveryResult,
    WebhookPoster,
    encode_payload,
    inbound_message,
    messages_payload,
    new_wamid,
    signed_headers,
    status_item,
    statuses_payload,
    unix_timestamp,
)

__all__ = [
    "Fault",
    "FaultPlan",
    "MediaItem",
    "NumberInfo",
    "ReadReceipt",
    "RejectedRequest",
    "SentMessage",
    "Simulator",
    "SimulatorConfig",
    "StatusEvent",
    "WebhookFailure",
    "create_simulator_app",
    "run_simulator",
]

logger = logging.getLogger("warelay.simulator")

_MEDIA_TYPES: Final = frozenset({"image", "audio", "video", "document", "sticker"})
# The typing indicator disappears after 25 s or when the business replies (M-TYP).
_TYPING_SECONDS: Final = 25.0
# A media URL from GET /{media-id} is valid for 5 minutes (A8).
_MEDIA_URL_TTL: Final = 300
_VERSION = re.compile(r"v\d+(\.\d+)?")
_NON_DIGITS = re.compile(r"\D+")


@dataclass(frozen=True)
class SimulatorConfig:
    """Settings of one simulator; the first business number comes from here, more via ``add_number``."""

    webhook_url: str
    app_secret: str
    access_token: str
    phone_number_id: str = "106540352242922"
    display_phone_number: str = "15550783881"
    waba_id: str = "102290129340398"
    status_delay: float = 0.0
    status_batch_window: float = 0.02
    send_statuses: bool = True
    read_receipts: bool = True
    base_url: str = "http://127.0.0.1:9000"
    webhook_max_attempts: int = 5
    webhook_retry_base: float = 0.05
    webhook_timeout: float = 10.0
    status_batch_max: int = 100
    max_concurrent_webhooks: int = 32

    def __post_init__(self) -> None:
        if not self.webhook_url.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http(s) URL")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        if not self.app_secret or not self.access_token:
            raise ValueError("app_secret and access_token must not be empty")
        if not self.phone_number_id or not self.display_phone_number:
            raise ValueError("phone_number_id and display_phone_number must not be empty")
        if self.status_delay < 0 or self.status_batch_window < 0:
            raise ValueError("status_delay and status_batch_window must not be negative")
        if self.webhook_max_attempts < 1 or self.status_batch_max < 1 or self.max_concurrent_webhooks < 1:
            raise ValueError(
                "webhook_max_attempts, status_batch_max and max_concurrent_webhooks must be >= 1"
            )


@dataclass(frozen=True, slots=True)
class NumberInfo:
    """One simulated business phone number and where its webhooks go."""

    phone_number_id: str
    display_phone_number: str
    access_token: str
    app_secret: str
    webhook_url: str
    waba_id: str


@dataclass(frozen=True, slots=True)
class SentMessage:
    """An outbound message the simulator accepted: the request body as warelay sent it."""

    number_id: str
    wamid: str
    to: str
    body: dict[str, Any]
    at: float

    @property
    def type(self) -> str:
        """The message type (Meta defaults an omitted type to text)."""
        mtype = self.body.get("type", "text")
        return mtype if isinstance(mtype, str) else "text"

    @property
    def text(self) -> str | None:
        """The human-readable text: text body, media caption or interactive body."""
        content = self.body.get(self.type)
        if not isinstance(content, dict):
            return None
        if self.type == "text":
            return content.get("body")
        if self.type == "interactive":
            body = content.get("body")
            return body.get("text") if isinstance(body, dict) else None
        caption = content.get("caption")
        return caption if isinstance(caption, str) else None


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    """A mark-as-read call, with or without the typing indicator."""

    number_id: str
    message_id: str
    typing: bool
    at: float


@dataclass(frozen=True, slots=True)
class RejectedRequest:
    """A messages request the validator refused, with Meta's answer."""

    number_id: str
    body: Any
    status: int
    code: int
    details: str | None
    at: float


@dataclass(frozen=True, slots=True)
class WebhookFailure:
    """A webhook the receiver never answered 200, after all retries."""

    number_id: str
    kind: str
    url: str
    status: int | None
    error: str | None
    at: float


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A status the simulator produced for an outbound message (before it was delivered)."""

    number_id: str
    wamid: str
    status: str
    at: float


@dataclass(slots=True)
class MediaItem:
    """An uploaded (or seeded) media file."""

    media_id: str
    number_id: str | None
    data: bytes
    mime_type: str
    sha256: str
    filename: str | None = None


# ----------------------------------------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure: an HTTP status with a Meta code, or (``on_status``) a later ``failed`` status."""

    http_status: int
    code: int
    details: str | None = None
    on_status: bool = False

    def error(self) -> GraphRequestError:
        """The Graph error this fault answers with."""
        return graph_error(self.http_status, self.code, self.details)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the control API."""
        return {
            "http_status": self.http_status,
            "code": self.code,
            "details": self.details,
            "on_status": self.on_status,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Fault:
        """Parse the control API's JSON form; raises ValueError on bad input."""
        if not isinstance(data, dict):
            raise ValueError("a fault must be an object")
        http_status, code = data.get("http_status"), data.get("code")
        if not isinstance(http_status, int) or not 400 <= http_status <= 599:
            raise ValueError("http_status must be an integer between 400 and 599")
        if not isinstance(code, int):
            raise ValueError("code must be an integer")
        details = data.get("details")
        if details is not None and not isinstance(details, str):
            raise ValueError("details must be a string")
        return cls(http_status, code, details, bool(data.get("on_status", False)))


class FaultPlan:
    """Failures to inject into send calls (not mark-as-read): a queue of next ones, random ones, latency.

    ``latency`` is added to every Graph call. Random faults use their own seeded generator so a
    benchmark run is repeatable.
    """

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self.latency: float = 0.0
        self._probability = 0.0
        self._random_faults: tuple[Fault, ...] = ()
        self._seed = 0
        self._rng = random.Random(0)  # noqa: S311 - fault injection, not cryptography
        self._last_from_queue = False
        self.injected = 0

    def fail_next(
        self, count: int, http_status: int, code: int, *, details: str | None = None, on_status: bool = False
    ) -> None:
        """Fail the next ``count`` send calls, e.g. ``fail_next(2, 429, 130429)``."""
        if count < 0:
            raise ValueError("count must not be negative")
        fault = Fault(http_status, code, details, on_status)
        self._queue.extend([fault] * count)

    def set_random(self, probability: float, faults: Sequence[Fault], *, seed: int = 0) -> None:
        """Fail each send with ``probability``, picking one of ``faults`` (generator seeded by ``seed``)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if probability > 0 and not faults:
            raise ValueError("a probability needs at least one fault to pick from")
        self._probability = probability
        self._random_faults = tuple(faults)
        self._seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography

    def set_latency(self, seconds: float) -> None:
        """Delay every Graph call by ``seconds``."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self.latency = seconds

    def clear(self) -> None:
        """Remove every fault and the latency."""
        self._queue.clear()
        self.latency = 0.0
        self._probability = 0.0
        self._random_faults = ()

    @property
    def queued(self) -> int:
        """How many queued faults are left."""
        return len(self._queue)

    def take(self) -> Fault | None:
        """The fault for this send call, if any (queued ones first, then the dice)."""
        self._last_from_queue = bool(self._queue)
        if self._queue:
            self.injected += 1
            return self._queue.popleft()
        if self._probability and self._rng.random() < self._probability:
            self.injected += 1
            return self._rng.choice(self._random_faults)
        return None

    def give_back(self, fault: Fault) -> None:
        """Undo the last :meth:`take` for a request refused before the fault applied (queued ones return)."""
        self.injected -= 1
        if self._last_from_queue:
            self._queue.appendleft(fault)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``GET /_sim/faults``."""
        return {
            "queued": [fault.to_dict() for fault in self._queue],
            "latency": self.latency,
            "random": {
                "probability": self._probability,
                "seed": self._seed,
                "faults": [fault.to_dict() for fault in self._random_faults],
            },
            "injected": self.injected,
        }

    def apply(self, data: Any) -> None:
        """Merge a ``POST /_sim/faults`` body: ``fail_next``, ``latency`` and/or ``random``."""
        if not isinstance(data, dict):
            raise ValueError("the body must be an object")
        unknown = set(data) - {"fail_next", "latency", "random"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        pending: list[Fault] = []
        fail_next = data.get("fail_next")
        if fail_next is not None:
            for item in fail_next if isinstance(fail_next, list) else [fail_next]:
                fault = Fault.from_dict(item)
                count = item.get("count", 1)
                if not isinstance(count, int) or count < 0:
                    raise ValueError("count must be a non-negative integer")
                pending.extend([fault] * count)
        latency = data.get("latency")
        if latency is not None and (not isinstance(latency, int | float) or latency < 0):
            raise ValueError("latency must be a non-negative number")
        rnd = data.get("random")
        if rnd is not None:
            if not isinstance(rnd, dict):
                raise ValueError("random must be an object")
            faults = [Fault.from_dict(f) for f in rnd.get("faults", [])]
            probability, seed = rnd.get("probability", 0.0), rnd.get("seed", 0)
            if not isinstance(probability, int | float) or not isinstance(seed, int):
                raise ValueError("random.probability must be a number and random.seed an integer")
            self.set_random(float(probability), faults, seed=seed)
        if latency is not None:
            self.set_latency(float(latency))
        self._queue.extend(pending)


# ------------------------------------------------------------------------------------------ chat state

_OUT_RANK: Final = {"accepted": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 9}
_IN_RANK: Final = {"pending": 0, "failed": 1, "delivered": 2, "read": 3}


@dataclass(slots=True)
class _ChatEntry:
    seq: int
    direction: str
    wamid: str
    at: float
    message: dict[str, Any]
    status: str

    def to_json(self) -> dict[str, Any]:
        mtype = self.message.get("type", "text")
        return {
            "seq": self.seq,
            "id": self.wamid,
            "direction": self.direction,
            "type": mtype,
            "at": self.at,
            "status": self.status,
            "message": self.message,
        }


@dataclass(slots=True)
class _Chat:
    number_id: str
    key: str
    name: str = "Test User"
    entries: list[_ChatEntry] = field(default_factory=list)
    version: int = 0
    typing_until: float = 0.0

    def add(self, entry: _ChatEntry) -> None:
        self.entries.append(entry)
        self.version += 1


@dataclass(order=True, slots=True)
class _PendingStatus:
    due: float
    seq: int
    number_id: str = field(compare=False)
    wamid: str = field(compare=False)
    status: str = field(compare=False)
    recipient_id: str | None = field(compare=False)
    recipient_user_id: str | None = field(compare=False)
    recipient_type: str | None = field(compare=False)
    category: str = field(compare=False)
    tracker: str | None = field(compare=False)
    errors: tuple[dict[str, Any], ...] = field(compare=False, default=())


def _digits(value: str) -> str:
    return _NON_DIGITS.sub("", value)


def _status_error(code: int, details: str) -> dict[str, Any]:
    title = graph_error(400, code).message.split(") ", 1)[-1]
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }


def _unsupported_object(method: str, object_id: str) -> GraphRequestError:
    return GraphRequestError(
        400,
        100,
        f"Unsupported {method} request. Object with ID '{object_id}' does not exist, cannot be loaded due "
        "to missing permissions, or does not support this operation. Please read the Graph API "
        "documentation at https://developers.facebook.com/docs/graph-api",
        None,
        error_type="GraphMethodException",
        subcode=33,
    )


class Simulator:
    """The simulated WhatsApp Cloud API: business numbers, users, sent messages, statuses and faults."""

    def __init__(self, config: SimulatorConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.faults = FaultPlan()
        # Media fetches: faults for GET /{media-id} and for the download URL, and downloads whose
        # bytes are altered on the way (they no longer match the sha256 Graph gave).
        self.media_faults = FaultPlan()
        self.download_faults = FaultPlan()
        self.corrupt_downloads = 0
        self.media_requests = 0
        self.downloads = 0
        self.sent: list[SentMessage] = []
        self.reads: list[ReadReceipt] = []
        self.rejected: list[RejectedRequest] = []
        self.status_log: list[StatusEvent] = []
        self.webhook_failures: list[WebhookFailure] = []
        self.statuses_delivered = 0
        self.status_webhooks = 0
        self.inbound_delivered = 0
        self._numbers: dict[str, NumberInfo] = {}
        self._tokens: dict[str, set[str]] = {}
        self._media: dict[str, MediaItem] = {}
        self._media_ids = itertools.count(secrets.randbelow(10**14) + 10**15)
        self._url_secret = secrets.token_bytes(16)
        self._chats: dict[tuple[str, str], _Chat] = {}
        self._entry_seq = itertools.count(1)
        self._outbound: dict[str, tuple[_Chat, _ChatEntry]] = {}
        self._inbound: dict[str, tuple[_Chat, _ChatEntry]] = {}
        self._pending: list[_PendingStatus] = []
        self._pending_seq = itertools.count()
        self._waiters: set[asyncio.Future[None]] = set()
        self._http = http
        self._owns_http = http is None
        self._poster: WebhookPoster | None = None
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._delivery_slots: asyncio.Semaphore | None = None
        self.add_number(
            config.phone_number_id,
            config.display_phone_number,
            config.access_token,
            config.app_secret,
            config.webhook_url,
            waba_id=config.waba_id,
        )

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start producing and delivering statuses in the background (idempotent)."""
        if self._worker is not None and not self._worker.done():
            return
        self._wake = asyncio.Event()
        self._delivery_slots = asyncio.Semaphore(self.config.max_concurrent_webhooks)
        self._worker = asyncio.create_task(self._status_loop(), name="warelay-simulator-statuses")
        if self._pending:
            self._wake.set()

    async def stop(self) -> None:
        """Stop background work, drop in-flight deliveries and close the HTTP client it created."""
        tasks = [t for t in (self._worker, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._worker = None
        self._deliveries.clear()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None
            self._poster = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -------------------------------------------------------------------------------------- numbers

    def add_number(
        self,
        phone_number_id: str,
        display_phone_number: str,
        access_token: str,
        app_secret: str,
        webhook_url: str,
        *,
        waba_id: str | None = None,
    ) -> NumberInfo:
        """Register another business number (several may share one access token, like a system user)."""
        if not phone_number_id or not access_token or not app_secret:
            raise ValueError("phone_number_id, access_token and app_secret must not be empty")
        old = self._numbers.get(phone_number_id)
        if old is not None:
            self._tokens[old.access_token].discard(phone_number_id)
        number = NumberInfo(
            phone_number_id,
            display_phone_number,
            access_token,
            app_secret,
            webhook_url,
            waba_id or self.config.waba_id,
        )
        self._numbers[phone_number_id] = number
        self._tokens.setdefault(access_token, set()).add(phone_number_id)
        return number

    @property
    def numbers(self) -> list[NumberInfo]:
        """Every registered business number."""
        return list(self._numbers.values())

    def _number(self, number_id: str | None) -> NumberInfo:
        number = self._numbers.get(number_id or self.config.phone_number_id)
        if number is None:
            raise KeyError(f"unknown phone number id {number_id!r}")
        return number

    # -------------------------------------------------------------------------------------- inbound

    def _client(self) -> WebhookPoster:
        if self._poster is None:
            if self._http is None:
                # A small pool: httpx's pool bookkeeping grows with its size, and the simulator shares
                # the machine with warelay in benchmarks.
                self._http = httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=16, max_keepalive_connections=16)
                )
                self._owns_http = True
            self._poster = WebhookPoster(
                self._http,
                max_attempts=self.config.webhook_max_attempts,
                retry_base=self.config.webhook_retry_base,
                timeout=self.config.webhook_timeout,
            )
        return self._poster

    def _prepare_inbound(
        self,
        wa_id: str,
        message: Mapping[str, Any] | str,
        *,
        name: str,
        number_id: str | None,
        message_id: str | None,
    ) -> tuple[NumberInfo, bytes, dict[str, str], dict[str, Any]]:
        number = self._number(number_id)
        wamid = message_id or new_wamid(wa_id)
        item = inbound_message(wa_id, message, message_id=wamid, timestamp=unix_timestamp())
        payload = messages_payload(
            waba_id=number.waba_id,
            phone_number_id=number.phone_number_id,
            display_phone_number=number.display_phone_number,
            wa_id=wa_id,
            name=name,
            message=item,
        )
        body = encode_payload(payload)
        return number, body, signed_headers(body, number.app_secret), item

    def build_inbound(
        self,
        wa_id: str,
        message: Mapping[str, Any] | str,
        *,
        name: str = "Test User",
        number_id: str | None = None,
        message_id: str | None = None,
    ) -> tuple[bytes, dict[str, str], str]:
        """A signed inbound webhook (body bytes, headers, wamid) without sending or recording it."""
        _, body, headers, item = self._prepare_inbound(
            wa_id, message, name=name, number_id=number_id, message_id=message_id
        )
        return body, headers, str(item["id"])

    async def user_sends(
        self,
        wa_id: str,
        message: Mapping[str, Any] | str,
        *,
        name: str = "Test User",
        number_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """A user writes to a business number: deliver the signed webhook (with Meta-like retries)."""
        wamid, _ = await self.deliver_inbound(
            wa_id, message, name=name, number_id=number_id, message_id=message_id
        )
        return wamid

    async def deliver_inbound(
        self,
        wa_id: str,
        message: Mapping[str, Any] | str,
        *,
        name: str = "Test User",
        number_id: str | None = None,
        message_id: str | None = None,
    ) -> tuple[str, DeliveryResult]:
        """Like :meth:`user_sends`, also returning how the delivery ended."""
        if isinstance(message, Mapping):
            message = self._with_media_details(message)
        number, body, headers, item = self._prepare_inbound(
            wa_id, message, name=name, number_id=number_id, message_id=message_id
        )
        wamid = str(item["id"])
        chat = self._chat(number.phone_number_id, _digits(wa_id) or wa_id)
        chat.name = name
        entry = _ChatEntry(next(self._entry_seq), "in", wamid, time.time(), item, "pending")
        chat.add(entry)
        self._inbound[wamid] = (chat, entry)
        self._notify()
        result = await self._client().post(number.webhook_url, body, headers)
        self._set_status(chat, entry, "delivered" if result.ok else "failed", _IN_RANK)
        if result.ok:
            self.inbound_delivered += 1
        else:
            self._record_failure(number, "message", result)
        self._notify()
        return wamid, result

    def _with_media_details(self, message: Mapping[str, Any]) -> Mapping[str, Any]:
        """Fill ``mime_type``/``sha256`` of a media message whose id names a seeded file."""
        mtype = message.get("type")
        content = message.get(mtype) if isinstance(mtype, str) else None
        if mtype not in _MEDIA_TYPES or not isinstance(content, dict):
            return message
        item = self._media.get(str(content.get("id")))
        if item is None:
            return message
        filled = {"mime_type": item.mime_type, "sha256": item.sha256, **content}
        if mtype == "document" and item.filename and "filename" not in filled:
            filled["filename"] = item.filename
        return {**message, mtype: filled}

    # ------------------------------------------------------------------------------------- Graph API

    def check_token(self, token: str | None, number_id: str, method: str = "post") -> NumberInfo:
        """The number ``token`` may act for, or the Graph error (401/190, or 400/100 for a foreign number)."""
        if not token:
            raise GraphRequestError(401, 190, "An access token is required to request this resource.", None)
        allowed = self._tokens.get(token)
        if not allowed:
            raise GraphRequestError(401, 190, "Invalid OAuth access token - Cannot parse access token", None)
        if number_id not in allowed:
            raise _unsupported_object(method, number_id)
        return self._numbers[number_id]

    def handle_send(self, number_id: str, token: str | None, raw: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /{version}/{number_id}/messages``: bearer → faults → validator → accept; (status, JSON)."""
        try:
            number = self.check_token(token, number_id, "post")
        except GraphRequestError as exc:
            return exc.status, exc.to_response()
        try:
            body = json.loads(raw)
        except ValueError:
            text = raw[:2000].decode("utf-8", "replace")
            return self._reject(number_id, text, invalid_parameter("The request body is not valid JSON"))
        is_status = isinstance(body, dict) and "status" in body
        fault = None if is_status else self.faults.take()
        if fault is not None and not fault.on_status:
            error = fault.error()
            return error.status, error.to_response()
        try:
            validate_send_request(body)
        except GraphRequestError as exc:
            if fault is not None:
                self.faults.give_back(fault)
            return self._reject(number_id, body, exc)
        if is_status:
            return 200, self._mark_read(number, body)
        return 200, self._accept(number, body, fault)

    def _reject(self, number_id: str, body: Any, exc: GraphRequestError) -> tuple[int, dict[str, Any]]:
        self.rejected.append(RejectedRequest(number_id, body, exc.status, exc.code, exc.details, time.time()))
        logger.warning("simulator rejected a send to number %s: %s", number_id, exc)
        self._notify()
        return exc.status, exc.to_response()

    def _mark_read(self, number: NumberInfo, body: dict[str, Any]) -> dict[str, Any]:
        message_id = body["message_id"]
        typing = body.get("typing_indicator") is not None
        self.reads.append(ReadReceipt(number.phone_number_id, message_id, typing, time.time()))
        found = self._inbound.get(message_id)
        # An id the simulator never delivered (e.g. from build_inbound) is still answered with success.
        if found is not None:
            chat, target = found
            # Marking one message read also marks earlier ones in the chat read (A7).
            for entry in chat.entries:
                if entry.direction == "in":
                    self._set_status(chat, entry, "read", _IN_RANK)
                if entry is target:
                    break
            if typing:
                chat.typing_until = time.monotonic() + _TYPING_SECONDS
                chat.version += 1
        self._notify()
        return {"success": True}

    def _accept(self, number: NumberInfo, body: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        to = body.get("to")
        recipient = body.get("recipient")
        wa_id = (_digits(to) or to) if isinstance(to, str) else None
        key = wa_id or str(recipient)
        wamid = new_wamid(wa_id or "")
        now = time.time()
        self.sent.append(SentMessage(number.phone_number_id, wamid, key, body, now))
        chat = self._chat(number.phone_number_id, key)
        entry = _ChatEntry(next(self._entry_seq), "out", wamid, now, body, "accepted")
        chat.add(entry)
        chat.typing_until = 0.0
        self._outbound[wamid] = (chat, entry)
        self._schedule_statuses(number, body, wamid, wa_id, recipient, fault)
        self._notify()
        contact = (
            {"input": to, "wa_id": wa_id} if wa_id is not None else {"input": recipient, "user_id": recipient}
        )
        message: dict[str, Any] = {"id": wamid}
        if body.get("type") == "template":
            message["message_status"] = "accepted"
        return {"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]}

    # --------------------------------------------------------------------------------------- media

    def add_media(
        self, data: bytes, mime_type: str, *, number_id: str | None = None, filename: str | None = None
    ) -> str:
        """Store a media file (as an upload, or as media a user sends) and return its media id."""
        media_id = str(next(self._media_ids))
        digest = hashlib.sha256(data).hexdigest()
        self._media[media_id] = MediaItem(media_id, number_id, data, mime_type, digest, filename)
        return media_id

    def media(self, media_id: str) -> MediaItem | None:
        """A stored media file, or None."""
        return self._media.get(media_id)

    async def user_sends_media(
        self,
        wa_id: str,
        media_type: str,
        data: bytes,
        mime_type: str,
        *,
        caption: str | None = None,
        filename: str | None = None,
        voice: bool = False,
        animated: bool = False,
        name: str = "Test User",
        number_id: str | None = None,
    ) -> tuple[str, str]:
        """A user sends a file (image, audio, video, document or sticker): (wamid, media id).

        The file is kept as media of the business number, readable with its token like Meta's.
        """
        if media_type not in _MEDIA_TYPES:
            raise ValueError(f"media_type must be one of {sorted(_MEDIA_TYPES)}")
        number = self._number(number_id)
        media_id = self.add_media(data, mime_type, number_id=number.phone_number_id, filename=filename)
        content: dict[str, Any] = {"id": media_id}
        if caption is not None and media_type in ("image", "video", "document"):
            content["caption"] = caption
        if media_type == "document" and filename:
            content["filename"] = filename
        if media_type == "audio":
            content["voice"] = voice
        if media_type == "sticker":
            content["animated"] = animated
        wamid = await self.user_sends(
            wa_id, {"type": media_type, media_type: content}, name=name, number_id=number.phone_number_id
        )
        return wamid, media_id

    def media_bytes(self, media_id: str) -> bytes:
        """The bytes a download of ``media_id`` serves now (altered while ``corrupt_downloads`` lasts)."""
        self.downloads += 1
        data = self._media[media_id].data
        if self.corrupt_downloads > 0 and data:
            self.corrupt_downloads -= 1
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    def resolve_media(self, token: str | None, media_id: str, method: str = "get") -> MediaItem:
        """The media ``token`` may read, or the Graph error (401/190, or 400/100 when unknown or foreign)."""
        if not token:
            raise GraphRequestError(401, 190, "An access token is required to request this resource.", None)
        allowed = self._tokens.get(token)
        if not allowed:
            raise GraphRequestError(401, 190, "Invalid OAuth access token - Cannot parse access token", None)
        item = self._media.get(media_id)
        if item is None or (item.number_id is not None and item.number_id not in allowed):
            raise _unsupported_object(method, media_id)
        return item

    def delete_media(self, media_id: str) -> bool:
        """Forget a media file; False when it was not stored."""
        return self._media.pop(media_id, None) is not None

    def has_number(self, number_id: str) -> bool:
        """Whether ``number_id`` is a registered business number."""
        return number_id in self._numbers

    def _media_signature(self, media_id: str, expires: int) -> str:
        message = f"{media_id}:{expires}".encode()
        return hmac.new(self._url_secret, message, hashlib.sha256).hexdigest()[:32]

    def check_media_url(self, media_id: str, expires: str, signature: str) -> bool:
        """Whether a download URL from :meth:`media_url` is genuine and not older than 5 minutes."""
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(signature, self._media_signature(media_id, int(expires)))

    def media_url(self, media_id: str) -> str:
        """A download URL on the simulator itself, valid for 5 minutes like Meta's."""
        expires = int(time.time()) + _MEDIA_URL_TTL
        signature = self._media_signature(media_id, expires)
        return f"{self.config.base_url.rstrip('/')}/media/{media_id}?ext={expires}&hash={signature}"

    # ------------------------------------------------------------------------------------ statuses

    def _schedule_statuses(
        self,
        number: NumberInfo,
        body: dict[str, Any],
        wamid: str,
        wa_id: str | None,
        recipient: Any,
        fault: Fault | None,
    ) -> None:
        if not self.config.send_statuses:
            return
        mtype = body.get("type", "text")
        tracker = body.get("biz_opaque_callback_data")

        def make(status: str, due: float, errors: tuple[dict[str, Any], ...] = ()) -> _PendingStatus:
            return _PendingStatus(
                due,
                next(self._pending_seq),
                number.phone_number_id,
                wamid,
                status,
                wa_id,
                recipient if wa_id is None and isinstance(recipient, str) else None,
                body.get("recipient_type"),
                "utility" if mtype == "template" else "service",
                tracker,
                errors,
            )

        delay = self.config.status_delay
        start = time.monotonic()
        head = self._pending[0].due if self._pending else None
        failure = self._async_failure(body, mtype, fault)
        if failure is not None:
            heapq.heappush(self._pending, make("failed", start + delay, (failure,)))
        else:
            heapq.heappush(self._pending, make("sent", start + delay))
            heapq.heappush(self._pending, make("delivered", start + 2 * delay))
            if self.config.read_receipts:
                heapq.heappush(self._pending, make("read", start + 3 * delay))
        # Wake the loop only when it sleeps past the new earliest status: at 1,000 sends/s, waking it on
        # every push would cost more than the statuses themselves.
        if self._wake is not None and (head is None or self._pending[0].due < head):
            self._wake.set()

    @staticmethod
    def _async_failure(body: dict[str, Any], mtype: Any, fault: Fault | None) -> dict[str, Any] | None:
        if fault is not None:
            return _status_error(fault.code, fault.details or "Injected by the simulator's fault plan")
        content = body.get(mtype) if isinstance(mtype, str) else None
        if mtype in _MEDIA_TYPES and isinstance(content, dict):
            link = content.get("link")
            # Meta fetches a media link after accepting the send; a link it cannot fetch fails later.
            if isinstance(link, str) and not link.lower().startswith(("http://", "https://")):
                return _status_error(131053, f"Unable to download media from link: {link}")
        return None

    async def _status_loop(self) -> None:
        wake = self._wake
        if wake is None:
            raise RuntimeError("the status loop runs only after start()")
        while True:
            if not self._pending:
                wake.clear()
                await wake.wait()
                continue
            wait = self._pending[0].due - time.monotonic()
            if wait > 0:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
                continue
            # Statuses produced within the window share one webhook POST, as Meta batches them.
            if self.config.status_batch_window > 0:
                await asyncio.sleep(self.config.status_batch_window)
            self._flush_due(time.monotonic())

    def _flush_due(self, now: float) -> None:
        by_number: dict[str, list[dict[str, Any]]] = {}
        timestamp = unix_timestamp()
        wall = time.time()
        while self._pending and self._pending[0].due <= now:
            pending = heapq.heappop(self._pending)
            item = status_item(
                wamid=pending.wamid,
                status=pending.status,
                recipient_id=pending.recipient_id,
                timestamp=timestamp,
                recipient_user_id=pending.recipient_user_id,
                recipient_type=pending.recipient_type,
                category=pending.category,
                biz_opaque_callback_data=pending.tracker,
                errors=pending.errors,
            )
            by_number.setdefault(pending.number_id, []).append(item)
            self.status_log.append(StatusEvent(pending.number_id, pending.wamid, pending.status, wall))
            found = self._outbound.get(pending.wamid)
            if found is not None:
                self._set_status(found[0], found[1], pending.status, _OUT_RANK)
        size = self.config.status_batch_max
        for number_id, items in by_number.items():
            number = self._numbers.get(number_id)
            if number is None:
                continue
            for offset in range(0, len(items), size):
                chunk = items[offset : offset + size]
                payload = statuses_payload(
                    waba_id=number.waba_id,
                    phone_number_id=number.phone_number_id,
                    display_phone_number=number.display_phone_number,
                    statuses=chunk,
                )
                task = asyncio.create_task(
                    self._deliver_statuses(number, encode_payload(payload), len(chunk))
                )
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
        self._notify()

    async def _deliver_statuses(self, number: NumberInfo, body: bytes, count: int) -> None:
        slots = self._delivery_slots
        if slots is None:
            raise RuntimeError("statuses are delivered only after start()")
        async with slots:
            result = await self._client().post(
                number.webhook_url, body, signed_headers(body, number.app_secret)
            )
        if result.ok:
            self.statuses_delivered += count
            self.status_webhooks += 1
        else:
            self._record_failure(number, "statuses", result)
        self._notify()

    @property
    def pending_statuses(self) -> int:
        """Statuses produced or scheduled but not yet handed to a delivery."""
        return len(self._pending)

    @property
    def deliveries_in_flight(self) -> int:
        """Status webhooks being posted (or retried) right now."""
        return len(self._deliveries)

    def _record_failure(self, number: NumberInfo, kind: str, result: DeliveryResult) -> None:
        self.webhook_failures.append(
            WebhookFailure(
                number.phone_number_id, kind, number.webhook_url, result.status, result.error, time.time()
            )
        )

    # ---------------------------------------------------------------------------------- chat & state

    def _chat(self, number_id: str, key: str) -> _Chat:
        chat = self._chats.get((number_id, key))
        if chat is None:
            chat = self._chats[(number_id, key)] = _Chat(number_id, key)
        return chat

    @staticmethod
    def _set_status(chat: _Chat, entry: _ChatEntry, status: str, rank: Mapping[str, int]) -> None:
        if rank.get(status, -1) > rank.get(entry.status, -1):
            entry.status = status
            chat.version += 1

    def messages_to(self, wa_id: str) -> list[SentMessage]:
        """Every accepted outbound message to this user (``+`` and spaces in the number are ignored)."""
        key = _digits(wa_id) or wa_id
        return [message for message in self.sent if message.to == key]

    def chat_view(
        self, wa_id: str, number_id: str | None = None, since_version: int | None = None
    ) -> dict[str, Any]:
        """The conversation both ways, for the chat page (``unchanged`` when ``since_version`` is current)."""
        number = self._number(number_id)
        key = _digits(wa_id) or wa_id
        chat = self._chats.get((number.phone_number_id, key))
        typing = chat is not None and chat.typing_until > time.monotonic()
        version = chat.version if chat is not None else 0
        view: dict[str, Any] = {
            "wa_id": key,
            "number_id": number.phone_number_id,
            "display_phone_number": number.display_phone_number,
            "version": version,
            "typing": typing,
        }
        if since_version is not None and since_version == version:
            view["unchanged"] = True
            return view
        view["name"] = chat.name if chat is not None else None
        view["messages"] = [entry.to_json() for entry in chat.entries[-300:]] if chat is not None else []
        return view

    def users(self) -> list[dict[str, Any]]:
        """Every user with a conversation, most recent first."""
        rows: list[dict[str, Any]] = []
        for chat in self._chats.values():
            last = chat.entries[-1] if chat.entries else None
            rows.append(
                {
                    "wa_id": chat.key,
                    "number_id": chat.number_id,
                    "name": chat.name,
                    "messages": len(chat.entries),
                    "at": last.at if last is not None else 0.0,
                }
            )
        rows.sort(key=lambda row: row["at"], reverse=True)
        return rows

    def state(self) -> dict[str, Any]:
        """Counts for ``GET /_sim/state`` and for benchmark reports."""
        return {
            "numbers": [
                {
                    "phone_number_id": n.phone_number_id,
                    "display_phone_number": n.display_phone_number,
                    "waba_id": n.waba_id,
                }
                for n in self._numbers.values()
            ],
            "counts": {
                "sent": len(self.sent),
                "reads": len(self.reads),
                "rejected": len(self.rejected),
                "inbound_delivered": self.inbound_delivered,
                "statuses_produced": len(self.status_log),
                "statuses_delivered": self.statuses_delivered,
                "status_webhooks": self.status_webhooks,
                "pending_statuses": len(self._pending),
                "deliveries_in_flight": len(self._deliveries),
                "webhook_failures": len(self.webhook_failures),
                "faults_injected": self.faults.injected,
                "media": len(self._media),
                "users": len(self._chats),
            },
        }

    def reset(self) -> None:
        """Forget messages, chats and statuses (numbers, media and faults stay)."""
        self.sent.clear()
        self.reads.clear()
        self.rejected.clear()
        self.status_log.clear()
        self.webhook_failures.clear()
        self.statuses_delivered = self.status_webhooks = self.inbound_delivered = 0
        self._chats.clear()
        self._outbound.clear()
        self._inbound.clear()
        self._pending.clear()
        self._notify()

    # ------------------------------------------------------------------------------------- waiting

    def _notify(self) -> None:
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for a condition, not for one awaitable
    ) -> None:
        """Wait until ``predicate()`` is true; raises TimeoutError after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            # Re-check now and then too, for predicates over state the simulator does not own.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, min(remaining, 0.05))
            self._waiters.discard(waiter)


# --------------------------------------------------------------------------------------------- the app

_STATIC_DIR: Final = Path(__file__).parent / "static"
_ASSET_TYPES: Final = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

# Media Meta accepts, with its size limits (S-AWS restating Meta's supported-media table, A8).
_MB: Final = 1024 * 1024
_MEDIA_LIMITS: Final[dict[str, int]] = {
    "image/jpeg": 5 * _MB,
    "image/png": 5 * _MB,
    "image/webp": 500 * 1024,
    "video/mp4": 16 * _MB,
    "video/3gpp": 16 * _MB,
    "audio/aac": 16 * _MB,
    "audio/amr": 16 * _MB,
    "audio/mpeg": 16 * _MB,
    "audio/mp4": 16 * _MB,
    "audio/ogg": 16 * _MB,
    "text/plain": 100 * _MB,
    "application/pdf": 100 * _MB,
    "application/msword": 100 * _MB,
    "application/vnd.ms-excel": 100 * _MB,
    "application/vnd.ms-powerpoint": 100 * _MB,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": 100 * _MB,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": 100 * _MB,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": 100 * _MB,
}


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status, headers=headers, media_type="application/json")


def _graph_json(payload: dict[str, Any], status: int) -> Response:
    headers = None
    if status == 401:
        # Graph names the token problem in this header as well as in the body.
        message = payload["error"]["message"]
        headers = {"WWW-Authenticate": f'OAuth "Facebook Platform" "invalid_token" "{message}"'}
    return _json(payload, status, headers)


def _graph_error(exc: GraphRequestError) -> Response:
    return _graph_json(exc.to_response(), exc.status)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    # Graph also takes the token as a query parameter.
    return request.query_params.get("access_token")


def _bad_version(version: str) -> GraphRequestError | None:
    if _VERSION.fullmatch(version):
        return None
    return GraphRequestError(400, 100, f"Unknown path components: /{version}", None)


def _header_param(value: str, header: str, param: str) -> str | None:
    message = email.message.Message()
    message[header] = value
    found = message.get_param(param, header=header)
    return found if isinstance(found, str) else None


def _parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[bytes, str | None, str | None]]:
    """Split a multipart/form-data body: name → (bytes, filename, part content type)."""
    boundary = _header_param(content_type, "content-type", "boundary")
    if not boundary:
        raise invalid_parameter("The multipart body has no boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    fields: dict[str, tuple[bytes, str | None, str | None]] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        field_name = _header_param(disposition, "content-disposition", "name")
        if field_name is None:
            continue
        filename = _header_param(disposition, "content-disposition", "filename")
        fields[field_name] = (content.removesuffix(b"\r\n"), filename, headers.get("content-type"))
    return fields


def create_simulator_app(sim: Simulator) -> Starlette:
    """The simulator's ASGI app: Graph routes, the ``/_sim`` control API and the chat page."""
    page = (_STATIC_DIR / "chat.html").read_bytes()
    assets = {
        path.name: (path.read_bytes(), _ASSET_TYPES[path.suffix])
        for path in _STATIC_DIR.iterdir()
        if path.suffix in _ASSET_TYPES
    }

    async def send_message(request: Request) -> Response:
        error = _bad_version(request.path_params["version"])
        if error is not None:
            return _graph_error(error)
        if sim.faults.latency > 0:
            await asyncio.sleep(sim.faults.latency)
        raw = await request.body()
        status, payload = sim.handle_send(request.path_params["phone_number_id"], _bearer(request), raw)
        return _graph_json(payload, status)

    async def upload_media(request: Request) -> Response:
        number_id = request.path_params["phone_number_id"]
        try:
            error = _bad_version(request.path_params["version"])
            if error is not None:
                raise error
            sim.check_token(_bearer(request), number_id, "post")
            if sim.faults.latency > 0:
                await asyncio.sleep(sim.faults.latency)
            content_type = request.headers.get("content-type", "")
            if not content_type.lower().startswith("multipart/form-data"):
                raise invalid_parameter("Upload media as multipart/form-data")
            fields = _parse_multipart(await request.body(), content_type)
            product = fields.get("messaging_product")
            if product is None:
                raise missing_parameter("Param messaging_product is required")
            if product[0] != b"whatsapp":
                raise invalid_parameter("Param messaging_product must be 'whatsapp'")
            upload = fields.get("file")
            if upload is None:
                raise missing_parameter("Param file is required")
            declared = fields.get("type")
            mime = declared[0].decode("latin-1") if declared else (upload[2] or "")
            limit = _MEDIA_LIMITS.get(mime.split(";")[0].strip().lower())
            if limit is None:
                raise invalid_parameter(
                    f"Param file must be a file with one of the following types: {', '.join(_MEDIA_LIMITS)}. "
                    f"Received file of type '{mime}'."
                )
            if len(upload[0]) > limit:
                raise graph_error(
                    400, 131053, f"The file is larger than the {limit // 1024} KB allowed for {mime}"
                )
        except GraphRequestError as exc:
            return _graph_error(exc)
        media_id = sim.add_media(upload[0], mime, number_id=number_id, filename=upload[1])
        return _json({"id": media_id})

    async def media_object(request: Request) -> Response:
        media_id = request.path_params["media_id"]
        method = "get" if request.method == "GET" else "delete"
        try:
            error = _bad_version(request.path_params["version"])
            if error is not None:
                raise error
            item = sim.resolve_media(_bearer(request), media_id, method)
            only = request.query_params.get("phone_number_id")
            if only is not None and item.number_id is not None and only != item.number_id:
                raise _unsupported_object(method, media_id)
        except GraphRequestError as exc:
            return _graph_error(exc)
        if sim.faults.latency > 0:
            await asyncio.sleep(sim.faults.latency)
        if method == "delete":
            sim.delete_media(media_id)
            return _json({"success": True})
        sim.media_requests += 1
        fault = sim.media_faults.take()
        if fault is not None:
            return _graph_error(fault.error())
        return _json(
            {
                "messaging_product": "whatsapp",
                "url": sim.media_url(media_id),
                "mime_type": item.mime_type,
                "sha256": item.sha256,
                "file_size": len(item.data),
                "id": media_id,
            }
        )

    async def download_media(request: Request) -> Response:
        media_id = request.path_params["media_id"]
        try:
            item = sim.resolve_media(_bearer(request), media_id, "get")
        except GraphRequestError as exc:
            # The download URL answers 401 without (or with a wrong) bearer, like Meta's lookaside host.
            return _graph_error(exc) if exc.status == 401 else Response(status_code=404)
        params = request.query_params
        if not sim.check_media_url(media_id, params.get("ext", ""), params.get("hash", "")):
            return Response(status_code=404)
        fault = sim.download_faults.take()
        if fault is not None:
            return _graph_error(fault.error())
        return Response(sim.media_bytes(media_id), media_type=item.mime_type)

    # ------------------------------------------------------------------------ control API (/_sim)

    async def sim_state(request: Request) -> Response:
        return _json(sim.state())

    async def sim_reset(request: Request) -> Response:
        sim.reset()
        return _json(sim.state())

    async def sim_faults(request: Request) -> Response:
        if request.method == "DELETE":
            sim.faults.clear()
        elif request.method == "POST":
            try:
                sim.faults.apply(await request.json())
            except ValueError as exc:
                return _json({"error": str(exc)}, 400)
        return _json(sim.faults.to_dict())

    async def sim_users(request: Request) -> Response:
        return _json({"users": sim.users()})

    async def sim_user_message(request: Request) -> Response:
        wa_id = request.path_params["wa_id"]
        if not wa_id.isdigit():
            return _json({"error": "wa_id must be digits only"}, 400)
        try:
            data = await request.json()
        except ValueError:
            return _json({"error": "the body must be JSON"}, 400)
        if not isinstance(data, dict):
            return _json({"error": "the body must be an object"}, 400)
        name = data.get("name") or "Test User"
        number_id = data.get("number_id")
        message: Mapping[str, Any] | str
        if isinstance(data.get("text"), str):
            message = data["text"]
        elif isinstance(data.get("message"), dict):
            message = data["message"]
        elif isinstance(data.get("type"), str):
            message = {k: v for k, v in data.items() if k not in ("name", "number_id")}
        else:
            return _json({"error": "send {'text': ...}, {'message': {...}} or a message object"}, 400)
        if not isinstance(name, str) or (number_id is not None and not sim.has_number(number_id)):
            return _json({"error": "bad name or unknown number_id"}, 400)
        try:
            wamid, result = await sim.deliver_inbound(wa_id, message, name=name, number_id=number_id)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"id": wamid, "delivered": result.ok, "status": result.status})

    async def sim_chat(request: Request) -> Response:
        since = request.query_params.get("version")
        number_id = request.query_params.get("number_id") or None
        if number_id is not None and not sim.has_number(number_id):
            return _json({"error": "unknown number_id"}, 404)
        view = sim.chat_view(
            request.path_params["wa_id"], number_id, int(since) if since and since.isdigit() else None
        )
        return _json(view)

    async def sim_media_faults(request: Request) -> Response:
        # {"resolve": <faults body>, "download": <faults body>, "corrupt": n}; the bodies as /_sim/faults.
        if request.method == "DELETE":
            sim.media_faults.clear()
            sim.download_faults.clear()
            sim.corrupt_downloads = 0
        elif request.method == "POST":
            try:
                data = await request.json()
                if not isinstance(data, dict) or set(data) - {"resolve", "download", "corrupt"}:
                    raise ValueError("send an object with 'resolve', 'download' and/or 'corrupt'")
                corrupt = data.get("corrupt", sim.corrupt_downloads)
                if not isinstance(corrupt, int) or corrupt < 0:
                    raise ValueError("corrupt must be a non-negative integer")
                for key in ("resolve", "download"):  # all checked before anything changes
                    if key in data:
                        FaultPlan().apply(data[key])
                if "resolve" in data:
                    sim.media_faults.apply(data["resolve"])
                if "download" in data:
                    sim.download_faults.apply(data["download"])
                sim.corrupt_downloads = corrupt
            except ValueError as exc:
                return _json({"error": str(exc)}, 400)
        return _json(
            {
                "resolve": sim.media_faults.to_dict(),
                "download": sim.download_faults.to_dict(),
                "corrupt": sim.corrupt_downloads,
            }
        )

    async def sim_media(request: Request) -> Response:
        # Local-only preview for the chat page; the Graph download route keeps its bearer check.
        item = sim.media(request.path_params["media_id"])
        if item is None:
            return Response(status_code=404)
        return Response(item.data, media_type=item.mime_type)

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            return Response(status_code=404)
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.stop()

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", asset, methods=["GET"]),
        Route("/_sim/state", sim_state, methods=["GET"]),
        Route("/_sim/reset", sim_reset, methods=["POST"]),
        Route("/_sim/faults", sim_faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sim/media-faults", sim_media_faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sim/users", sim_users, methods=["GET"]),
        Route("/_sim/users/{wa_id}/messages", sim_user_message, methods=["POST"]),
        Route("/_sim/users/{wa_id}/chat", sim_chat, methods=["GET"]),
        Route("/_sim/media/{media_id}", sim_media, methods=["GET"]),
        Route("/media/{media_id}", download_media, methods=["GET"]),
        Route("/{version}/{phone_number_id}/messages", send_message, methods=["POST"]),
        Route("/{version}/{phone_number_id}/media", upload_media, methods=["POST"]),
        Route("/{version}/{media_id}", media_object, methods=["GET", "DELETE"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def run_simulator(sim: Simulator, host: str, port: int) -> None:
    """Serve the simulator with uvicorn until cancelled (then shut down gracefully)."""
    import uvicorn  # imported here: only the CLI/demo path needs a server

    config = uvicorn.Config(
        create_simulator_app(sim), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    await sim.start()
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.wait({serving})
        serving.result()
    except asyncio.CancelledError:
        server.should_exit = True
        await serving
        raise
    finally:
        await sim.stop()
