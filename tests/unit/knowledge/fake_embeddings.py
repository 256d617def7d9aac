"""A fake OpenAI-compatible ``/embeddings`` endpoint at the HTTP transport (``httpx.MockTransport``).

Its vectors are deterministic and *lexical*: each text is hashed into 256 dimensions by the character
trigrams of its folded words (feature hashing), so texts sharing words or parts of words are close.
It stands in for a real embeddings model in tests of the plumbing and of the fusion; it knows no
synonyms, so what it adds to full-text ranking says little about what a real model would add.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from warelay.knowledge.text import tokenize

DIMENSIONS = 256


def fake_vector(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    """The fake embedding of ``text`` (not normalised: the client normalises)."""
    vector = [0.0] * dimensions
    for word in tokenize(text):
        padded = f"  {word} "
        for i in range(len(padded) - 2):
            digest = hashlib.blake2b(padded[i : i + 3].encode(), digest_size=8).digest()
            slot = int.from_bytes(digest[:4], "little") % dimensions
            vector[slot] += 1.0 if digest[4] & 1 else -1.0
    return vector


class FakeEmbeddings:
    """The endpoint: records each request body; ``fail`` makes it answer HTTP 503."""

    def __init__(self, *, fail: bool = False, dimensions: int = DIMENSIONS) -> None:
        self.fail = fail
        self.dimensions = dimensions
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.rstrip("/").split("/")[-1] != "embeddings" or request.method != "POST":
            return httpx.Response(404, json={"error": {"message": "not found"}})
        body: dict[str, Any] = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.fail:
            return httpx.Response(503, json={"error": {"message": "overloaded", "type": "server_error"}})
        texts = body["input"]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": fake_vector(t, self.dimensions)}
                    for i, t in enumerate(texts)
                ],
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            },
        )
