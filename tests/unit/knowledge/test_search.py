"""Retrieval on both engines: scoping, confidence, safety of the query syntax, quality and speed."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import warelay.demo
from tests.unit.knowledge.helpers import make_agent
from warelay.agents.base import Retriever
from warelay.agents.knowledge import DEFAULT_MIN_CONFIDENCE
from warelay.knowledge.ingest import add_document, add_folder, remove_document
from warelay.knowledge.search import (
    _SQLITE_SEARCH,
    MATCH_BUDGET,
    DatabaseRetriever,
    MatchPlan,
    fts5_query,
    idf,
    plan_match,
    score_passage,
    tsquery,
)
from warelay.numbers import ensure_agent
from warelay.storage.direct import Database, Tx, sqlite_sql

DEMO_KNOWLEDGE = Path(warelay.demo.__file__).parent / "knowledge"


FAQ = (
    b"question,answer\n"
    b"Do you sell tea?,We sell green tea and black tea.\n"
    b"Do you sell cake?,Cake is baked fresh every morning.\n"
    b"Is there wifi?,Free wifi in the cafe.\n"
    b"Do you sell cake and tea sets?,Our afternoon set has cake and a pot of tea.\n"
)


# ----------------------------------------------------------------------------------- pure helpers


def test_retriever_satisfies_the_protocol() -> None:
    def accepts(_retriever: Retriever) -> None:
        return None

    accepts(DatabaseRetriever.__new__(DatabaseRetriever))


def test_query_syntax_is_quoted() -> None:
    groups = [('a"b', "OR"), ("NEAR",), ("x:y*",)]
    assert fts5_query(groups) == '"a""b" OR "OR" OR "NEAR" OR "x:y*"'
    assert fts5_query(groups, all_of=True) == '("a""b" OR "OR") AND ("NEAR") AND ("x:y*")'
    assert tsquery([("it's", "a\\b"), ("c",)]) == "'it''s' | 'a\\\\b' | 'c'"
    assert tsquery([("a",), ("b", "c")], all_of=True) == "('a') & ('b' | 'c')"


def test_confidence_is_the_idf_weighted_share_of_question_words_found() -> None:
    groups = [("tea",), ("cake",), ("zebra",)]
    weights = [idf(1, 10), idf(4, 10), idf(0, 10)]
    assert weights[2] > weights[0] > weights[1] > 0
    confidence, bm25 = score_passage(groups, weights, "tea cake cake other", average_length=4.0)
    assert confidence == pytest.approx((weights[0] + weights[1]) / sum(weights))
    assert bm25 > 0
    assert score_passage(groups, weights, "nothing here", average_length=4.0) == (0.0, 0.0)
    # A word's alternative forms count once.
    assert score_passage([("envi", "envio")], [1.0], "envi envio", 2.0)[0] == 1.0


def test_plan_match_searches_everything_in_small_knowledge() -> None:
    groups = [("tea",), ("cake",), ("zebra",)]
    plans = plan_match(groups, {"tea": 3, "cake": 5}, passages=40)
    assert plans == [MatchPlan((("zebra",), ("tea",), ("cake",)))]


def test_plan_match_leaves_common_words_to_scoring_in_large_knowledge() -> None:
    common, rare, rarer = ("coffe",), ("gayo",), ("aceh",)
    frequency = {"coffe": 9000, "gayo": 300, "aceh": 40}
    assert plan_match([common, rare, rarer], frequency, passages=10_000) == [MatchPlan((rarer, rare))]
    # Only common words: passages must have them all (AND), with the rarest alone as a fallback.
    plans = plan_match([("coffe",), ("bean",)], {"coffe": 9000, "bean": 5000}, passages=10_000)
    assert plans == [MatchPlan((("bean",), ("coffe",)), all_of=True), MatchPlan((("bean",),))]
    assert MATCH_BUDGET < 5000


# ------------------------------------------------------------------------------------ the engines


async def test_search_scores_the_same_on_every_engine(engine: AsyncEngine, database: Database) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv", data=FAQ)
    retriever = DatabaseRetriever(database)
    results = await retriever.search(
        tenant_id=tenant_id, agent_id=agent_id, query="Do you have tea and cake?"
    )
    # tea: 2 of 4 passages, cake: 2 of 4; the set passage has both, then the shorter of the others.
    assert [p.title for p in results] == [
        "Do you sell cake and tea sets?",
        "Do you sell tea?",
        "Do you sell cake?",
    ]
    assert results[0].score == 1.0
    assert results[1].score == pytest.approx(0.5, abs=1e-4)
    assert results[0].answer == "Our afternoon set has cake and a pot of tea."
    assert results[0].document == "faq.csv"
    # An unknown word weighs the most: "pie" is in no passage.
    results = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="tea pie", limit=1)
    expected = idf(2, 4) / (idf(2, 4) + idf(0, 4))
    assert [p.title for p in results] == ["Do you sell tea?"]
    assert results[0].score == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("query", ["", "   ", "the and of", "¿qué es?", "apa itu", "👍👍", "?!"])
async def test_empty_or_stopword_queries_find_nothing(
    engine: AsyncEngine, database: Database, query: str
) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv", data=FAQ)
    assert await DatabaseRetriever(database).search(tenant_id=tenant_id, agent_id=agent_id, query=query) == []


@pytest.mark.parametrize(
    "query",
    [
        'tea" OR cake',
        "NEAR(tea cake)",
        "tea*",
        "title:tea",
        "tea AND NOT cake",
        "tea & !cake | (",
        "it's \\ 'x'",
    ],
)
async def test_query_syntax_in_questions_is_harmless(
    engine: AsyncEngine, database: Database, query: str
) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv", data=FAQ)
    results = await DatabaseRetriever(database).search(tenant_id=tenant_id, agent_id=agent_id, query=query)
    assert all(0.0 <= p.score <= 1.0 for p in results)


async def test_quoted_terms_reach_the_engine_verbatim(engine: AsyncEngine, database: Database) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv", data=FAQ)
    nasty = [('x"y', "OR", "NEAR"), ("it's", "back\\slash", "a:b", "*"), ("$1", "::int", "?2")]

    async def count(tx: Tx) -> int:
        if tx.postgres:
            sql = (
                "SELECT count(*) FROM knowledge_passages "
                "WHERE to_tsvector('simple', search_text) @@ to_tsquery('simple', $1)"
            )
            row = await tx.fetchrow(sql, tsquery(nasty))
        else:
            row = await tx.fetchrow(
                "SELECT count(*) FROM knowledge_fts WHERE knowledge_fts MATCH ?1", fts5_query(nasty)
            )
        assert row is not None
        return int(row[0])

    assert await database.read(count) == 0


def test_the_sqlite_statement_is_left_alone_by_the_translation() -> None:
    # Written in SQLite's own form: storage.direct's PostgreSQL-to-SQLite translation is a no-op.
    assert sqlite_sql(_SQLITE_SEARCH) == _SQLITE_SEARCH
    assert "$" not in _SQLITE_SEARCH
    assert "::" not in _SQLITE_SEARCH


def _count_transactions(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of every transaction function ``database`` runs (``_find+stats`` when it loads)."""
    seen: list[str] = []
    read = database.read

    async def counting(fn: Any, *args: Any) -> Any:
        name = fn.__name__
        if name == "_find" and args[3] is None:
            name += "+stats"
        seen.append(name)
        return await read(fn, *args)

    monkeypatch.setattr(database, "read", counting)
    return seen


