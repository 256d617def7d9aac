"""Voice notes to text through an OpenAI-compatible ``POST {base_url}/audio/transcriptions``.

The request is OpenAI's: multipart form data with the audio as ``file`` (a filename whose suffix
names the format), ``model`` and ``response_format=json``; the answer is ``{"text": "…"}``. Any
server that speaks it works (OpenAI's whisper-1 or gpt-4o-transcribe, a self-hosted
faster-whisper or whisper.cpp server, …). One pooled ``httpx.AsyncClient`` per process.

Failures are data: :class:`TranscriptionError` says whether trying again may help (network,
timeouts, 429 and 5xx) or not (a format the server refuses, a bad key). The voice note then reaches
the agent as a placeholder it can answer.
"""

from __future__ import annotations

import logging
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from warelay.config import LLMSettings, TranscriptionSettings
from warelay.errors import WarelayError

__all__ = ["Transcriber", "TranscriptionError", "audio_filename", "transcriber_from_settings"]

log = logging.getLogger("warelay.media")

_OPENAI_URL: Final = "https://api.openai.com/v1"
_SUFFIXES: Final = {
    "audio/ogg": ".ogg",
    "audio/opus": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/mp4": ".m4a",
    "audio/m4a": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/aac": ".aac",
    "audio/amr": ".amr",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/webm": ".webm",
    "audio/flac": ".flac",
}


class TranscriptionError(WarelayError):
    """The transcription endpoint did not give a transcript; ``transient`` when a retry may succeed."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


def audio_filename(mime_type: str | None) -> str:
    """A filename whose suffix tells the server the audio format (``voice.ogg`` for WhatsApp voice notes)."""
    base = (mime_type or "").split(";")[0].strip().lower()
    return "voice" + _SUFFIXES.get(base, ".ogg")


class Transcriber:
    """Calls one OpenAI-compatible transcription endpoint."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        language: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/audio/transcriptions"
        self.model = model
        self.language = language
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # The key lives in the client's headers only; it is never part of a message or a log line.
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport)

    async def transcribe(self, data: bytes, *, mime_type: str | None) -> str:
        """The transcript of an audio file (may be empty for silence)."""
        form: dict[str, Any] = {"model": self.model, "response_format": "json"}
        if self.language:
            form["language"] = self.language
        files = {"file": (audio_filename(mime_type), data, (mime_type or "audio/ogg").split(";")[0].strip())}
        try:
            response = await self._http.post(self.url, data=form, files=files)
        except httpx.HTTPError as exc:
            raise TranscriptionError(
                f"transcription request failed: {type(exc).__name__}", transient=True
            ) from exc
        status = response.status_code
        if status != 200:
            transient = status == 429 or status >= 500 or status == 408
            raise TranscriptionError(
                f"transcription endpoint answered HTTP {status}{_error_message(response)}",
                transient=transient,
                status=status,
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise TranscriptionError(
                "transcription endpoint answered with invalid JSON", transient=True
            ) from exc
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise TranscriptionError("transcription endpoint answered without a text", transient=False)
        return text.strip()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


def _error_message(response: httpx.Response) -> str:
    # OpenAI's error shape: {"error": {"message": ...}}; a message, never the request, is logged.
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f": {str(message)[:200]}" if message else ""


def transcriber_from_settings(
    settings: TranscriptionSettings, llm: LLMSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Transcriber | None:
    """The configured transcriber, or None when voice notes cannot be transcribed.

    Without a ``base_url`` of its own, transcription borrows the llm endpoint only when that is
    OpenAI itself (a key and no other base URL): other OpenAI-compatible chat servers (Ollama, vLLM,
    …) rarely serve ``/audio/transcriptions``, and every voice note would fail against them.
    """
    if settings.base_url:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        base_url = settings.base_url
    elif settings.use_llm_endpoint and llm.api_key is not None and _is_openai(llm.base_url):
        key = (settings.api_key or llm.api_key).get_secret_value()
        base_url = _OPENAI_URL
    else:
        return None
    return Transcriber(
        base_url=base_url,
        model=settings.model,
        api_key=key,
        language=settings.language,
        timeout=settings.timeout_seconds,
        transport=transport,
    )


def _is_openai(base_url: str | None) -> bool:
    return base_url is None or urlsplit(base_url).hostname == "api.openai.com"
