"""Meta Graph API errors as data: one class per error code (or family), found through a registry.

Where it sits in the path::

    outbound sender ──▶ cloud client ──POST /messages──▶ Graph API
    retry / dead-letter ◀── error_from_response() ◀── HTTP error + {"error": {...}}

The outbound stage never reads message text: it reads the class (``transient``), ``retry_after``,
``per_recipient`` and the flags below. Codes and actions follow protocol A10 (Meta's error-code reference,
developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes). Unknown codes fall
back on the HTTP status and Graph's ``is_transient``.

::

    CloudApiError (mixin carrying Meta's fields)
    ├── transient: RateLimitError (130429, 131056 per recipient, 4/80007, bare HTTP 429),
    │              ServiceUnavailableError (1, 2, 131016, 133004), MaintenanceModeError (131057),
    │              GenericServerError (131000), UnknownTransientError, NetworkError
    └── permanent: InvalidParameterError, Reengagement/Undeliverable/…, MediaError, TemplateError,
                   AuthError (190, 0, 3, 10, 200-299), AccountRestrictedError, UnknownPermanentError
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Final

import aiohttp
import httpx

from warelay.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError

__all__ = [
    "AUTH_CODES",
    "ERROR_CLASSES",
    "AccessTokenError",
    "AccountRestrictedError",
    "ApiPermissionError",
    "AuthError",
    "BusinessPaymentError",
    "CloudApiError",
    "ExperimentGroupError",
    "GenericServerError",
    "GraphRateLimitError",
    "InvalidParameterError",
    "MaintenanceModeError",
    "MarketingOptOutError",
    "MarketingWithheldError",
    "MediaDownloadError",
    "MediaError",
    "MediaUploadError",
    "NetworkError",
    "NetworkTimeoutError",
    "NumberNotRegisteredError",
    "PairRateLimitError",
    "RateLimitError",
    "RecipientNotAllowedError",
    "ReengagementError",
    "ServiceUnavailableError",
    "SpamRateLimitError",
    "TemplateDisabledError",
    "TemplateError",
    "TemplateNotFoundError",
    "TemplateParamMismatchError",
    "TemplatePausedError",
    "ThroughputLimitError",
    "TooManyRequestsError",
    "UndeliverableError",
    "UnknownPermanentError",
    "UnknownTransientError",
    "UnsupportedMessageTypeError",
    "error_class_for",
    "error_from_exception",
    "error_from_response",
    "is_auth_error",
]

AUTH_CODES: Final = frozenset({0, 3, 10, 190, *range(200, 300)})
"""Codes that mean the access token or its permissions are wrong (protocol A10)."""


class CloudApiError(DeliveryError):
    """An error reported by the Graph API; the class says what to do, the instance carries Meta's fields."""

    code: int | None = None
    codes: ClassVar[frozenset[int]] = frozenset()
    recipient_scoped: ClassVar[bool] = False
    """The limit concerns one recipient only: back off that user, keep sending to others."""
    pauses_number: ClassVar[bool] = False
    """The business number cannot send until an operator acts (token, permissions, account lock)."""
    alerts: ClassVar[bool] = False
    """An operator should be told."""
    needs_template: ClassVar[bool] = False
    """Free-form messages are refused; only an approved template can reach the user."""
    max_attempts: ClassVar[int | None] = None
    """A cap on attempts for this error, below the sender's own default; None leaves the default."""
    backoff_base: ClassVar[float | None] = None
    """Suggested exponential backoff base in seconds (base**attempt), when Meta suggests one."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        details: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        per_recipient: bool | None = None,
        error_type: str | None = None,
        error_subcode: int | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            code=type(self).code if code is None else code,
            details=details,
            http_status=http_status,
            retry_after=retry_after,
            per_recipient=self.recipient_scoped if per_recipient is None else per_recipient,
        )
        self.error_type = error_type
        self.error_subcode = error_subcode
        self.fbtrace_id = fbtrace_id

    def as_dict(self) -> dict[str, object]:
        """The error as stored, with Meta's subcode and trace id for support requests."""
        data = super().as_dict()
        data["error_subcode"] = self.error_subcode
        data["fbtrace_id"] = self.fbtrace_id
        return data


