"""Optional embeddings for knowledge retrieval: an OpenAI-compatible ``/embeddings`` endpoint.

Where it sits: beside full-text retrieval. When an agent's knowledge is embedded, ingest computes a
vector for every passage (in batches, outside the database transaction) and stores it with the
passage; at question time the retriever embeds the question, compares it with the agent's passages
in Python and combines that similarity with the full-text confidence (``knowledge.search``). Without
embeddings configured nothing here runs.

Configuration: ``Settings.embeddings`` (``WARELAY_EMBEDDINGS__BASE_URL``, ``__API_KEY``, ``__MODEL``,
``__DIMENSIONS``, ``__BATCH_SIZE``, ``__TIMEOUT_SECONDS``) for every agent; an agent's own
configuration overrides it key by key with ``embeddings: {base_url, api_key, model, ...}`` or turns
it off with ``embeddings: false``. Embeddings are on when a model is named.

Storage: each vector is normalised to unit length and stored as little-endian float32 bytes, so a
dot product is the cosine similarity; beside it, its *sign bits* (one bit per dimension). Comparing
the question's sign bits with every passage's (a XOR and a popcount per passage: about 0.2 µs) picks
the few passages worth an exact cosine (about 50 µs each at 1,536 dimensions in pure Python) —
binary quantisation with rescoring, which keeps a 10,000-passage agent within milliseconds without
numpy or a vector extension.
"""

from __future__ import annotations

import array
import math
import operator
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
from pydantic import SecretStr

from warelay.errors import WarelayError

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
_SETTING_KEYS: Final = frozenset(
    {"base_url", "api_key", "model", "dimensions", "batch_size", "timeout_seconds"}
)


class EmbeddingError(WarelayError):
    """The embeddings endpoint could not give vectors (unreachable, an HTTP error, a malformed answer)."""


@dataclass(frozen=True, slots=True)
class EmbeddingConfig:
    """A resolved embeddings endpoint: where, which model, how many texts per request."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    dimensions: int | None = None
    batch_size: int = 64
    timeout_seconds: float = 10.0


def _secret(value: object) -> str | None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return str(value) if value else None


def embedding_config(
    agent_config: Mapping[str, Any], defaults: Any = None, decrypt: Callable[[str], str] | None = None
) -> EmbeddingConfig | None:
    """The embeddings an agent uses: its own ``embeddings`` entry over ``defaults`` (``EmbeddingSettings``).

    None when embeddings are off (no model named, or ``embeddings: false``); ``ValueError`` with a
    clear message for a malformed entry. A stored configuration keeps the agent's key encrypted
    (``api_key_enc``, see ``warelay.agents.config``): ``decrypt`` reads it; without it, the key of
    ``defaults`` is used.
    """
    own = agent_config.get("embeddings")
    if own is False:
        return None
    if own is not None and own is not True and not isinstance(own, Mapping):
        raise ValueError("an agent's 'embeddings' must be a mapping {base_url, api_key, model, ...} or false")
    values: dict[str, Any] = {}
    if defaults is not None:
        values = {key: getattr(defaults, key, None) for key in _SETTING_KEYS}
    if isinstance(own, Mapping):
        own = dict(own)
        token = own.pop("api_key_enc", None)
        if token is not None and decrypt is not None and not own.get("api_key"):
            own["api_key"] = decrypt(str(token))
        unknown = set(own) - _SETTING_KEYS
        if unknown:
            raise ValueError(
                f"unknown key(s) in the agent's 'embeddings': {', '.join(sorted(map(str, unknown)))}; "
                f"known: {', '.join(sorted(_SETTING_KEYS))}"
            )
        values.update({key: value for key, value in own.items() if value is not None})
    model = values.get("model")
    if not model:
        return None
    if not isinstance(model, str):
        raise ValueError("embeddings: 'model' must be a string")
    base_url = _secret(values.get("base_url")) or DEFAULT_BASE_URL
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"embeddings: base_url must be an http(s) URL, not {base_url!r}")
    dimensions = values.get("dimensions")
    batch_size = values.get("batch_size") or 64
    timeout = values.get("timeout_seconds") or 10.0
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise ValueError("embeddings: 'dimensions' must be a positive integer")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("embeddings: 'batch_size' must be a positive integer")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError("embeddings: 'timeout_seconds' must be a positive number")
    return EmbeddingConfig(
        model=model,
        base_url=base_url.rstrip("/"),
        api_key=_secret(values.get("api_key")),
        dimensions=dimensions,
        batch_size=batch_size,
        timeout_seconds=float(timeout),
    )


class Embedder:
    """A client of one OpenAI-compatible ``POST {base_url}/embeddings`` endpoint."""

    def __init__(self, config: EmbeddingConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=config.base_url, headers=headers, timeout=config.timeout_seconds, transport=transport
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order, ``batch_size`` texts per request."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.config.batch_size):
            vectors.extend(await self._request(list(texts[start : start + self.config.batch_size])))
        return vectors

    async def _request(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.config.model, "input": texts, "encoding_format": "float"}
        if self.config.dimensions is not None:
            body["dimensions"] = self.config.dimensions
        where = f"{self.config.base_url}/embeddings"
        try:
            response = await self._client.post("embeddings", json=body)
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise EmbeddingError(f"{where} answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            data = response.json()["data"]
            ordered = sorted(data, key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in ordered]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"{where}: not an embeddings answer ({type(exc).__name__}: {exc})") from None
        if len(vectors) != len(texts) or any(len(v) != len(vectors[0]) or not v for v in vectors):
            raise EmbeddingError(
                f"{where}: expected {len(texts)} vectors of one size, got {[len(v) for v in vectors]}"
            )
        return [normalise(v) for v in vectors]


def normalise(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to unit length (a zero vector stays zero)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else [0.0 for _ in vector]


def to_bytes(vector: Sequence[float]) -> bytes:
    """The stored form of a vector: little-endian float32."""
    values = array.array("f", vector)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def from_bytes(data: bytes) -> array.array[float]:
    """A stored vector back as float32 values."""
    values = array.array("f")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def sign_bits(vector: Sequence[float]) -> bytes:
    """One bit per dimension, set where the value is positive (little-endian bit order)."""
    bits = 0
    for i, value in enumerate(vector):
        if value > 0:
            bits |= 1 << i
    return bits.to_bytes((len(vector) + 7) // 8, "little")


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """The dot product of two vectors of one size (the cosine, for unit vectors)."""
    if len(a) != len(b):
        raise ValueError(f"vectors of different sizes: {len(a)} and {len(b)}")
    return float(sum(map(operator.mul, a, b)))
