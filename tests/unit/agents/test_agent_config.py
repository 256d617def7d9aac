"""Agent configurations: validated before storing, secrets encrypted at rest, merged and unset by key."""

from __future__ import annotations

import json

import pytest

from warelay.agents.config import AgentConfig, AgentConfigError, EmbeddingsConfig, language_name
from warelay.crypto import SecretBox

BOX = SecretBox(["c" * 32])


def test_a_full_configuration_is_accepted() -> None:
    config = AgentConfig.parse(
        {
            "business_name": "Acme Coffee",
            "model": "gpt-4o-mini",
            "base_url": "https://llm.example/v1",
            "api_key": "sk-secret-123",
            "temperature": 0.2,
            "max_tokens": 300,
            "system_prompt": "You help {user_name} on behalf of {business_name}.",
            "history_window": 6,
            "tools": ["buttons", "state", "buttons"],
            "reply_language": "es",
            "acknowledgement": "Un momento…",
            "fallback_text": "Lo siento, inténtalo más tarde.",
            "unknown_text": {"spanish": "No lo sé.", "english": "I don't know."},
            "timeout_seconds": 20,
            "abort_on_newer": False,
            "burst_window_ms": 1500,
        }
    )
    assert config.tools == ["buttons", "state"]  # duplicates dropped, order kept
    assert language_name(config.reply_language) == "Spanish"
    assert language_name("auto") is None


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"temprature": 0.2}, "temprature: unknown key; known keys: business_name"),
        ({"temperature": 3}, "temperature: Input should be less than or equal to 2"),
        ({"tools": ["carousel"]}, "tools.0: Input should be"),
        ({"reply_language": "xx"}, "unknown language 'xx'"),
        ({"base_url": "ftp://x"}, "base_url: String should match pattern"),
        ({"burst_window_ms": -1}, "burst_window_ms: Input should be greater than or equal to 0"),
        ({"fallback_text": ""}, "fallback_text: String should have at least 1 character"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(values: dict[str, object], problem: str) -> None:
    with pytest.raises(AgentConfigError, match="invalid agent configuration") as error:
        AgentConfig.parse(values)
    assert problem in str(error.value)


def test_api_keys_are_stored_encrypted_and_read_back() -> None:
    config = AgentConfig.parse({"api_key": "sk-secret-123", "embeddings": {"api_key": "emb-secret-456"}})
    stored = config.stored(BOX)
    text = json.dumps(stored)
    assert "sk-secret-123" not in text
    assert "emb-secret-456" not in text
    assert "api_key" not in stored
    assert "api_key_enc" in stored
    back = AgentConfig.from_stored(stored, BOX)
    assert back.api_key is not None
    assert back.api_key.get_secret_value() == "sk-secret-123"
    assert isinstance(back.embeddings, EmbeddingsConfig)
    assert back.embeddings.api_key is not None
    assert back.embeddings.api_key.get_secret_value() == "emb-secret-456"
    assert back.public()["api_key"] == "********"
    assert "sk-secret-123" not in repr(back)
    with pytest.raises(AgentConfigError, match="needs WARELAY_SECRET_KEY"):
        AgentConfig.from_stored(stored, None)


def test_merge_keeps_other_keys_and_unset_returns_to_the_default() -> None:
    config = AgentConfig.parse({"model": "a", "temperature": 0.1, "api_key": "sk-1"})
    changed = config.merged({"temperature": 0.7}, unset=("model",))
    assert changed.model is None
    assert changed.temperature == 0.7
    assert changed.api_key is not None
    assert changed.api_key.get_secret_value() == "sk-1"
    with pytest.raises(AgentConfigError, match="unknown keys"):
        config.merged({}, unset=("nonsense",))


def test_runtime_values_leave_out_what_is_not_set() -> None:
    runtime = AgentConfig.parse({"temperature": 0.5}).runtime()
    assert runtime == {"temperature": 0.5}


def test_embeddings_can_be_tuned_or_turned_off_per_agent() -> None:
    tuned = AgentConfig.parse({"embeddings": {"model": "text-embedding-3-small", "dimensions": 256}})
    assert tuned.stored(BOX) == {"embeddings": {"model": "text-embedding-3-small", "dimensions": 256}}
    off = AgentConfig.parse({"embeddings": False})
    assert off.stored(BOX) == {"embeddings": False}
    assert AgentConfig.from_stored(off.stored(BOX), BOX).embeddings is False