# ------------------------------------------------------------------------------------------ transient


class RateLimitError(CloudApiError, TransientDeliveryError):
    """Family: a throughput or rate limit was hit; back off and retry."""


class ThroughputLimitError(RateLimitError):
    """130429: the number's throughput (80/s by default) is exceeded; queue and retry."""

    code = 130429
    codes = frozenset({130429})


class PairRateLimitError(RateLimitError):
    """131056: too many messages to one user (about one per 6 s); back off that user only (4^n s)."""

    code = 131056
    codes = frozenset({131056})
    recipient_scoped = True
    backoff_base = 4.0


class GraphRateLimitError(RateLimitError):
    """4 / 80007: the app's Graph call limit or the WhatsApp Business Account's rate limit."""

    code = 4
    codes = frozenset({4, 80007})


class TooManyRequestsError(RateLimitError):
    """HTTP 429 with no Graph error code: some rate limit on the way to Graph."""


class ServiceUnavailableError(CloudApiError, TransientDeliveryError):
    """1 / 2 / 131016 / 133004: Graph is unavailable or failed temporarily; retry with backoff."""

    code = 131016
    codes = frozenset({1, 2, 131016, 133004})


class MaintenanceModeError(CloudApiError, TransientDeliveryError):
    """131057: the number is in maintenance (for example a throughput upgrade, about a minute)."""

    code = 131057
    codes = frozenset({131057})


class GenericServerError(CloudApiError, TransientDeliveryError):
    """131000: "something went wrong"; worth a few retries, not many."""

    code = 131000
    codes = frozenset({131000})
    max_attempts = 3


class UnknownTransientError(CloudApiError, TransientDeliveryError):
    """A code warelay does not know, on a 5xx/429 or marked ``is_transient``; or a 5xx with no JSON."""


class NetworkError(CloudApiError, TransientDeliveryError):
    """No usable response: connection refused or reset, TLS failure, protocol error."""

    def __init__(self, message: str, *, maybe_delivered: bool, details: str | None = None) -> None:
        super().__init__(message, details=details)
        self.maybe_delivered = maybe_delivered
        """False only when the request surely never left (connect failure, no pool slot)."""


class NetworkTimeoutError(NetworkError):
    """The request timed out; after a read timeout Graph may still have accepted it."""


# ------------------------------------------------------------------------------------------ permanent


class InvalidParameterError(CloudApiError, PermanentDeliveryError):
    """100 / 131008 / 131009: a missing or invalid parameter; fix the payload, don't retry."""

    code = 131009
    codes = frozenset({100, 131008, 131009})


class SpamRateLimitError(CloudApiError, PermanentDeliveryError):
    """131048: sends are limited for quality (spam); stop non-essential sends and alert."""

    code = 131048
    codes = frozenset({131048})
    alerts = True


class MarketingWithheldError(CloudApiError, PermanentDeliveryError):
    """131049: a marketing message was withheld for ecosystem health; don't retry soon."""

    code = 131049
    codes = frozenset({131049})


class ReengagementError(CloudApiError, PermanentDeliveryError):
    """131047: more than 24 h since the user last wrote; send an approved template or wait for them."""

    code = 131047
    codes = frozenset({131047})
    needs_template = True


class UndeliverableError(CloudApiError, PermanentDeliveryError):
    """131026: the user cannot receive it (not on WhatsApp, old app, terms not accepted, blocked)."""

    code = 131026
    codes = frozenset({131026})


class RecipientNotAllowedError(CloudApiError, PermanentDeliveryError):
    """131021 / 131030: the recipient is the sender, or not on a test number's allowed list."""

    code = 131030
    codes = frozenset({131021, 131030})


class UnsupportedMessageTypeError(CloudApiError, PermanentDeliveryError):
    """131051: the message type is not supported."""

    code = 131051
    codes = frozenset({131051})


class MarketingOptOutError(CloudApiError, PermanentDeliveryError):
    """131050: the user stopped marketing messages; honour the opt-out."""

    code = 131050
    codes = frozenset({131050})


