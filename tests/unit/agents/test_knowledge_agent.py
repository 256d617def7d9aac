"""The offline knowledge agent: what each message gets, thresholds, config, and the demo end to end."""

from __future__ import annotations

import csv
import dataclasses
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

import warelay.demo
from tests.unit.knowledge.faq_eval import FAQ_FILE, eval_set, faq_titles
from warelay.agents.base import (
    AgentDeps,
    AgentReply,
    AgentSpec,
    Attachment,
    Passage,
    SessionState,
    Turn,
    agent_kinds,
    build_agent,
)
from warelay.agents.knowledge import (
    DEFAULT_GREETING,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_THANKS,
    DEFAULT_UNKNOWN,
    DEFAULT_UNSUPPORTED,
    MAX_ANSWER_CHARS,
    KnowledgeAgent,
    KnowledgeAgentConfig,
    trim_answer,
)
from warelay.domain import (
    ButtonContent,
    ContactPhone,
    ContactsContent,
    InboundContent,
    InboundMessage,
    InteractiveReplyContent,
    LocationContent,
    MediaContent,
    OrderContent,
    OrderItem,
    OutText,
    ReactionContent,
    RevokeContent,
    SharedContact,
    SystemContent,
    TextContent,
    UnsupportedContent,
    UserRef,
)
from warelay.errors import AgentError
from warelay.knowledge.ingest import add_document, add_folder
from warelay.knowledge.search import DatabaseRetriever
from warelay.storage.direct import Database
from warelay.storage.models import Agent, Tenant

_ids = itertools.count(1)


class FakeRetriever:
    """A Retriever that returns canned passages and records what it was asked."""

    def __init__(self, passages: Sequence[Passage] = ()) -> None:
        self.passages = list(passages)
        self.calls: list[dict[str, Any]] = []

    async def search(self, *, tenant_id: int, agent_id: int, query: str, limit: int = 5) -> Sequence[Passage]:
        self.calls.append({"tenant_id": tenant_id, "agent_id": agent_id, "query": query, "limit": limit})
        return self.passages[:limit]


def passage(score: float, *, answer: str | None = "We open at 8.", content: str = "Q\nA") -> Passage:
    return Passage(
        id=41, document="faq.csv", title="Opening hours?", content=content, answer=answer, score=score
    )


def message(content: InboundContent, type_: str = "text") -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{next(_ids)}",
        number_id="1234",
        sender=UserRef(wa_id="628111"),
        timestamp=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        type=type_,
        content=content,
    )


def text_turn(*bodies: str, tenant_id: int = 1, agent_id: int | None = 7) -> Turn:
    return turn(*(message(TextContent(body=b)) for b in bodies), tenant_id=tenant_id, agent_id=agent_id)


def turn(*messages: InboundMessage, tenant_id: int = 1, agent_id: int | None = 7) -> Turn:
    return Turn(
        tenant_id=tenant_id,
        tenant="shop",
        number_id=3,
        phone_number_id="1234",
        agent_id=agent_id,
        user_key="628111",
        user_name="Ayu",
        session=SessionState(session_id="sess-1"),
        messages=messages,
    )


def make_agent(
    retriever: FakeRetriever | DatabaseRetriever,
    config: dict[str, Any] | None = None,
    *,
    agent_id: int | None = 7,
    tenant_id: int = 1,
) -> KnowledgeAgent:
    spec = AgentSpec(id=agent_id, tenant_id=tenant_id, name="helper", kind="knowledge", config=config or {})
    agent = build_agent(spec, AgentDeps(retriever=retriever, settings=None))
    assert isinstance(agent, KnowledgeAgent)
    return agent


def body(reply: AgentReply) -> str:
    assert len(reply.replies) == 1
    out = reply.replies[0]
    assert isinstance(out, OutText)
    return out.body


# ------------------------------------------------------------------------------------ answering


async def test_answers_with_the_best_passage_when_confident() -> None:
    retriever = FakeRetriever([passage(0.8)])
    reply = await make_agent(retriever).respond(text_turn("When do you open?"))
    assert body(reply) == "We open at 8."
    assert reply.notes["passages"] == [
        {"id": 41, "document": "faq.csv", "title": "Opening hours?", "score": 0.8}
    ]
    assert "nearest" not in reply.notes
    assert reply.notes["confidence"] == 0.8
    assert reply.notes["outcome"] == "answer"
    assert retriever.calls == [{"tenant_id": 1, "agent_id": 7, "query": "When do you open?", "limit": 1}]


