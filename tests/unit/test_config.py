"""Settings: env nesting, YAML, secrets, fail-fast validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from warelay.config import Settings, load_settings
from warelay.errors import ConfigError

KEY = "k" * 32


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WARELAY_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(Path(__file__).parent)  # no stray .env


def test_defaults() -> None:
    s = Settings()
    assert s.database_url == "sqlite+aiosqlite:///./warelay.db"
    assert s.whatsapp.api_version == "v23.0"
    assert s.whatsapp.graph_url == "https://graph.facebook.com"
    assert s.whatsapp.throughput_mps == 80
    assert s.conversations.history_window == 10
    assert s.conversations.expiry.total_seconds() == 24 * 3600
    assert s.agent_kind == "knowledge"
    assert s.max_body_bytes == 1024 * 1024


def test_env_nesting_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARELAY_WHATSAPP__PHONE_NUMBER_ID", "123")
    monkeypatch.setenv("WARELAY_WHATSAPP__ACCESS_TOKEN", "tok-secret")
    monkeypatch.setenv("WARELAY_WHATSAPP__THROUGHPUT_MPS", "1000")
    monkeypatch.setenv("WARELAY_WHATSAPP__GRAPH_URL", "http://127.0.0.1:9000/")
    monkeypatch.setenv("WARELAY_SECRET_KEY", KEY)
    s = Settings()
    assert s.whatsapp.phone_number_id == "123"
    assert s.whatsapp.throughput_mps == 1000
    assert s.whatsapp.graph_url == "http://127.0.0.1:9000"
    assert s.whatsapp.access_token is not None
    assert s.whatsapp.access_token.get_secret_value() == "tok-secret"
    assert "tok-secret" not in repr(s)
    assert "tok-secret" not in str(s.model_dump())


def test_openai_api_key_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    s = Settings()
    assert s.llm.api_key is not None
    assert s.llm.api_key.get_secret_value() == "sk-test"
    assert s.agent_kind == "llm"
    monkeypatch.setenv("WARELAY_LLM__API_KEY", "sk-own")
    assert Settings().llm.api_key.get_secret_value() == "sk-own"  # type: ignore[union-attr]


def test_yaml_file_below_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "warelay.yaml"
    config.write_text("whatsapp:\n  phone_number_id: '777'\n  throughput_mps: 200\nlog_level: DEBUG\n")
    monkeypatch.setenv("WARELAY_CONFIG", str(config))
    monkeypatch.setenv("WARELAY_WHATSAPP__THROUGHPUT_MPS", "300")
    s = Settings()
    assert s.whatsapp.phone_number_id == "777"
    assert s.whatsapp.throughput_mps == 300
    assert s.log_level == "DEBUG"


def test_missing_yaml_file_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARELAY_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WARELAY_SECRET_KEY", "short"),
        ("WARELAY_SECRET_KEY", KEY + ",short"),
        ("WARELAY_ADMIN_TOKEN", "tiny"),
        ("WARELAY_WHATSAPP__THROUGHPUT_MPS", "1001"),
        ("WARELAY_WHATSAPP__THROUGHPUT_MPS", "0"),
        ("WARELAY_WHATSAPP__API_VERSION", "23"),
        ("WARELAY_WHATSAPP__GRAPH_URL", "ftp://x"),
        ("WARELAY_WHATSAPP__TENANT", "Not A Subdomain"),
        ("WARELAY_MAX_BODY_BYTES", "10"),
    ],
)
def test_unsafe_values_fail_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="invalid configuration"):
        load_settings()


def test_secret_key_rotation_list() -> None:
    s = Settings(secret_key=f"{'a' * 32}, {'b' * 40}")
    assert s.secret_keys == ["a" * 32, "b" * 40]


def test_serving_requires_secret_key_and_app_secret() -> None:
    with pytest.raises(ConfigError, match="WARELAY_SECRET_KEY"):
        Settings().check_serving()
    no_secret = Settings(secret_key=KEY, whatsapp={"phone_number_id": "1", "access_token": "t"})
    with pytest.raises(ConfigError, match="APP_SECRET"):
        no_secret.check_serving()
    Settings(
        secret_key=KEY,
        whatsapp={"phone_number_id": "1", "access_token": "t", "insecure_skip_signature": True},
    ).check_serving()
    Settings(
        secret_key=KEY, whatsapp={"phone_number_id": "1", "access_token": "t", "app_secret": "s"}
    ).check_serving()
