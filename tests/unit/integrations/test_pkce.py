"""PKCE (RFC 7636) as warelay uses it: verifiers, S256 challenges, the RFC's own example pair."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from warelay.integrations.ai_platform import code_challenge, new_code_verifier

# RFC 7636 Appendix B: the example verifier and the challenge the RFC derives from it.
RFC7636_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC7636_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_rfc7636_appendix_b_pair() -> None:
    assert code_challenge(RFC7636_VERIFIER) == RFC7636_CHALLENGE


def test_challenge_is_unpadded_base64url_of_sha256() -> None:
    verifier = new_code_verifier()
    expected = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    )
    assert code_challenge(verifier) == expected
    assert len(expected) == 43
    assert "=" not in expected


def test_verifiers_are_long_random_and_from_the_unreserved_set() -> None:
    verifiers = {new_code_verifier() for _ in range(200)}
    assert len(verifiers) == 200
    for verifier in verifiers:
        assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier)
        assert len(verifier) == 64


@pytest.mark.parametrize(
    "verifier",
    [
        "a" * 42,  # too short (RFC 7636 4.1: 43 to 128)
        "a" * 129,  # too long
        "a" * 42 + "+",  # not an unreserved character
        "a" * 42 + " ",
        "ä" * 43,
    ],
)
def test_invalid_verifiers_are_refused(verifier: str) -> None:
    with pytest.raises(ValueError, match="43 to 128"):
        code_challenge(verifier)


@pytest.mark.parametrize("length", [43, 128])
def test_verifier_length_bounds_are_accepted(length: int) -> None:
    assert len(code_challenge("~" * length)) == 43