async def test_says_it_does_not_know_below_the_threshold() -> None:
    retriever = FakeRetriever([passage(DEFAULT_MIN_CONFIDENCE - 0.01)])
    reply = await make_agent(retriever).respond(text_turn("Do you sell tea?"))
    assert body(reply) == DEFAULT_UNKNOWN["english"]
    assert reply.notes["passages"] == []
    assert reply.notes["confidence"] == pytest.approx(DEFAULT_MIN_CONFIDENCE - 0.01)
    # What came closest is recorded for the operator, apart from the passages an answer used.
    assert reply.notes["nearest"] == [
        {"id": 41, "document": "faq.csv", "title": "Opening hours?", "score": DEFAULT_MIN_CONFIDENCE - 0.01}
    ]


async def test_unknown_when_nothing_is_found_in_the_users_language() -> None:
    reply = await make_agent(FakeRetriever()).respond(text_turn("¿Quién ganó el mundial de fútbol?"))
    assert body(reply) == DEFAULT_UNKNOWN["spanish"]
    assert reply.notes["confidence"] == 0.0
    assert reply.notes["passages"] == []


async def test_threshold_is_configurable() -> None:
    retriever = FakeRetriever([passage(0.3)])
    assert (
        body(await make_agent(retriever, {"min_confidence": 0.25}).respond(text_turn("hours?")))
        == "We open at 8."
    )
    assert (
        body(await make_agent(retriever, {"min_confidence": 0.9}).respond(text_turn("hours?")))
        == (DEFAULT_UNKNOWN["english"])
    )


async def test_section_passages_answer_with_their_content_trimmed() -> None:
    sentences = " ".join(f"Sentence {i} says something about our café." for i in range(80))
    retriever = FakeRetriever([passage(0.9, answer=None, content=sentences)])
    text = body(await make_agent(retriever).respond(text_turn("Tell me about the café")))
    assert len(text) <= MAX_ANSWER_CHARS + 2
    assert text.endswith("café. …")
    assert sentences.startswith(text[:-2])


def test_trim_answer_keeps_short_text_whole() -> None:
    assert trim_answer("  **Hours**\n\nEvery day.  ") == "**Hours**\n\nEvery day."
    assert trim_answer("word " * 10, limit=12) == "word word …"


async def test_multiple_messages_are_one_question() -> None:
    retriever = FakeRetriever([passage(0.9)])
    await make_agent(retriever).respond(text_turn("hi", "when do you open", "on sunday?"))
    assert retriever.calls[0]["query"] == "hi\nwhen do you open\non sunday?"


async def test_buttons_and_list_replies_are_read_as_text() -> None:
    retriever = FakeRetriever([passage(0.9)])
    agent = make_agent(retriever)
    await agent.respond(turn(message(ButtonContent(payload="HOURS", text="Opening hours"), "button")))
    await agent.respond(
        turn(
            message(
                InteractiveReplyContent(reply_type="list_reply", id="r1", title="Delivery"), "interactive"
            )
        )
    )
    assert [c["query"] for c in retriever.calls] == ["Opening hours", "Delivery"]


async def test_text_beside_media_is_answered() -> None:
    retriever = FakeRetriever([passage(0.9)])
    reply = await make_agent(retriever).respond(
        turn(
            message(MediaContent(media_type="image", media_id="m1"), "image"),
            message(TextContent(body="hours?")),
        )
    )
    assert body(reply) == "We open at 8."


# ------------------------------------------------------------------------------ small talk


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("hi", "english"),
        ("Hello!", "english"),
        ("Good morning 👋", "english"),
        ("hola", "spanish"),
        ("¡Buenos días!", "spanish"),
        ("halo", "indonesian"),
        ("Selamat pagi kak", "indonesian"),
    ],
)
async def test_greetings_get_a_greeting(text: str, language: str) -> None:
    retriever = FakeRetriever([passage(0.9)])
    reply = await make_agent(retriever).respond(text_turn(text))
    assert body(reply) == DEFAULT_GREETING[language]
    assert reply.notes["outcome"] == "greeting"
    assert retriever.calls == []


