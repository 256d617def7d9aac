"""Optional embeddings: configuration, the endpoint client, ingest, hybrid search and its fallbacks.

The endpoint is faked at the HTTP transport (tests/unit/knowledge/fake_embeddings.py); the
databases are real, on both engines.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit.knowledge.fake_embeddings import DIMENSIONS, FakeEmbeddings
from tests.unit.knowledge.faq_eval import FAQ_FILE, evaluate, table
from tests.unit.knowledge.helpers import make_agent
from tests.unit.knowledge.test_quality import check_floors
from warelay.agents.knowledge import DEFAULT_MIN_CONFIDENCE
from warelay.config import EmbeddingSettings, Settings
from warelay.crypto import SecretBox
from warelay.knowledge.embeddings import (
    DEFAULT_BASE_URL,
    Embedder,
    EmbeddingConfig,
    EmbeddingError,
    dot,
    embedding_config,
    from_bytes,
    normalise,
    sign_bits,
    to_bytes,
)
from warelay.knowledge.ingest import add_document, list_documents
from warelay.knowledge.search import DatabaseRetriever, nearest_by_signs
from warelay.storage.direct import Database
from warelay.storage.models import Agent, KnowledgePassage

SETTINGS = EmbeddingSettings(model="fake-embed", base_url="http://embeddings.test/v1", api_key=SecretStr("k"))

# ------------------------------------------------------------------------------------ configuration


def test_embeddings_are_off_until_a_model_is_named() -> None:
    assert embedding_config({}, None) is None
    assert embedding_config({}, EmbeddingSettings()) is None
    assert embedding_config({}, EmbeddingSettings(base_url="http://x.test/v1")) is None
    assert Settings().embeddings == EmbeddingSettings()


def test_agent_entry_overrides_the_settings_key_by_key() -> None:
    config = embedding_config({"embeddings": {"model": "other", "batch_size": 8}}, SETTINGS)
    assert config == EmbeddingConfig(
        model="other", base_url="http://embeddings.test/v1", api_key="k", batch_size=8, timeout_seconds=10.0
    )
    assert embedding_config({"embeddings": False}, SETTINGS) is None
    assert embedding_config({"embeddings": {"model": "m"}}, None) == EmbeddingConfig(
        model="m", base_url=DEFAULT_BASE_URL
    )


def test_an_agents_encrypted_key_is_read_with_decrypt() -> None:
    # warelay.agents.config stores an agent's embeddings key encrypted, as api_key_enc.
    box = SecretBox(["k" * 32])
    stored = {"embeddings": {"model": "m", "api_key_enc": box.encrypt("sk-agent")}}
    config = embedding_config(stored, SETTINGS, box.decrypt)
    assert config is not None
    assert config.api_key == "sk-agent"
    without = embedding_config(stored, SETTINGS)  # no way to read it: the settings' key
    assert without is not None
    assert without.api_key == "k"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("yes", "must be a mapping"),
        ({"model": "m", "colour": "red"}, "unknown key"),
        ({"model": 5}, "'model' must be a string"),
        ({"model": "m", "base_url": "ftp://x"}, "http"),
        ({"model": "m", "dimensions": 0}, "dimensions"),
        ({"model": "m", "batch_size": "10"}, "batch_size"),
        ({"model": "m", "timeout_seconds": -1}, "timeout_seconds"),
    ],
)
def test_bad_agent_entries_are_refused_clearly(entry: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        embedding_config({"embeddings": entry}, None)


# ------------------------------------------------------------------------------------------ vectors


def test_vectors_round_trip_as_float32_with_their_sign_bits() -> None:
    vector = normalise([3.0, -4.0, 0.0])
    assert vector == pytest.approx([0.6, -0.8, 0.0])
    assert list(from_bytes(to_bytes(vector))) == pytest.approx(vector)
    assert len(to_bytes(vector)) == 12
    assert sign_bits([0.5, -1.0, 2.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]) == bytes([0b11110101, 0b1])
    assert dot(vector, vector) == pytest.approx(1.0)
    assert normalise([0.0, 0.0]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="different sizes"):
        dot([1.0], [1.0, 2.0])


def test_nearest_by_signs_is_the_smallest_hamming_distance() -> None:
    ids = [10, 11, 12, 13]
    signs = [0b1111, 0b0000, 0b0111, 0b1000]
    assert nearest_by_signs(0b1111, ids, signs, 2) == [10, 12]
    assert nearest_by_signs(0b1111, ids, signs, 10) == ids


async def test_embedder_batches_and_authenticates() -> None:
    fake = FakeEmbeddings()
    embedder = Embedder(
        EmbeddingConfig(model="m", base_url="http://e.test/v1", api_key="sk-1", batch_size=2, dimensions=64),
        transport=fake.transport,
    )
    try:
        vectors = await embedder.embed(["one", "two", "three"])
    finally:
        await embedder.aclose()
    assert [len(r["input"]) for r in fake.requests] == [2, 1]
    assert fake.requests[0]["model"] == "m"
    assert fake.requests[0]["dimensions"] == 64
    assert fake.headers[0]["authorization"] == "Bearer sk-1"
    assert len(vectors) == 3
    assert all(math.isclose(dot(v, v), 1.0) for v in vectors)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(503, json={"error": {"message": "overloaded"}}), "HTTP 503"),
        (httpx.Response(200, json={"data": "nope"}), "not an embeddings answer"),
        (httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0]}]}), "expected 2 vectors"),
        (httpx.Response(200, text="<html>"), "not an embeddings answer"),
    ],
)
async def test_endpoint_failures_are_embedding_errors(response: httpx.Response, message: str) -> None:
    embedder = Embedder(
        EmbeddingConfig(model="m", base_url="http://e.test/v1"),
        transport=httpx.MockTransport(lambda _request: response),
    )
    with pytest.raises(EmbeddingError, match=message):
        await embedder.embed(["a", "b"])
    await embedder.aclose()


async def test_an_unreachable_endpoint_is_an_embedding_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    embedder = Embedder(
        EmbeddingConfig(model="m", base_url="http://e.test/v1"), transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(EmbeddingError, match="ConnectError"):
        await embedder.embed(["a"])
    await embedder.aclose()


# ---------------------------------------------------------------------------- ingest and search


async def _embedded_count(engine: AsyncEngine, agent_id: int) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count())
                    .select_from(KnowledgePassage)
                    .where(KnowledgePassage.agent_id == agent_id, KnowledgePassage.embedding.is_not(None))
                )
            ).scalar_one()
        )


async def test_ingest_stores_a_vector_per_passage(engine: AsyncEngine) -> None:
    tenant_id, agent_id = await make_agent(engine, "clinic")
    fake = FakeEmbeddings()
    info = await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name=FAQ_FILE.name,
        data=FAQ_FILE.read_bytes(),
        embeddings=SETTINGS.model_copy(update={"batch_size": 32}),
        transport=fake.transport,
    )
    assert (info.embedding_model, info.embedding_error) == ("fake-embed", None)
    assert [len(r["input"]) for r in fake.requests] == [32, 32, 11]
    assert await _embedded_count(engine, agent_id) == 75
    async with engine.connect() as conn:
        stored = (await conn.execute(select(KnowledgePassage.embedding).limit(1))).scalar_one()
    assert stored is not None
    assert len(stored) == DIMENSIONS * 4
    [listed] = await list_documents(engine, tenant_id=tenant_id, agent_id=agent_id)
    assert listed.embedding_model == "fake-embed"


async def test_a_failing_endpoint_at_ingest_is_recorded_and_full_text_still_works(
    engine: AsyncEngine, database: Database
) -> None:
    tenant_id, agent_id = await make_agent(engine, "clinic")
    info = await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name=FAQ_FILE.name,
        data=FAQ_FILE.read_bytes(),
        embeddings=SETTINGS,
        transport=FakeEmbeddings(fail=True).transport,
    )
    assert info.embedding_model is None
    assert info.embedding_error is not None
    assert "HTTP 503" in info.embedding_error
    assert info.passages == 75
    assert await _embedded_count(engine, agent_id) == 0
    [listed] = await list_documents(engine, tenant_id=tenant_id, agent_id=agent_id)
    assert listed.embedding_error == info.embedding_error
    retriever = DatabaseRetriever(database, embeddings=SETTINGS, transport=FakeEmbeddings().transport)
    results = await retriever.search(
        tenant_id=tenant_id, agent_id=agent_id, query="Is there parking?", limit=1
    )
    assert [p.title for p in results] == ["Is there parking?"]
    await retriever.aclose()


async def test_the_agents_own_entry_turns_embeddings_on(engine: AsyncEngine, database: Database) -> None:
    tenant_id, agent_id = await make_agent(engine, "clinic")
    entry = {"embeddings": {"model": "own-model", "base_url": "http://own.test/v1"}}
    async with engine.begin() as conn:
        await conn.execute(update(Agent).where(Agent.id == agent_id).values(config=entry))
    fake = FakeEmbeddings()
    info = await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name=FAQ_FILE.name,
        data=FAQ_FILE.read_bytes(),
        transport=fake.transport,
    )
    assert info.embedding_model == "own-model"
    retriever = DatabaseRetriever(database, transport=fake.transport)
    asked = len(fake.requests)
    results = await retriever.search(
        tenant_id=tenant_id, agent_id=agent_id, query="Is there parking?", limit=1
    )
    assert [p.title for p in results] == ["Is there parking?"]
    assert len(fake.requests) == asked + 1  # the question was embedded
    assert fake.requests[-1] == {
        "model": "own-model",
        "input": ["Is there parking?"],
        "encoding_format": "float",
    }
    await retriever.aclose()


async def test_a_failing_endpoint_at_question_time_falls_back_to_full_text(
    engine: AsyncEngine, database: Database
) -> None:
    tenant_id, agent_id = await make_agent(engine, "clinic")
    fake = FakeEmbeddings()
    await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name=FAQ_FILE.name,
        data=FAQ_FILE.read_bytes(),
        embeddings=SETTINGS,
        transport=fake.transport,
    )
    plain = DatabaseRetriever(database)
    fake.fail = True
    hybrid = DatabaseRetriever(database, embeddings=SETTINGS, transport=fake.transport)
    for question in ("Is there parking?", "¿Cuánto cuesta una limpieza dental?", "Bisa bayar pakai QRIS?"):
        expected = await plain.search(tenant_id=tenant_id, agent_id=agent_id, query=question)
        assert await hybrid.search(tenant_id=tenant_id, agent_id=agent_id, query=question) == expected
        assert expected
    assert len(fake.requests) > 3  # each question tried the endpoint
    await hybrid.aclose()


def test_fusion_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="fusion"):
        DatabaseRetriever.__init__(DatabaseRetriever.__new__(DatabaseRetriever), None, fusion="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="semantic_weight"):
        DatabaseRetriever.__init__(DatabaseRetriever.__new__(DatabaseRetriever), None, semantic_weight=2)  # type: ignore[arg-type]


# Measured with the fake (lexical) embeddings, threshold 0.45, semantic_weight 0.5:
#   mix: english 0.44/0.72 abstention 1.00; spanish 0.68/0.76 1.00; indonesian 0.84/0.88 1.00
#   rrf: english 0.40/0.64 abstention 1.00; spanish 0.56/0.80 1.00; indonesian 0.68/0.88 1.00
# so "mix" is the default fusion. A real model adds what the fake cannot: synonyms and paraphrases.
HYBRID_FLOORS: dict[str, dict[str, float]] = {
    "english": {"hit1": 0.40, "hit3": 0.68, "abstention": 0.9},
    "spanish": {"hit1": 0.64, "hit3": 0.72, "abstention": 0.9},
    "indonesian": {"hit1": 0.80, "hit3": 0.84, "abstention": 0.9},
}


async def test_hybrid_quality_on_the_multilingual_faq(engine: AsyncEngine, database: Database) -> None:
    tenant_id, agent_id = await make_agent(engine, "clinic")
    fake = FakeEmbeddings()
    await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name=FAQ_FILE.name,
        data=FAQ_FILE.read_bytes(),
        embeddings=SETTINGS,
        transport=fake.transport,
    )
    for fusion in ("mix", "rrf"):
        retriever = DatabaseRetriever(database, embeddings=SETTINGS, transport=fake.transport, fusion=fusion)
        scores = await evaluate(
            retriever, tenant_id=tenant_id, agent_id=agent_id, threshold=DEFAULT_MIN_CONFIDENCE
        )
        print("\n" + table(f"{engine.dialect.name}, hybrid ({fusion}) with fake lexical embeddings", scores))
        if fusion == "mix":
            check_floors(scores, HYBRID_FLOORS)
        await retriever.aclose()
