"""Transcription over OpenAI's ``/audio/transcriptions``, the endpoint faked at the transport."""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from warelay.config import LLMSettings, TranscriptionSettings
from warelay.media.transcribe import (
    Transcriber,
    TranscriptionError,
    audio_filename,
    transcriber_from_settings,
)

VOICE = b"OggS\x00\x02" + bytes(range(200))


def parse_form(request: httpx.Request) -> dict[str, Any]:
    """The multipart form of a request: fields as text, the file as (filename, content type, bytes)."""
    raw = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode() + request.content
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    out: dict[str, Any] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        if part.get_filename():
            out[str(name)] = (part.get_filename(), part.get_content_type(), payload)
        else:
            out[str(name)] = payload.decode()
    return out


def transcriber(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Transcriber:
    options: dict[str, Any] = {
        "base_url": "https://stt.example/v1",
        "model": "whisper-1",
        "api_key": "sk-test",
    }
    options.update(kwargs)
    return Transcriber(transport=httpx.MockTransport(handler), **options)


async def test_the_request_is_openais_and_the_text_comes_back() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "  Two sourdough loaves for tomorrow, please.  "})

    stt = transcriber(handler, language="en")
    try:
        text = await stt.transcribe(VOICE, mime_type="audio/ogg; codecs=opus")
    finally:
        await stt.aclose()
    assert text == "Two sourdough loaves for tomorrow, please."
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://stt.example/v1/audio/transcriptions"
    assert request.headers["authorization"] == "Bearer sk-test"
    form = parse_form(request)
    assert form["model"] == "whisper-1"
    assert form["response_format"] == "json"
    assert form["language"] == "en"
    assert form["file"] == ("voice.ogg", "audio/ogg", VOICE)


async def test_no_key_sends_no_authorization_and_no_language_field() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "hi"})

    stt = transcriber(handler, api_key=None, base_url="http://127.0.0.1:9/v1/")
    try:
        assert await stt.transcribe(VOICE, mime_type="audio/mpeg") == "hi"
    finally:
        await stt.aclose()
    assert "authorization" not in seen[0].headers
    assert str(seen[0].url) == "http://127.0.0.1:9/v1/audio/transcriptions"
    form = parse_form(seen[0])
    assert "language" not in form
    assert form["file"][0] == "voice.mp3"


@pytest.mark.parametrize(
    ("status", "transient"), [(500, True), (503, True), (429, True), (408, True), (400, False), (401, False)]
)
async def test_http_errors_say_whether_to_retry(status: int, transient: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "Invalid file format.", "type": "x"}})

    stt = transcriber(handler)
    try:
        with pytest.raises(TranscriptionError) as info:
            await stt.transcribe(VOICE, mime_type="audio/ogg")
    finally:
        await stt.aclose()
    assert info.value.transient is transient
    assert info.value.status == status
    assert str(info.value) == f"transcription endpoint answered HTTP {status}: Invalid file format."
    assert "sk-test" not in str(info.value)


async def test_network_failures_are_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    stt = transcriber(handler)
    try:
        with pytest.raises(TranscriptionError) as info:
            await stt.transcribe(VOICE, mime_type="audio/ogg")
    finally:
        await stt.aclose()
    assert info.value.transient is True
    assert str(info.value) == "transcription request failed: ConnectError"


@pytest.mark.parametrize(
    ("body", "transient"),
    [(b"<html>gateway</html>", True), (json.dumps({"transcript": "x"}).encode(), False), (b"[1]", False)],
)
async def test_answers_without_a_text_are_errors(body: bytes, transient: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    stt = transcriber(handler)
    try:
        with pytest.raises(TranscriptionError) as info:
            await stt.transcribe(VOICE, mime_type="audio/ogg")
    finally:
        await stt.aclose()
    assert info.value.transient is transient


@pytest.mark.parametrize(
    ("mime", "name"),
    [
        ("audio/ogg; codecs=opus", "voice.ogg"),
        ("audio/mp4", "voice.m4a"),
        ("audio/aac", "voice.aac"),
        ("audio/amr", "voice.amr"),
        (None, "voice.ogg"),
        ("audio/x-unknown", "voice.ogg"),
    ],
)
def test_the_filename_names_the_format(mime: str | None, name: str) -> None:
    assert audio_filename(mime) == name


async def test_settings_with_a_base_url_win() -> None:
    stt = transcriber_from_settings(
        TranscriptionSettings(base_url="http://127.0.0.1:8080/v1", model="small", api_key=SecretStr("k")),
        LLMSettings(api_key=SecretStr("sk-llm")),
    )
    assert stt is not None
    await stt.aclose()
    assert stt.url == "http://127.0.0.1:8080/v1/audio/transcriptions"
    assert stt.model == "small"


async def test_openai_as_the_llm_endpoint_is_borrowed() -> None:
    stt = transcriber_from_settings(TranscriptionSettings(), LLMSettings(api_key=SecretStr("sk-llm")))
    assert stt is not None
    await stt.aclose()
    assert stt.url == "https://api.openai.com/v1/audio/transcriptions"
    assert stt.model == "whisper-1"


@pytest.mark.parametrize(
    ("transcription", "llm"),
    [
        (TranscriptionSettings(), LLMSettings()),  # no model at all
        (TranscriptionSettings(), LLMSettings(base_url="http://127.0.0.1:11434/v1")),  # Ollama
        (TranscriptionSettings(), LLMSettings(base_url="http://vllm:8000/v1", api_key=SecretStr("k"))),
        (TranscriptionSettings(use_llm_endpoint=False), LLMSettings(api_key=SecretStr("sk-llm"))),
    ],
)
def test_no_transcriber_unless_one_is_sound(transcription: TranscriptionSettings, llm: LLMSettings) -> None:
    assert transcriber_from_settings(transcription, llm) is None
