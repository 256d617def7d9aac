"""Meta error codes → classes: every family of protocol A10, unknown codes, bodies that are not JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from warelay.channels.cloud.errors import (
    AUTH_CODES,
    ERROR_CLASSES,
    AccessTokenError,
    AccountRestrictedError,
    ApiPermissionError,
    AuthError,
    CloudApiError,
    ExperimentGroupError,
    GenericServerError,
    GraphRateLimitError,
    InvalidParameterError,
    MaintenanceModeError,
    MarketingOptOutError,
    MarketingWithheldError,
    MediaDownloadError,
    MediaError,
    MediaUploadError,
    NetworkError,
    NetworkTimeoutError,
    PairRateLimitError,
    RateLimitError,
    ReengagementError,
    ServiceUnavailableError,
    SpamRateLimitError,
    TemplateDisabledError,
    TemplateError,
    TemplateNotFoundError,
    TemplateParamMismatchError,
    TemplatePausedError,
    ThroughputLimitError,
    TooManyRequestsError,
    UndeliverableError,
    UnknownPermanentError,
    UnknownTransientError,
    UnsupportedMessageTypeError,
    error_class_for,
    error_from_exception,
    error_from_response,
    is_auth_error,
)
from warelay.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError

URL = "https://graph.facebook.com/v23.0/106540352242922/messages"


def graph_error(code: int | str | None, message: str = "boom", **extra: Any) -> dict[str, Any]:
    """A Graph error body shaped as in protocol A6."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "fbtrace_id": "AbCdEf123"}
    if code is not None:
        error["code"] = code
    error.update(extra)
    return {"error": error}


# (code, class, transient) — the table of protocol A10, one row per code.
A10 = [
    (130429, ThroughputLimitError, True),
    (131056, PairRateLimitError, True),
    (4, GraphRateLimitError, True),
    (80007, GraphRateLimitError, True),
    (131000, GenericServerError, True),
    (131016, ServiceUnavailableError, True),
    (1, ServiceUnavailableError, True),
    (2, ServiceUnavailableError, True),
    (131057, MaintenanceModeError, True),
    (131048, SpamRateLimitError, False),
    (131049, MarketingWithheldError, False),
    (131047, ReengagementError, False),
    (131026, UndeliverableError, False),
    (131051, UnsupportedMessageTypeError, False),
    (131008, InvalidParameterError, False),
    (131009, InvalidParameterError, False),
    (100, InvalidParameterError, False),
    (131052, MediaDownloadError, False),
    (131053, MediaUploadError, False),
    (132000, TemplateParamMismatchError, False),
    (132001, TemplateNotFoundError, False),
    (132015, TemplatePausedError, False),
    (132016, TemplateDisabledError, False),
    (190, AccessTokenError, False),
    (0, ApiPermissionError, False),
    (3, ApiPermissionError, False),
    (10, ApiPermissionError, False),
    (200, ApiPermissionError, False),
    (250, ApiPermissionError, False),
    (299, ApiPermissionError, False),
    (368, AccountRestrictedError, False),
    (131031, AccountRestrictedError, False),
    (130472, ExperimentGroupError, False),
    (131050, MarketingOptOutError, False),
]


@pytest.mark.parametrize(("code", "cls", "transient"), A10)
def test_every_a10_code_maps_to_its_class(code: int, cls: type[CloudApiError], transient: bool) -> None:
    # A 400 for every code: the class, not the HTTP status, decides for a known code.
    err = error_from_response(400, graph_error(code))
    assert type(err) is cls
    assert err.transient is transient
    assert isinstance(err, TransientDeliveryError if transient else PermanentDeliveryError)
    assert err.code == code
    assert error_class_for(code) is cls


def test_registry_is_consistent() -> None:
    for code, cls in ERROR_CLASSES.items():
        assert code in cls.codes
        assert cls.code in cls.codes
        assert issubclass(cls, TransientDeliveryError) != issubclass(cls, PermanentDeliveryError)
        assert cls.__doc__
    assert error_class_for(None) is None
    assert error_class_for(999_999) is None