async def test_one_transaction_per_question(
    engine: AsyncEngine, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv", data=FAQ)
    seen = _count_transactions(database, monkeypatch)
    retriever = DatabaseRetriever(database)
    # Concurrent first questions: one loads the statistics with its candidates, the others wait for them.
    first = await asyncio.gather(
        *(retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="tea") for _ in range(5))
    )
    assert all(r == first[0] for r in first)
    assert sorted(seen) == ["_find"] * 4 + ["_find+stats"]
    seen.clear()
    for query in ("tea", "cake wifi", "zebra"):
        await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query=query)
    assert seen == ["_find"] * 3
    # A change: the next question notices it and the statistics reload once, in their own transaction.
    await add_document(
        engine, tenant_id=tenant_id, agent_id=agent_id, name="more.csv", data=b"q,a\nMatcha tea?,Yes.\n"
    )
    seen.clear()
    await asyncio.gather(
        *(retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="matcha tea") for _ in range(3))
    )
    assert seen.count("_load_stats") == 1
    assert seen.count("_find") == 3
    seen.clear()
    results = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="matcha tea", limit=1)
    assert seen == ["_find"]
    assert [(p.title, p.score) for p in results] == [("Matcha tea?", 1.0)]


async def test_other_tenants_and_agents_are_never_returned(engine: AsyncEngine, database: Database) -> None:
    t1, a1 = await make_agent(engine, "one")
    t2, a2 = await make_agent(engine, "two")
    a1b = await ensure_agent(engine, tenant_id=t1, name="second", kind="knowledge")
    docs = {
        (t1, a1): await add_document(engine, tenant_id=t1, agent_id=a1, name="faq.csv", data=FAQ),
        (t1, a1b): await add_document(engine, tenant_id=t1, agent_id=a1b, name="faq.csv", data=FAQ),
        (t2, a2): await add_document(
            engine, tenant_id=t2, agent_id=a2, name="other.csv", data=b"q,a\nMatcha?,Only matcha here.\n"
        ),
    }
    retriever = DatabaseRetriever(database)
    for (tenant_id, agent_id), doc in docs.items():
        results = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="tea cake wifi matcha")
        assert results
        assert {p.document for p in results} == {doc.name}
    ids_a1 = {
        p.id for p in await retriever.search(tenant_id=t1, agent_id=a1, query="tea cake wifi", limit=10)
    }
    ids_a1b = {
        p.id for p in await retriever.search(tenant_id=t1, agent_id=a1b, query="tea cake wifi", limit=10)
    }
    assert ids_a1
    assert ids_a1.isdisjoint(ids_a1b)
    # Tenant two's words do not exist for tenant one, and a mismatched (tenant, agent) finds nothing.
    assert await retriever.search(tenant_id=t1, agent_id=a1, query="matcha") == []
    assert await retriever.search(tenant_id=t2, agent_id=a1, query="tea") == []