@pytest.mark.parametrize(
    ("text", "language"), [("thanks!", "english"), ("Thank you so much", "english"), ("gracias", "spanish")]
)
async def test_thanks_get_a_welcome(text: str, language: str) -> None:
    reply = await make_agent(FakeRetriever()).respond(text_turn(text))
    assert body(reply) == DEFAULT_THANKS[language]


async def test_a_greeting_with_a_question_is_a_question() -> None:
    retriever = FakeRetriever([passage(0.9)])
    assert body(await make_agent(retriever).respond(text_turn("hi, when do you open?"))) == "We open at 8."


# ---------------------------------------------------------------------------- other messages


@pytest.mark.parametrize(
    ("content", "type_"),
    [
        (MediaContent(media_type="image", media_id="m1", caption="is this in stock?"), "image"),
        (MediaContent(media_type="audio", media_id="m2", voice=True), "audio"),
        (MediaContent(media_type="document", media_id="m4", filename="order.pdf"), "document"),
        (LocationContent(latitude=-6.9, longitude=107.6), "location"),
        (
            ContactsContent(
                contacts=(SharedContact(formatted_name="Budi", phones=(ContactPhone(phone="+62"),)),)
            ),
            "contacts",
        ),
        (OrderContent(catalog_id="c1", items=(OrderItem(product_retailer_id="gayo", quantity=2),)), "order"),
        (UnsupportedContent(original_type="poll"), "unsupported"),
    ],
)
async def test_non_text_messages_get_the_text_only_reply(content: InboundContent, type_: str) -> None:
    retriever = FakeRetriever([passage(0.9)])
    reply = await make_agent(retriever).respond(turn(message(content, type_)))
    assert body(reply) == DEFAULT_UNSUPPORTED["english"]
    assert reply.notes["outcome"] == "unsupported"
    assert retriever.calls == []


@pytest.mark.parametrize(
    "content",
    [
        ReactionContent(message_id="wamid.out", emoji="👍"),
        ReactionContent(message_id="wamid.out", emoji=None),
        MediaContent(media_type="sticker", media_id="m3", animated=True),
        MediaContent(media_type="sticker", media_id="m5"),
        RevokeContent(original_message_id="wamid.1"),
        SystemContent(body="User changed number", system_type="user_changed_number"),
    ],
)
async def test_reactions_stickers_and_notices_get_no_reply(content: InboundContent) -> None:
    retriever = FakeRetriever([passage(0.9)])
    type_ = "sticker" if isinstance(content, MediaContent) else content.kind
    assert await make_agent(retriever).respond(turn(message(content, type_))) == AgentReply()
    assert retriever.calls == []


async def test_text_beside_a_reaction_or_sticker_is_answered() -> None:
    retriever = FakeRetriever([passage(0.9)])
    reply = await make_agent(retriever).respond(
        turn(
            message(ReactionContent(message_id="wamid.out", emoji="👍"), "reaction"),
            message(MediaContent(media_type="sticker", media_id="m3"), "sticker"),
            message(TextContent(body="when do you open?")),
        )
    )
    assert body(reply) == "We open at 8."
    assert [c["query"] for c in retriever.calls] == ["when do you open?"]


# ------------------------------------------------------------------------------- configuration


async def test_texts_are_configurable_as_one_string_or_per_language() -> None:
    config = {
        "unknown_text": "Ask the barista!",
        "greeting_text": {"english": "Welcome to Kopi!", "spanish": "¡Bienvenido a Kopi!"},
        "unsupported_text": "Text only, please.",
        "thanks_text": {"indonesian": "Sama-sama, kak!"},
    }
    agent = make_agent(FakeRetriever(), config)
    assert body(await agent.respond(text_turn("do you sell tea"))) == "Ask the barista!"
    assert body(await agent.respond(text_turn("¿quién ganó el mundial?"))) == "Ask the barista!"
    assert body(await agent.respond(text_turn("hola"))) == "¡Bienvenido a Kopi!"
    assert body(await agent.respond(text_turn("selamat pagi"))) == "Welcome to Kopi!"  # falls back to English
    assert body(await agent.respond(text_turn("thanks"))) == "Sama-sama, kak!"  # the only one given
    assert body(await agent.respond(turn(message(LocationContent(latitude=1, longitude=2), "location")))) == (
        "Text only, please."
    )