def test_families_can_be_caught_together() -> None:
    assert issubclass(ThroughputLimitError, RateLimitError)
    assert issubclass(PairRateLimitError, RateLimitError)
    assert issubclass(MediaUploadError, MediaError)
    for cls in (
        TemplateParamMismatchError,
        TemplateNotFoundError,
        TemplatePausedError,
        TemplateDisabledError,
    ):
        assert issubclass(cls, TemplateError)
    assert issubclass(AccessTokenError, AuthError)
    assert issubclass(ApiPermissionError, AuthError)


def test_fields_of_the_graph_error_are_kept() -> None:
    body = graph_error(
        131009,
        "(#131009) Parameter value is not valid",
        error_subcode=2494010,
        error_data={"messaging_product": "whatsapp", "details": "Button title length invalid"},
    )
    err = error_from_response(400, json.dumps(body).encode())
    assert isinstance(err, InvalidParameterError)
    assert err.message == "(#131009) Parameter value is not valid"
    assert err.details == "Button title length invalid"
    assert err.http_status == 400
    assert err.error_subcode == 2494010
    assert err.fbtrace_id == "AbCdEf123"
    assert err.error_type == "OAuthException"
    assert err.as_dict() == {
        "code": 131009,
        "message": "(#131009) Parameter value is not valid",
        "details": "Button title length invalid",
        "http_status": 400,
        "transient": False,
        "error_subcode": 2494010,
        "fbtrace_id": "AbCdEf123",
    }


def test_class_is_picked_by_code_never_by_message_text() -> None:
    err = error_from_response(400, graph_error(100, "Rate limit hit, temporarily unavailable, try again"))
    assert isinstance(err, InvalidParameterError)
    assert not err.transient
    err = error_from_response(400, graph_error(130429, "Invalid parameter"))
    assert isinstance(err, ThroughputLimitError)


def test_pair_rate_limit_backs_off_the_recipient_only() -> None:
    err = error_from_response(400, graph_error(131056))
    assert err.per_recipient is True
    assert isinstance(err, PairRateLimitError)
    assert err.backoff_base == 4.0
    assert error_from_response(400, graph_error(130429)).per_recipient is False


def test_flags_for_the_sender() -> None:
    reengage = error_from_response(400, graph_error(131047))
    assert isinstance(reengage, ReengagementError)
    assert reengage.needs_template
    token = error_from_response(401, graph_error(190))
    assert isinstance(token, AccessTokenError)
    assert token.pauses_number
    assert token.alerts
    locked = error_from_response(400, graph_error(131031))
    assert isinstance(locked, AccountRestrictedError)
    assert locked.pauses_number
    generic = error_from_response(500, graph_error(131000))
    assert isinstance(generic, GenericServerError)
    assert generic.max_attempts == 3
    spam = error_from_response(400, graph_error(131048))
    assert isinstance(spam, SpamRateLimitError)
    assert spam.alerts
    assert not spam.pauses_number


def test_code_given_as_a_string_is_understood() -> None:
    assert isinstance(error_from_response(400, graph_error("131056")), PairRateLimitError)


def test_error_data_sent_as_a_json_string() -> None:
    body = graph_error(131053, error_data=json.dumps({"details": "Unsupported MIME type"}))
    err = error_from_response(400, body)
    assert err.details == "Unsupported MIME type"


# ---------------------------------------------------------------------------------------- unknown codes


@pytest.mark.parametrize(
    ("status", "extra", "expected"),
    [
        (500, {}, UnknownTransientError),
        (503, {}, UnknownTransientError),
        (400, {}, UnknownPermanentError),
        (403, {}, UnknownPermanentError),
        (400, {"is_transient": True}, UnknownTransientError),
        (400, {"is_transient": False}, UnknownPermanentError),
        (429, {}, UnknownTransientError),
    ],
)
def test_unknown_codes_follow_status_and_is_transient(
    status: int, extra: dict[str, Any], expected: type[DeliveryError]
) -> None:
    err = error_from_response(status, graph_error(987654, **extra))
    assert type(err) is expected
    assert err.code == 987654
    assert err.http_status == status


