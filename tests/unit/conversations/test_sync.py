"""The pure parts of conversation sync: history merging, phone numbers, JSON that can be stored."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from warelay.conversations.sync import (
    HistoryEntry,
    InvalidRequestError,
    Role,
    check_json,
    js_time,
    merge_history,
    public_user_id,
    user_key,
)

T0 = datetime(2025, 12, 29, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def shown(entries: tuple[HistoryEntry, ...]) -> list[tuple[str, str]]:
    return [(e.role, e.content) for e in entries]


def test_transcript_entries_recording_whatsapp_messages_are_shown_once() -> None:
    messages: list[tuple[Role, str, datetime]] = [
        ("user", "Hola", at(0)),
        ("bot", "¡Hola! Bienvenido", at(1)),
        ("user", "sí", at(5)),
        ("user", "sí", at(9)),
    ]
    transcript: list[tuple[Role, str, datetime]] = [
        ("user", " Hola ", at(2)),  # recorded after it arrived, whitespace aside
        ("bot", "Perfecto", at(3)),  # the agent's own words, never sent through warelay
        ("user", "sí", at(10)),  # pairs with the first "sí"; a second one stays paired with nothing
    ]
    assert shown(merge_history(messages, transcript)) == [
        ("user", "Hola"),
        ("bot", "¡Hola! Bienvenido"),
        ("bot", "Perfecto"),
        ("user", "sí"),
        ("user", "sí"),
    ]


def test_an_entry_recorded_before_its_message_was_sent_is_not_doubled() -> None:
    transcript: list[tuple[Role, str, datetime]] = [("bot", "Total: S/ 50.00", at(1))]
    messages: list[tuple[Role, str, datetime]] = [
        ("user", "cuánto", at(0)),
        ("bot", "Total: S/ 50.00", at(4)),
    ]
    assert shown(merge_history(messages, transcript)) == [("user", "cuánto"), ("bot", "Total: S/ 50.00")]


def test_roles_must_match_to_pair_and_ties_go_to_whatsapp() -> None:
    messages: list[tuple[Role, str, datetime]] = [("user", "ok", at(0))]
    transcript: list[tuple[Role, str, datetime]] = [("bot", "ok", at(0))]
    assert shown(merge_history(messages, transcript)) == [("user", "ok"), ("bot", "ok")]


def test_the_window_keeps_the_newest_entries_oldest_first() -> None:
    messages: list[tuple[Role, str, datetime]] = [("user", f"m{n}", at(2 * n)) for n in range(5)]
    transcript: list[tuple[Role, str, datetime]] = [("bot", f"t{n}", at(2 * n + 1)) for n in range(5)]
    assert shown(merge_history(messages, transcript, limit=3)) == [
        ("bot", "t3"),
        ("user", "m4"),
        ("bot", "t4"),
    ]
    assert merge_history(messages, transcript, limit=0) == ()


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("+51999999999", "51999999999"),
        ("51999999999", "51999999999"),
        (" +51 999-999-999 ", "51999999999"),
        ("+1 (555) 123.4567", "15551234567"),
        ("US.13491208655302741918", "US.13491208655302741918"),  # a business-scoped user id
    ],
)
def test_user_keys_from_phone_numbers_and_user_ids(given: str, key: str) -> None:
    assert user_key(given) == key


@pytest.mark.parametrize("given", ["", "+", "123", "+51abc", "1" * 21, "+US.1349", "a b", "-51999999999x"])
def test_what_is_not_a_phone_number_is_refused(given: str) -> None:
    with pytest.raises(InvalidRequestError, match="not a phone number"):
        user_key(given)


def test_user_ids_and_times_are_shown_as_the_seed_shows_them() -> None:
    assert public_user_id("51999999999", "51999999999") == "+51999999999"
    assert public_user_id(None, "US.1349") == "US.1349"
    assert js_time(T0) == "2025-12-29T10:00:00.000Z"
    assert js_time(T0 + timedelta(microseconds=1500)) == "2025-12-29T10:00:00.001Z"


def test_json_a_database_cannot_store_is_refused() -> None:
    assert check_json({"a": [1, 2.5, "x", None, True]}, "context") == len('{"a":[1,2.5,"x",null,true]}')
    for bad, reason in (
        ({"total": math.nan}, "context.total is not a finite number"),
        ({"items": [1, math.inf]}, r"context.items\[1\] is not a finite number"),
        ({"note": "a\x00b"}, "context.note contains a NUL character"),
        ({"a\x00": 1}, "a key in context contains a NUL character"),
        ({"note": "a\ud800"}, "context.note is not valid Unicode"),
    ):
        with pytest.raises(InvalidRequestError, match=reason):
            check_json(bad, "context")
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(InvalidRequestError, match="nested more than"):
        check_json(deep, "context")
