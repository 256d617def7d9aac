"""Secrets at rest: encryption for stored credentials, keyed hashes for API keys.

Every key is derived with HKDF-SHA256 from ``WARELAY_SECRET_KEY``, with a different ``info`` per
purpose, so one configured secret never serves two uses. A comma-separated list rotates keys: the
first encrypts and hashes new values; all of them decrypt and verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as stdlib_secrets
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from warelay.errors import ConfigError

_FERNET_INFO = b"warelay/fernet/v1"
_HASH_INFO = b"warelay/api-key-hmac/v1"
API_KEY_PREFIX = "wrl_"


def _derive(secret: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode())


class SecretBox:
    """Encrypts and decrypts stored credentials; hashes and checks API keys."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        if not secret_keys:
            raise ConfigError("WARELAY_SECRET_KEY is required to store credentials")
        self._fernet = MultiFernet(
            [Fernet(base64.urlsafe_b64encode(_derive(k, _FERNET_INFO))) for k in secret_keys]
        )
        self._hash_keys = [_derive(k, _HASH_INFO) for k in secret_keys]

    def encrypt(self, value: str) -> str:
        """Encrypt a credential with the newest key."""
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt a credential encrypted with any configured key."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "a stored credential cannot be decrypted with WARELAY_SECRET_KEY (was the key changed "
                "without keeping the old one in the list?)"
            ) from None

    def encrypt_optional(self, value: str | None) -> str | None:
        """Encrypt a value that may be absent."""
        return None if value is None else self.encrypt(value)

    def decrypt_optional(self, token: str | None) -> str | None:
        """Decrypt a value that may be absent."""
        return None if token is None else self.decrypt(token)

    def hash_key(self, api_key: str) -> str:
        """The stored form of an API key: HMAC-SHA256 with the newest derived key, hex."""
        return hmac.new(self._hash_keys[0], api_key.encode(), hashlib.sha256).hexdigest()

    def key_hashes(self, api_key: str) -> list[str]:
        """Every hash the key may be stored under (one per configured secret key)."""
        return [hmac.new(k, api_key.encode(), hashlib.sha256).hexdigest() for k in self._hash_keys]


def new_api_key() -> str:
    """A new random API key (shown once, stored hashed)."""
    return API_KEY_PREFIX + stdlib_secrets.token_urlsafe(32)


def new_secret_key() -> str:
    """A new random WARELAY_SECRET_KEY value."""
    return stdlib_secrets.token_urlsafe(48)


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets without leaking where they differ."""
    a_bytes = a.encode() if isinstance(a, str) else a
    b_bytes = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)