def test_is_transient_does_not_override_a_known_permanent_code() -> None:
    err = error_from_response(400, graph_error(131026, is_transient=True))
    assert isinstance(err, UndeliverableError)
    assert not err.transient


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", UnknownTransientError),
        (504, b"", UnknownTransientError),
        (500, None, UnknownTransientError),
        (503, b"\xff\xfe not utf-8", UnknownTransientError),
        (429, None, TooManyRequestsError),
        (429, b"Too Many Requests", TooManyRequestsError),
        (404, b"<html>Not Found</html>", UnknownPermanentError),
        (400, b"[1, 2, 3]", UnknownPermanentError),
        (400, {"error": "a string, not an object"}, UnknownPermanentError),
    ],
)
def test_bodies_without_a_graph_error(
    status: int, body: bytes | dict[str, Any] | None, expected: type
) -> None:
    err = error_from_response(status, body)
    assert type(err) is expected
    assert err.code is None
    assert err.http_status == status
    assert str(status) in err.message


def test_429_with_an_error_object_but_no_code_is_a_rate_limit() -> None:
    err = error_from_response(429, {"error": {"message": "slow down"}})
    assert isinstance(err, TooManyRequestsError)
    assert err.transient
    assert err.message == "slow down"


# ------------------------------------------------------------------------------------------ Retry-After


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"RETRY-AFTER": "7"}, 7.0),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_header(headers: dict[str, str] | None, expected: float | None) -> None:
    err = error_from_response(429, graph_error(130429), headers)
    assert err.retry_after == expected


def test_retry_after_as_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    err = error_from_response(503, None, {"Retry-After": format_datetime(when, usegmt=True)})
    assert err.retry_after is not None
    assert 100 <= err.retry_after <= 121


async def test_a_real_response_through_the_transport() -> None:
    body = graph_error(131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=body, headers={"Retry-After": "6"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        response = await client.post(URL, json={})
    err = error_from_response(response.status_code, response.content, response.headers)
    assert isinstance(err, PairRateLimitError)
    assert err.retry_after == 6.0
    assert err.per_recipient


# ------------------------------------------------------------------------------------------- network


async def _raise_through_transport(exc: Exception) -> httpx.HTTPError:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        try:
            await client.post(URL, json={})
        except httpx.HTTPError as raised:
            return raised
    raise AssertionError("the transport did not fail")


@pytest.mark.parametrize(
    ("exc", "cls", "maybe_delivered"),
    [
        (httpx.ConnectError("connection refused"), NetworkError, False),
        (httpx.ConnectTimeout("connect timed out"), NetworkTimeoutError, False),
        (httpx.PoolTimeout("no free connection"), NetworkTimeoutError, False),
        (httpx.ReadTimeout("read timed out"), NetworkTimeoutError, True),
        (httpx.WriteTimeout("write timed out"), NetworkTimeoutError, True),
        (httpx.ReadError("connection reset"), NetworkError, True),
        (httpx.RemoteProtocolError("server disconnected"), NetworkError, True),
    ],
)
async def test_network_failures_are_transient(
    exc: httpx.HTTPError, cls: type[NetworkError], maybe_delivered: bool
) -> None:
    raised = await _raise_through_transport(exc)
    err = error_from_exception(raised)
    assert type(err) is cls
    assert isinstance(err, TransientDeliveryError)
    assert err.transient
    assert err.code is None
    assert isinstance(err, NetworkError)
    assert err.maybe_delivered is maybe_delivered
    assert type(exc).__name__ in err.message


async def test_status_errors_must_go_through_error_from_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=graph_error(100))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        response = await client.post(URL, json={})
    with pytest.raises(httpx.HTTPStatusError) as info:
        response.raise_for_status()
    with pytest.raises(TypeError, match="error_from_response"):
        error_from_exception(info.value)


# ---------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("code", [190, 0, 3, 10, 200, 229, 299])
def test_auth_codes_are_auth_errors(code: int) -> None:
    err = error_from_response(401, graph_error(code))
    assert is_auth_error(err)
    assert isinstance(err, AuthError)
    assert not err.transient


@pytest.mark.parametrize("code", [1, 2, 4, 100, 300, 131056, 131026, 368])
def test_other_codes_are_not_auth_errors(code: int) -> None:
    assert not is_auth_error(error_from_response(400, graph_error(code)))


def test_is_auth_error_reads_the_code_of_any_delivery_error() -> None:
    assert is_auth_error(PermanentDeliveryError("token expired", code=190))
    assert not is_auth_error(PermanentDeliveryError("bad", code=None))
    assert not is_auth_error(error_from_response(500, None))
    assert frozenset({0, 3, 10, 190, *range(200, 300)}) == AUTH_CODES
