"""The media settings: defaults from Meta's limits, environment names, and refusals of unsafe values."""

from __future__ import annotations

from pathlib import Path

import pytest

from warelay.config import MediaSettings, Settings, load_settings
from warelay.errors import ConfigError


def test_defaults_follow_metas_limits() -> None:
    media = Settings().media
    assert media.enabled is True
    assert media.directory == Path("media")
    assert media.s3.bucket is None
    assert media.retention_days == 30
    mb = 1024 * 1024
    limits = {kind: media.max_bytes(kind) for kind in ("image", "audio", "video", "document", "sticker")}
    assert limits == {
        "image": 5 * mb,
        "audio": 16 * mb,
        "video": 16 * mb,
        "document": 100 * mb,
        "sticker": 500 * 1024,
    }
    assert media.transcription.model == "whisper-1"
    assert media.transcription.base_url is None
    assert media.unsupported_text.startswith("Sorry")


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "WARELAY_MEDIA__DIRECTORY": str(tmp_path / "files"),
        "WARELAY_MEDIA__RETENTION_DAYS": "7",
        "WARELAY_MEDIA__MAX_IMAGE_BYTES": "1000000",
        "WARELAY_MEDIA__DOCUMENT_TEXT_CHARS": "5000",
        "WARELAY_MEDIA__S3__BUCKET": "shop-media",
        "WARELAY_MEDIA__S3__ENDPOINT_URL": "http://127.0.0.1:9000",
        "WARELAY_MEDIA__S3__SECRET_ACCESS_KEY": "s3-secret-value",
        "WARELAY_MEDIA__S3__PREFIX": "tenant-a/media/",
        "WARELAY_MEDIA__TRANSCRIPTION__BASE_URL": "http://127.0.0.1:8080/v1",
        "WARELAY_MEDIA__TRANSCRIPTION__API_KEY": "stt-secret-value",
        "WARELAY_MEDIA__TRANSCRIPTION__LANGUAGE": "pt",
        "WARELAY_MEDIA__UNSUPPORTED_TEXT": "Só consigo ler texto, fotos e áudios.",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    media = load_settings().media
    assert media.directory == tmp_path / "files"
    assert media.retention_days == 7
    assert media.max_bytes("image") == 1_000_000
    assert media.document_text_chars == 5000
    assert media.s3.bucket == "shop-media"
    assert media.s3.prefix == "tenant-a/media/"
    assert media.transcription.language == "pt"
    assert media.unsupported_text == "Só consigo ler texto, fotos e áudios."
    assert media.s3.secret_access_key is not None
    assert media.s3.secret_access_key.get_secret_value() == "s3-secret-value"
    dumped = repr(media)
    assert "s3-secret-value" not in dumped
    assert "stt-secret-value" not in dumped


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WARELAY_MEDIA__RETENTION_DAYS", "0"),
        ("WARELAY_MEDIA__MAX_AUDIO_BYTES", "0"),
        ("WARELAY_MEDIA__S3__PREFIX", "../escape/"),
        ("WARELAY_MEDIA__S3__PREFIX", "no-trailing-slash"),
        ("WARELAY_MEDIA__S3__ENDPOINT_URL", "ftp://files"),
        ("WARELAY_MEDIA__TRANSCRIPTION__BASE_URL", "localhost:8080"),
        ("WARELAY_MEDIA__UNSUPPORTED_TEXT", ""),
        ("WARELAY_MEDIA__DOWNLOAD_ATTEMPTS", "0"),
    ],
)
def test_unsafe_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="media"):
        load_settings()


def test_max_bytes_knows_only_media_types() -> None:
    with pytest.raises(AttributeError):
        MediaSettings().max_bytes("location")
