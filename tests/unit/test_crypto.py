"""Credential encryption with key rotation, and keyed API-key hashes."""

from __future__ import annotations

import pytest

from warelay.crypto import SecretBox, constant_time_equals, new_api_key
from warelay.errors import ConfigError

OLD, NEW = "o" * 32, "n" * 32


def test_encrypt_round_trip_and_not_plain() -> None:
    box = SecretBox([OLD])
    token = box.encrypt("EAAG-secret-token")
    assert "EAAG" not in token
    assert box.decrypt(token) == "EAAG-secret-token"
    assert box.encrypt_optional(None) is None
    assert box.decrypt_optional(None) is None


def test_rotation_first_encrypts_all_decrypt() -> None:
    old_token = SecretBox([OLD]).encrypt("v")
    rotated = SecretBox([NEW, OLD])
    assert rotated.decrypt(old_token) == "v"
    assert SecretBox([NEW]).decrypt(rotated.encrypt("w")) == "w"
    with pytest.raises(ConfigError):
        SecretBox([NEW]).decrypt(old_token)


def test_key_hashes_are_keyed_and_rotate() -> None:
    key = new_api_key()
    assert key.startswith("wrl_")
    assert len(key) > 40
    old_hash = SecretBox([OLD]).hash_key(key)
    assert len(old_hash) == 64
    assert key not in old_hash
    assert SecretBox([NEW]).hash_key(key) != old_hash
    assert old_hash in SecretBox([NEW, OLD]).key_hashes(key)


def test_no_secret_key_refused() -> None:
    with pytest.raises(ConfigError):
        SecretBox([])


def test_constant_time_equals() -> None:
    assert constant_time_equals("abc", "abc")
    assert not constant_time_equals("abc", "abd")
    assert constant_time_equals(b"x", "x")