async def test_changes_to_knowledge_show_up_in_the_next_search(
    engine: AsyncEngine, database: Database
) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    retriever = DatabaseRetriever(database)
    assert await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="tea") == []
    await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv", data=FAQ)
    before = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="matcha tea", limit=1)
    assert before[0].score < 0.5  # matcha is unknown and weighs the most
    await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name="faq.csv",
        data=b"q,a\nDo you sell matcha tea?,Yes, matcha tea from Japan.\nCake?,Every day.\n",
    )
    after = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="matcha tea", limit=5)
    assert [(p.title, p.score) for p in after] == [("Do you sell matcha tea?", 1.0)]
    assert await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="wifi") == []
    assert await remove_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv")
    assert await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="matcha tea") == []


async def test_limit(engine: AsyncEngine, database: Database) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv", data=FAQ)
    retriever = DatabaseRetriever(database)
    assert (
        len(await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="sell tea cake", limit=2))
        == 2
    )
    assert await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query="tea", limit=0) == []


# -------------------------------------------------------------------------------- demo: quality

# Questions worded differently from the demo FAQ (few shared words), and the FAQ question that
# answers each one.
PARAPHRASES: dict[str, list[tuple[str, str]]] = {
    "english": [
        ("When do you open in the morning?", "What are your opening hours?"),
        ("Are you closed during Lebaran?", "Are you open on public holidays?"),
        ("What's your address?", "Where is your shop?"),
        ("How long does delivery to Sumatra take?", "Do you deliver outside Bandung?"),
        ("Is shipping free?", "How much does shipping cost?"),
        ("Can my order arrive today?", "Do you offer same-day delivery?"),
        ("Can you send beans to Singapore?", "Do you ship internationally?"),
        ("Where is my parcel? I need the tracking number", "How can I track my order?"),
        ("Can I pay with GoPay?", "Which payment methods do you accept?"),
        ("I want to cancel what I bought", "Can I change or cancel my order?"),
        ("Can I get a refund?", "What is your return policy?"),
        ("The bag was broken when it arrived", "My package arrived damaged or broken. What should I do?"),
        ("What origins do you roast?", "Which coffee beans do you sell?"),
        ("Which coffee has chocolate notes?", "What do your coffees taste like?"),
        ("When were the beans roasted?", "How fresh are the beans?"),
        ("Do you sell ground coffee for a French press?", "Can you grind the beans for me?"),
        ("Do you have 1 kg bags?", "What sizes do the bags come in?"),
        ("Any decaf options?", "Do you have decaf?"),
        ("What's the recipe for pour-over?", "How do I brew coffee with a V60?"),
        ("How long should cold brew steep?", "How do I make cold brew?"),
        ("Should I keep coffee in the fridge?", "How should I store coffee beans?"),
        ("Wholesale prices for my restaurant?", "Do you sell to cafés and restaurants?"),
        ("Can I get beans delivered every month?", "Do you have a coffee subscription?"),
        ("I want to buy a gift card for a friend", "Do you sell gift cards?"),
        ("Any promo code for new customers?", "Is there a discount on my first order?"),
        ("Do you sell grinders?", "Do you sell coffee equipment?"),
        ("I want to speak to a human", "Can I talk to a person?"),
    ],
    "spanish": [
        ("¿A qué hora abren el sábado?", "¿Cuál es el horario de la tienda?"),
        ("¿Envían café a Japón?", "¿Hacen envíos internacionales?"),
        ("¿Puedo pagar con tarjeta de crédito?", "¿Qué formas de pago aceptan?"),
        ("¿Qué pasa si el café llega dañado?", "¿Puedo devolver mi pedido?"),
        ("¿Tienen café de Bali?", "¿Qué cafés venden?"),
        ("¿Cuánto café uso en la prensa francesa?", "¿Cómo preparo café en prensa francesa?"),
        ("Tengo una cafetería, ¿me venden al mayoreo?", "¿Venden al por mayor para cafeterías?"),
        ("¿Dónde está mi paquete?", "¿Cómo puedo rastrear mi pedido?"),
    ],
    "indonesian": [
        ("Hari Minggu buka jam berapa?", "Jam berapa toko buka?"),
        ("Gratis ongkir kalau belanja berapa?", "Berapa ongkos kirimnya?"),
        ("Bisa bayar pakai QRIS?", "Pembayaran bisa pakai apa saja?"),
        ("Kopinya rusak waktu sampai, bisa ganti?", "Apakah barang bisa dikembalikan?"),
        ("Ada kopi dari Toraja?", "Biji kopi apa saja yang dijual?"),
        ("Resep seduh V60 gimana?", "Bagaimana cara menyeduh kopi dengan V60?"),
        ("Saya punya kafe, mau beli banyak", "Apakah ada harga grosir untuk kafe?"),
        ("Nomor resi pesanan saya mana?", "Bagaimana cara melacak pesanan saya?"),
    ],
}