class ExperimentGroupError(CloudApiError, PermanentDeliveryError):
    """130472: the user is in a marketing experiment group; no retry."""

    code = 130472
    codes = frozenset({130472})


class MediaError(CloudApiError, PermanentDeliveryError):
    """Family: media could not be fetched or uploaded; re-upload, or fall back to a link."""


class MediaDownloadError(MediaError):
    """131052: media download error."""

    code = 131052
    codes = frozenset({131052})


class MediaUploadError(MediaError):
    """131053: media upload error (for example a link Meta could not fetch, or a bad file)."""

    code = 131053
    codes = frozenset({131053})


class TemplateError(CloudApiError, PermanentDeliveryError):
    """Family: the template or its parameters are wrong; fix the template, don't retry as is."""


class TemplateParamMismatchError(TemplateError):
    """132000: the number of parameters does not match the template."""

    code = 132000
    codes = frozenset({132000})


class TemplateNotFoundError(TemplateError):
    """132001: the template does not exist in that language, or is not approved."""

    code = 132001
    codes = frozenset({132001})


class TemplatePausedError(TemplateError):
    """132015: the template is paused for low quality."""

    code = 132015
    codes = frozenset({132015})


class TemplateDisabledError(TemplateError):
    """132016: the template is disabled for low quality."""

    code = 132016
    codes = frozenset({132016})


class AuthError(CloudApiError, PermanentDeliveryError):
    """Family: the token or its permissions are wrong; alert and pause the number."""

    pauses_number = True
    alerts = True


class AccessTokenError(AuthError):
    """190: the access token expired or was invalidated; refresh or rotate it."""

    code = 190
    codes = frozenset({190})


class ApiPermissionError(AuthError):
    """0 / 3 / 10 / 200-299: authentication failed or a permission is missing."""

    code = 10
    codes = AUTH_CODES - {190}


class AccountRestrictedError(CloudApiError, PermanentDeliveryError):
    """368 / 131031: the account is restricted or locked for a policy violation; alert and pause."""

    code = 131031
    codes = frozenset({368, 131031})
    pauses_number = True
    alerts = True


class BusinessPaymentError(CloudApiError, PermanentDeliveryError):
    """131042: a problem with the business's payment method; alert and pause."""

    code = 131042
    codes = frozenset({131042})
    pauses_number = True
    alerts = True


class NumberNotRegisteredError(CloudApiError, PermanentDeliveryError):
    """133010: the business phone number is not registered with the Cloud API; alert and pause."""

    code = 133010
    codes = frozenset({133010})
    pauses_number = True
    alerts = True


class UnknownPermanentError(CloudApiError, PermanentDeliveryError):
    """A code warelay does not know on a 4xx, not marked transient; or a 4xx with no Graph error."""


# ------------------------------------------------------------------------------------------- registry


def _build_registry(*classes: type[CloudApiError]) -> dict[int, type[CloudApiError]]:
    registry: dict[int, type[CloudApiError]] = {}
    for cls in classes:
        for code in cls.codes:
            if code in registry:
                raise RuntimeError(f"error code {code} registered twice ({registry[code]!r}, {cls!r})")
            registry[code] = cls
    return registry


ERROR_CLASSES: Final[Mapping[int, type[CloudApiError]]] = _build_registry(
    ThroughputLimitError,
    PairRateLimitError,
    GraphRateLimitError,
    ServiceUnavailableError,
    MaintenanceModeError,
    GenericServerError,
    InvalidParameterError,
    SpamRateLimitError,
    MarketingWithheldError,
    ReengagementError,
    UndeliverableError,
    RecipientNotAllowedError,
    UnsupportedMessageTypeError,
    MarketingOptOutError,
    ExperimentGroupError,
    MediaDownloadError,
    MediaUploadError,
    TemplateParamMismatchError,
    TemplateNotFoundError,
    TemplatePausedError,
    TemplateDisabledError,
    AccessTokenError,
    ApiPermissionError,
    AccountRestrictedError,
    BusinessPaymentError,
    NumberNotRegisteredError,
)
"""Meta error code → the class that knows what to do about it."""


def error_class_for(code: int | None) -> type[CloudApiError] | None:
    """The registered class for a Meta error code, or None when warelay does not know the code."""
    return None if code is None else ERROR_CLASSES.get(code)


