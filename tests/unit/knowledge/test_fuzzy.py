"""The trigram fallback: pg_trgm's similarity, the vocabulary look-up, and typos found on both engines."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit.knowledge.helpers import make_agent
from warelay.knowledge.fuzzy import MIN_SIMILARITY, Vocabulary, correct_groups, similarity, trigrams
from warelay.knowledge.ingest import add_document
from warelay.knowledge.search import DatabaseRetriever
from warelay.storage.direct import Database

PAIRS = [
    ("parkng", "park"),
    ("implent", "implant"),
    ("whitenn", "whiten"),
    ("presid", "press"),
    ("ab", "abc"),
]


def test_trigrams_are_padded_like_pg_trgm() -> None:
    assert trigrams("cat") == {"  c", " ca", "cat", "at "}
    assert similarity("park", "park") == 1.0
    assert similarity("park", "zzzz") == 0.0
    assert similarity("parkng", "park") == pytest.approx(4 / 8)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # pg_trgm is PostgreSQL's
async def test_similarity_is_pg_trgms(engine: AsyncEngine) -> None:
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except DBAPIError:
        pytest.skip("pg_trgm is not installed on this server")
    async with engine.connect() as conn:
        for a, b in PAIRS:
            expected = (await conn.execute(text("SELECT similarity(:a, :b)"), {"a": a, "b": b})).scalar_one()
            assert similarity(a, b) == pytest.approx(expected, abs=1e-6), (a, b)


def test_vocabulary_finds_similar_terms_most_similar_first() -> None:
    vocabulary = Vocabulary(["park", "parkir", "implant", "whiten", "tea", "2024", "apple"])
    assert len(vocabulary) == 5  # too short and numeric terms are left out
    assert [term for term, _ in vocabulary.similar("parkng")] == ["park"]
    assert similarity("parkir", "park") >= MIN_SIMILARITY
    assert [term for term, _ in vocabulary.similar("parkir")] == ["parkir", "park"]
    assert vocabulary.similar("implent") == [("implant", similarity("implent", "implant"))]
    assert vocabulary.similar("tee") == []  # too short to tell a typo from another word
    assert vocabulary.similar("zebra") == []


def test_only_unknown_words_are_corrected() -> None:
    frequency = {"park": 3, "parkir": 1, "implant": 2}
    vocabulary = Vocabulary(frequency)
    groups, credits = correct_groups([("park",), ("implent",), ("zebra",)], frequency, vocabulary)
    assert groups == (("park",), ("implent", "implant"), ("zebra",))
    assert credits[0] == {}
    assert credits[1] == {"implant": pytest.approx(similarity("implent", "implant"))}
    assert credits[2] == {}


async def test_misspelt_questions_find_their_passage(engine: AsyncEngine, database: Database) -> None:
    tenant_id, agent_id = await make_agent(engine, "clinic")
    await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name="faq.csv",
        data=(
            b"question,answer\n"
            b"Is there parking?,Free parking in front of the building.\n"
            b"Do you do dental implants?,Yes: an implant with its crown from Rp 15.000.000.\n"
            b"Do you accept cards?,Visa and Mastercard.\n"
        ),
    )
    retriever = DatabaseRetriever(database)
    for question, title in [
        ("is there parkng", "Is there parking?"),
        ("do you do implents?", "Do you do dental implants?"),
        ("do you acept visa", "Do you accept cards?"),
    ]:
        results = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query=question, limit=1)
        assert [p.title for p in results] == [title], question
        # A corrected word counts its similarity, not a full match.
        assert 0 < results[0].score < 1
    exact = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="is there parking", limit=1)
    assert exact[0].score == 1.0
