"""AI platform settings: seed 000's unprefixed variables, WARELAY_AI__* precedence, endpoints, validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from warelay.config import Settings, load_settings
from warelay.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("WARELAY_", "AI_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(Path(__file__).parent)  # no stray .env


def test_off_by_default() -> None:
    ai = Settings().ai
    assert ai.base_url is None
    assert ai.client_id is None
    assert ai.authorization_endpoint is None
    assert ai.token_endpoint is None
    assert ai.missing() == [
        "AI_BASE_URL (or WARELAY_AI__BASE_URL)",
        "AI_CLIENT_ID (or WARELAY_AI__CLIENT_ID)",
    ]
    assert ai.scope == "messaging"
    assert ai.client_auth_method == "none"


def test_seed_variables_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_BASE_URL", "https://your-ai-platform.com/")
    monkeypatch.setenv("AI_AGENT_BASE_URL", "https://api.your-ai-platform.com")
    monkeypatch.setenv("AI_CLIENT_ID", "innovasia")
    ai = Settings().ai
    assert ai.base_url == "https://your-ai-platform.com"
    assert ai.agent_base_url == "https://api.your-ai-platform.com"
    assert ai.client_id == "innovasia"
    assert ai.authorization_endpoint == "https://your-ai-platform.com/integration-request"
    assert ai.token_endpoint == "https://your-ai-platform.com/integration-token"
    assert ai.missing() == []


def test_prefixed_variables_win_over_the_seed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_BASE_URL", "https://seed.example")
    monkeypatch.setenv("AI_CLIENT_ID", "seed-client")
    monkeypatch.setenv("WARELAY_AI__BASE_URL", "https://warelay.example")
    monkeypatch.setenv("WARELAY_AI__AGENT_BASE_URL", "https://agent.example")
    ai = Settings().ai
    assert ai.base_url == "https://warelay.example"
    assert ai.agent_base_url == "https://agent.example"
    assert ai.client_id == "seed-client"  # the seed variable fills what the prefixed ones leave out


def test_overrides_and_confidential_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARELAY_AI__BASE_URL", "https://p.example")
    monkeypatch.setenv("WARELAY_AI__CLIENT_ID", "c")
    monkeypatch.setenv("WARELAY_AI__CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("WARELAY_AI__AUTHORIZE_URL", "https://login.p.example/authorize?tenant=x")
    monkeypatch.setenv("WARELAY_AI__TOKEN_URL", "https://login.p.example/token")
    monkeypatch.setenv("WARELAY_AI__REVOCATION_URL", "https://login.p.example/revoke")
    ai = Settings().ai
    assert ai.authorization_endpoint == "https://login.p.example/authorize?tenant=x"
    assert ai.token_endpoint == "https://login.p.example/token"
    assert ai.revocation_url == "https://login.p.example/revoke"
    assert ai.client_auth_method == "client_secret_post"
    assert "s3cret" not in repr(ai)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"WARELAY_AI__BASE_URL": "ftp://p.example"}, "ai.base_url"),
        ({"WARELAY_AI__BASE_URL": "https://p.example/?x=1"}, "ai.base_url"),
        ({"AI_BASE_URL": "not a url"}, "ai.base_url"),
        ({"WARELAY_AI__SCOPE": 'messaging "quoted"'}, "ai.scope"),
        ({"WARELAY_AI__SCOPE": ""}, "ai.scope"),
        (
            {"WARELAY_AI__TOKEN_ENDPOINT_AUTH_METHOD": "client_secret_basic"},
            "needs WARELAY_AI__CLIENT_SECRET",
        ),
        (
            {"WARELAY_AI__TOKEN_ENDPOINT_AUTH_METHOD": "none", "WARELAY_AI__CLIENT_SECRET": "x"},
            "sends no secret",
        ),
        ({"WARELAY_AI__TIMEOUT_SECONDS": "0"}, "ai.timeout_seconds"),
    ],
)
def test_bad_values_fail_fast(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=problem):
        load_settings()