def error_from_response(
    status_code: int,
    body: bytes | dict[str, Any] | None,
    headers: Mapping[str, str] | None = None,
) -> DeliveryError:
    """Turn a failed Graph response into the error class for its code (never judged by message text)."""
    retry_after = _retry_after(headers)
    error = _error_object(body)
    if error is None:
        fallback: type[CloudApiError]
        if status_code == 429:
            fallback = TooManyRequestsError
        elif status_code >= 500:
            fallback = UnknownTransientError
        else:
            fallback = UnknownPermanentError
        return fallback(
            f"Graph API returned HTTP {status_code} without an error object",
            http_status=status_code,
            retry_after=retry_after,
        )

    code = _as_int(error.get("code"))
    cls = error_class_for(code)
    if cls is None:
        if code is None and status_code == 429:
            cls = TooManyRequestsError
        elif status_code >= 500 or status_code == 429 or error.get("is_transient") is True:
            cls = UnknownTransientError
        else:
            cls = UnknownPermanentError
    message = error.get("message")
    error_type = error.get("type")
    fbtrace_id = error.get("fbtrace_id")
    return cls(
        message if isinstance(message, str) and message else f"Graph API error (HTTP {status_code})",
        code=code,
        details=_details(error),
        http_status=status_code,
        retry_after=retry_after,
        error_type=error_type if isinstance(error_type, str) else None,
        error_subcode=_as_int(error.get("error_subcode")),
        fbtrace_id=fbtrace_id if isinstance(fbtrace_id, str) else None,
    )


def error_from_exception(exc: httpx.HTTPError) -> TransientDeliveryError:
    """Turn a network failure or timeout (no usable Graph response) into a transient error."""
    if isinstance(exc, httpx.HTTPStatusError):
        # A status error has a response whose body decides the class, and it may be permanent.
        raise TypeError("pass the response of an HTTPStatusError to error_from_response()") from exc
    # Only these guarantee the request never reached Graph; anything later may have been accepted.
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    cls = NetworkTimeoutError if isinstance(exc, httpx.TimeoutException) else NetworkError
    reason = str(exc)
    return cls(
        f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__,
        maybe_delivered=not never_sent,
        details=type(exc).__name__,
    )


def error_from_client_exception(exc: aiohttp.ClientError | TimeoutError) -> TransientDeliveryError:
    """Turn an aiohttp failure or timeout (no usable Graph response) into a transient error."""
    # Only a failed connect guarantees the request never reached Graph; anything later may have been
    # accepted (a read timeout after Graph took the message, say).
    never_sent = isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    cls = NetworkTimeoutError if isinstance(exc, TimeoutError) else NetworkError
    reason = str(exc)
    return cls(
        f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__,
        maybe_delivered=not never_sent,
        details=type(exc).__name__,
    )


def is_auth_error(err: DeliveryError) -> bool:
    """Whether the error means the token or its permissions are wrong (190, 0, 3, 10, 200-299)."""
    return isinstance(err, AuthError) or (err.code is not None and err.code in AUTH_CODES)


# ------------------------------------------------------------------------------------------ internals


def _error_object(body: bytes | dict[str, Any] | None) -> dict[str, Any] | None:
    data: object = body
    if isinstance(body, bytes | bytearray):
        try:
            data = json.loads(body)
        except ValueError:  # also UnicodeDecodeError: a proxy's HTML page, an empty body
            return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    return error if isinstance(error, dict) else None


def _details(error: Mapping[str, Any]) -> str | None:
    data = error.get("error_data")
    if isinstance(data, str):
        # Graph sometimes sends error_data as a JSON-encoded string rather than an object.
        try:
            data = json.loads(data)
        except ValueError:
            return data or None
    if isinstance(data, dict):
        details = data.get("details")
        if isinstance(details, str) and details:
            return details
    user_message = error.get("error_user_msg")
    return user_message if isinstance(user_message, str) and user_message else None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None and not isinstance(headers, httpx.Headers):
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    # A day at most: a broken proxy's huge value must not park a conversation for good.
    return min(max(seconds, 0.0), 86400.0)