@pytest.mark.parametrize(
    "config",
    [
        {"min_confidence": -0.1},
        {"min_confidence": 1.5},
        {"min_confidence": "high"},
        {"min_confidence": True},
        {"unknown_text": ""},
        {"greeting_text": 5},
        {"unsupported_text": {"english": ""}},
        {"thanks_text": {}},
    ],
)
def test_bad_config_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="knowledge agent"):
        KnowledgeAgentConfig.from_mapping(config)


def test_registered_as_knowledge() -> None:
    assert "knowledge" in agent_kinds()
    agent = make_agent(FakeRetriever(), {"min_confidence": 0.7})
    assert agent.kind == "knowledge"
    assert agent.config.min_confidence == 0.7


async def test_refuses_a_turn_of_another_tenant() -> None:
    retriever = FakeRetriever([passage(0.9)])
    with pytest.raises(AgentError, match="tenant 2"):
        await make_agent(retriever, tenant_id=1).respond(text_turn("hours?", tenant_id=2))
    assert retriever.calls == []


async def test_scope_falls_back_to_the_turns_agent() -> None:
    retriever = FakeRetriever([passage(0.9)])
    await make_agent(retriever, agent_id=None).respond(text_turn("hours?", agent_id=9))
    assert retriever.calls[0]["agent_id"] == 9
    reply = await make_agent(retriever, agent_id=None).respond(text_turn("hours?", agent_id=None))
    assert body(reply) == DEFAULT_UNKNOWN["english"]
    assert len(retriever.calls) == 1


# ---------------------------------------------------------------------- the demo, both engines


async def _demo_agent(engine: AsyncEngine, database: Database) -> KnowledgeAgent:
    async with engine.begin() as conn:
        tenant_id = (
            await conn.execute(insert(Tenant).values(subdomain="demo").returning(Tenant.id))
        ).scalar_one()
        agent_id = (
            await conn.execute(
                insert(Agent)
                .values(tenant_id=tenant_id, name="helper", kind="knowledge", config={})
                .returning(Agent.id)
            )
        ).scalar_one()
    folder = Path(warelay.demo.__file__).parent / "knowledge"
    await add_folder(engine, tenant_id=tenant_id, agent_id=agent_id, folder=folder)
    return make_agent(DatabaseRetriever(database), agent_id=agent_id, tenant_id=tenant_id)


@pytest.mark.parametrize(
    ("question", "expected_start"),
    [
        ("What time do you open?", "Our café and roastery in Bandung open at 8:00"),
        ("Is shipping free?", "Shipping is calculated at checkout"),
        ("¿Puedo pagar con tarjeta de crédito?", "Aceptamos transferencia bancaria"),
        ("Bisa bayar pakai QRIS?", "Kami menerima transfer bank"),
        ("Do you have a bicycle courier?", "Our bags are made of compostable kraft paper"),
    ],
)
async def test_demo_agent_answers_from_the_knowledge(
    engine: AsyncEngine, database: Database, question: str, expected_start: str
) -> None:
    agent = await _demo_agent(engine, database)
    reply = await agent.respond(text_turn(question, tenant_id=agent.spec.tenant_id, agent_id=agent.spec.id))
    assert body(reply).startswith(expected_start)
    assert reply.notes["confidence"] >= DEFAULT_MIN_CONFIDENCE
    assert len(reply.notes["passages"]) == 1


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("what is the capital of France", "english"),
        ("¿quién ganó el mundial?", "spanish"),
        ("siapa presiden pertama", "indonesian"),
        ("siapa presiden pertama Indonesia?", "indonesian"),
        ("can I pay my electricity bill here?", "english"),
    ],
)
async def test_demo_agent_does_not_make_things_up(
    engine: AsyncEngine, database: Database, question: str, language: str
) -> None:
    agent = await _demo_agent(engine, database)
    reply = await agent.respond(text_turn(question, tenant_id=agent.spec.tenant_id, agent_id=agent.spec.id))
    assert body(reply) == DEFAULT_UNKNOWN[language]
    assert reply.notes["passages"] == []
    assert reply.notes["confidence"] < DEFAULT_MIN_CONFIDENCE


# ------------------------------------------------------------------ the clinic FAQ, both engines