OUT_OF_SCOPE = [
    "what is the capital of France",
    "¿quién ganó el mundial?",
    "siapa presiden pertama",
    "how do I fix my car?",
    "what's the weather tomorrow?",
    "¿cuál es la capital de España?",
    "tell me a joke",
    "who is the president of the USA",
    "berapa harga iPhone?",
    "cara bikin nasi goreng",
    "do you sell tea?",
    "dónde puedo comprar zapatos",
    "jadwal kereta ke Jakarta",
]


async def test_demo_faq_paraphrases_find_the_right_answer_first(
    engine: AsyncEngine, database: Database
) -> None:
    tenant_id, agent_id = await make_agent(engine, "demo")
    await add_folder(engine, tenant_id=tenant_id, agent_id=agent_id, folder=DEMO_KNOWLEDGE)
    retriever = DatabaseRetriever(database)
    rates: dict[str, float] = {}
    answered: dict[str, float] = {}
    for language, cases in PARAPHRASES.items():
        hits = confident = 0
        for question, expected in cases:
            results = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query=question, limit=1)
            if results and results[0].title == expected:
                hits += 1
                confident += results[0].score >= DEFAULT_MIN_CONFIDENCE
        rates[language] = hits / len(cases)
        answered[language] = confident / len(cases)
    print(f"\n{engine.dialect.name}: hit@1 {rates}; right and confident {answered}")
    assert all(rate >= 0.85 for rate in rates.values()), rates
    assert sum(answered.values()) / len(answered) >= 0.7, answered


async def test_demo_out_of_scope_questions_stay_below_the_threshold(
    engine: AsyncEngine, database: Database
) -> None:
    tenant_id, agent_id = await make_agent(engine, "demo")
    await add_folder(engine, tenant_id=tenant_id, agent_id=agent_id, folder=DEMO_KNOWLEDGE)
    retriever = DatabaseRetriever(database)
    scores = {}
    for question in OUT_OF_SCOPE:
        results = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query=question, limit=1)
        scores[question] = results[0].score if results else 0.0
    print(f"\n{engine.dialect.name}: out-of-scope best scores {scores}")
    assert max(scores.values()) < DEFAULT_MIN_CONFIDENCE, scores


# -------------------------------------------------------------------------------- speed at scale


def _synthetic_faq(rows: int, seed: int = 7) -> tuple[bytes, list[str]]:
    """A CSV FAQ of ``rows`` rows over a Zipf-distributed made-up vocabulary, and the vocabulary.

    The head of the distribution is cut (real text loses it to the stopword lists), so the most
    common word is in about one passage in ten, as in real knowledge bases.
    """
    rnd = random.Random(seed)
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "su",
        "ta",
        "ri",
        "po",
        "de",
        "ga",
        "ba",
        "vi",
        "zu",
        "ran",
        "tol",
        "mer",
    ]
    vocabulary = sorted({"".join(rnd.choices(syllables, k=rnd.randint(2, 4))) for _ in range(9000)})[:5000]
    rnd.shuffle(vocabulary)
    weights = [1 / (rank + 50) for rank in range(len(vocabulary))]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "answer"])
    for _ in range(rows):
        question = " ".join(rnd.choices(vocabulary, weights, k=8)) + "?"
        answer = " ".join(rnd.choices(vocabulary, weights, k=50)) + "."
        writer.writerow([question, answer])
    return out.getvalue().encode(), vocabulary


@pytest.mark.slow
async def test_search_answers_over_ten_thousand_passages(engine: AsyncEngine, database: Database) -> None:
    # How fast is measured in bench/ (never in a timed test); this checks the large-scale plan answers.
    tenant_id, agent_id = await make_agent(engine, "big")
    data, vocabulary = _synthetic_faq(10_000)
    info = await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="big.csv", data=data)
    assert info.passages == 10_000
    retriever = DatabaseRetriever(database)
    rnd = random.Random(11)
    weights = [1 / (rank + 50) for rank in range(len(vocabulary))]
    for _ in range(100):
        words = rnd.choices(vocabulary, weights, k=rnd.randint(2, 8))
        results = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query=" ".join(words))
        assert results
        assert any(word in results[0].content.lower() for word in words)