async def _clinic_agent(engine: AsyncEngine, database: Database) -> KnowledgeAgent:
    async with engine.begin() as conn:
        tenant_id = (
            await conn.execute(insert(Tenant).values(subdomain="clinic").returning(Tenant.id))
        ).scalar_one()
        agent_id = (
            await conn.execute(
                insert(Agent)
                .values(tenant_id=tenant_id, name="front-desk", kind="knowledge", config={})
                .returning(Agent.id)
            )
        ).scalar_one()
    await add_document(
        engine, tenant_id=tenant_id, agent_id=agent_id, name=FAQ_FILE.name, data=FAQ_FILE.read_bytes()
    )
    return make_agent(DatabaseRetriever(database), agent_id=agent_id, tenant_id=tenant_id)


async def test_clinic_agent_answers_in_scope_and_abstains_out_of_scope(
    engine: AsyncEngine, database: Database
) -> None:
    agent = await _clinic_agent(engine, database)
    titles = faq_titles()
    answers = {}
    with FAQ_FILE.open(encoding="utf-8", newline="") as f:
        answers = {(row["topic"], row["language"]): row["answer"] for row in csv.DictReader(f)}
    answered = abstained = wrong = 0
    in_scope = out_of_scope = 0
    for language, questions in eval_set().items():
        for question, topic in questions.paraphrases + questions.typos:
            in_scope += 1
            reply = await agent.respond(
                text_turn(question, tenant_id=agent.spec.tenant_id, agent_id=agent.spec.id)
            )
            if reply.notes["outcome"] == "answer":
                [used] = reply.notes["passages"]
                assert used["document"] == FAQ_FILE.name
                assert used["score"] == reply.notes["confidence"] >= DEFAULT_MIN_CONFIDENCE
                if used["title"] == titles[(topic, language)]:
                    answered += 1
                    assert body(reply) == answers[(topic, language)]
                else:
                    wrong += 1
            else:
                assert reply.notes["outcome"] == "unknown"
                assert body(reply) == DEFAULT_UNKNOWN[reply.notes["language"]]
        for question in questions.out_of_scope:
            out_of_scope += 1
            reply = await agent.respond(
                text_turn(question, tenant_id=agent.spec.tenant_id, agent_id=agent.spec.id)
            )
            if reply.notes["outcome"] == "unknown":
                abstained += 1
                assert reply.notes["passages"] == []
    print(
        f"\n{engine.dialect.name}: clinic agent answered {answered}/{in_scope} in-scope questions rightly, "
        f"{wrong} wrongly; said it did not know to {abstained}/{out_of_scope} out-of-scope questions"
    )
    # Measured: 45 right and 7 wrong of 93 in scope; 30 of 30 out of scope refused.
    assert answered >= 42
    assert wrong <= 8
    assert abstained >= 28


# --------------------------------------------------------------------------- media, reply language


async def test_a_transcribed_voice_note_is_answered_like_text() -> None:
    retriever = FakeRetriever([passage(0.9)])
    voice = message(MediaContent(media_type="audio", media_id="m7", voice=True), "audio")
    attachment = Attachment(media_type="audio", status="stored", text="When do you open on Saturday?")
    reply = await make_agent(retriever).respond(
        dataclasses.replace(turn(voice), attachments={voice.provider_message_id: attachment})
    )
    assert body(reply) == "We open at 8."
    assert retriever.calls[0]["query"] == "When do you open on Saturday?"


async def test_an_untranscribed_voice_note_gets_the_polite_reply() -> None:
    voice = message(MediaContent(media_type="audio", media_id="m8", voice=True), "audio")
    failed = Attachment(media_type="audio", status="failed", reason="download failed")
    reply = await make_agent(FakeRetriever([passage(0.9)])).respond(
        dataclasses.replace(turn(voice), attachments={voice.provider_message_id: failed})
    )
    assert body(reply) == DEFAULT_UNSUPPORTED["english"]


async def test_a_fixed_reply_language_picks_its_texts_whatever_the_question() -> None:
    agent = make_agent(FakeRetriever([]), {"reply_language": "es"})
    reply = await agent.respond(text_turn("Do you sell spaceships?"))
    assert body(reply) == DEFAULT_UNKNOWN["spanish"]
    auto = await make_agent(FakeRetriever([]), {"reply_language": "auto"}).respond(
        text_turn("Do you sell spaceships?")
    )
    assert body(auto) == DEFAULT_UNKNOWN["english"]
