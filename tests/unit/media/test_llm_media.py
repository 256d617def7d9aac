"""The llm agent's media part: what the model receives for images, voice notes, documents and stickers.

Most tests give the agent pydantic-ai's ``FunctionModel`` and assert on the exact request; one
sends the turn over HTTP to the OpenAI-compatible server on loopback and asserts the Chat
Completions body on the wire (the image as an ``image_url`` data URI).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.messages import (
    BinaryContent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.fakes_openai import OpenAICompatibleServer
from warelay.agents.base import AgentDeps, AgentSpec, Attachment, HistoryItem, Passage, SessionState, Turn
from warelay.agents.llm import LLMAgent
from warelay.config import AgentSettings, LLMSettings, MediaSettings, Settings
from warelay.domain import (
    InboundContent,
    InboundMessage,
    MediaContent,
    OutText,
    ReactionContent,
    TextContent,
    UnsupportedContent,
    UserRef,
)
from warelay.errors import AgentError

PNG = (Path(__file__).parents[2] / "data" / "media" / "red.png").read_bytes()
T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


class NoKnowledge:
    """A retriever with nothing in it, recording queries."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def search(self, *, tenant_id: int, agent_id: int, query: str, limit: int = 5) -> Sequence[Passage]:
        """Record the query; find nothing."""
        self.queries.append(query)
        return ()


class Recorder:
    """A FunctionModel body recording each request and answering a fixed text."""

    def __init__(self, answer: str = "Lovely!") -> None:
        self.answer = answer
        self.requests: list[list[ModelMessage]] = []
        self.infos: list[AgentInfo] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        """Record and answer."""
        self.requests.append(list(messages))
        self.infos.append(info)
        return ModelResponse(parts=[TextPart(self.answer)])

    def user_content(self) -> Any:
        """The content of the last user prompt part of the last request."""
        request = self.requests[-1][-1]
        assert isinstance(request, ModelRequest)
        parts = [p for p in request.parts if isinstance(p, UserPromptPart)]
        return parts[-1].content


def message(content: InboundContent, wamid: str) -> InboundMessage:
    return InboundMessage(
        provider_message_id=wamid,
        number_id="1055",
        sender=UserRef(wa_id="15550001111"),
        timestamp=T0,
        type=getattr(content, "media_type", content.kind),
        content=content,
    )


def turn(*items: tuple[InboundContent, Attachment | None]) -> Turn:
    messages = tuple(message(content, f"wamid.{i}") for i, (content, _) in enumerate(items))
    attachments = {f"wamid.{i}": a for i, (_, a) in enumerate(items) if a is not None}
    return Turn(
        tenant_id=7,
        tenant="acme",
        number_id=1,
        phone_number_id="1055",
        agent_id=3,
        user_key="15550001111",
        user_name="Maria",
        session=SessionState(session_id="s1"),
        messages=messages,
        attachments=attachments,
    )


def settings(**media: Any) -> Settings:
    return Settings(
        llm=LLMSettings(base_url="http://127.0.0.1:1/v1"),
        agent=AgentSettings(timeout_seconds=5),
        media=MediaSettings(**media),
    )


def agent(recorder: Recorder, *, retriever: NoKnowledge | None = None, **config: Any) -> LLMAgent:
    deps = AgentDeps(retriever=retriever or NoKnowledge(), settings=settings())
    spec = AgentSpec(id=3, tenant_id=7, name="shop-bot", kind="llm", config=config)
    return LLMAgent(spec, deps, model=FunctionModel(recorder, model_name="vision-model"))


IMAGE = MediaContent(
    media_type="image", media_id="m1", mime_type="image/png", caption="Is this cake available?"
)
STORED_PNG = Attachment("image", "stored", mime_type="image/png", size=len(PNG), data=PNG)


async def test_an_image_reaches_the_model_as_image_content_with_its_caption() -> None:
    recorder = Recorder()
    retriever = NoKnowledge()
    reply = await agent(recorder, retriever=retriever).respond(turn((IMAGE, STORED_PNG)))
    content = recorder.user_content()
    assert content == ["[image] Is this cake available?", BinaryContent(PNG, media_type="image/png")]
    assert retriever.queries == ["[image] Is this cake available?"]
    assert reply.replies == (OutText(body="Lovely!"),)
    assert reply.notes["images"] == 1


async def test_a_model_without_vision_is_told_it_cannot_see_the_image() -> None:
    recorder = Recorder()
    llm = agent(recorder, vision=False)
    await llm.respond(turn((IMAGE, STORED_PNG)))
    assert recorder.user_content() == "[image: I cannot open it] Is this cake available?"
    bare = MediaContent(media_type="image", media_id="m2", mime_type="image/png")
    reply = await llm.respond(turn((bare, STORED_PNG)))
    assert len(recorder.requests) == 1  # nothing left to answer: the polite reply, no model call
    assert reply.replies == (OutText(body=MediaSettings().unsupported_text),)


async def test_a_voice_note_becomes_its_transcript() -> None:
    recorder = Recorder()
    voice = MediaContent(media_type="audio", media_id="m3", voice=True)
    transcribed = Attachment("audio", "stored", text="Can I pick up two loaves at 5?")
    await agent(recorder).respond(turn((voice, transcribed)))
    assert recorder.user_content() == "[voice note, transcribed] Can I pick up two loaves at 5?"


async def test_a_voice_note_without_a_transcript_is_a_placeholder_the_model_answers() -> None:
    recorder = Recorder("Sorry, I can't listen to voice notes. Could you type it?")
    voice = MediaContent(media_type="audio", media_id="m3", voice=True)
    reply = await agent(recorder).respond(turn((voice, Attachment("audio", "stored"))))
    assert recorder.user_content() == "[voice note: the customer sent a voice note I cannot listen to]"
    assert reply.replies == (OutText(body="Sorry, I can't listen to voice notes. Could you type it?"),)


async def test_a_document_becomes_its_text_and_filename() -> None:
    recorder = Recorder()
    doc = MediaContent(media_type="document", media_id="m4", filename="order.pdf")
    extracted = Attachment("document", "stored", filename="order.pdf", text="2 x sourdough")
    await agent(recorder).respond(turn((doc, extracted)))
    assert recorder.user_content() == '[document order.pdf]\nText of order.pdf:\n"""\n2 x sourdough\n"""'


@pytest.mark.parametrize(
    ("content", "attachment"),
    [
        (MediaContent(media_type="video", media_id="v"), Attachment("video", "stored")),
        (MediaContent(media_type="image", media_id="i"), Attachment("image", "failed")),
        (MediaContent(media_type="image", media_id="i"), Attachment("image", "too_large")),
        (
            MediaContent(media_type="document", media_id="d", filename="x.docx"),
            Attachment("document", "stored"),
        ),
        (MediaContent(media_type="image", media_id="i"), None),
        (UnsupportedContent(original_type="poll"), None),
    ],
)
async def test_what_cannot_be_understood_gets_the_polite_reply_without_a_model_call(
    content: InboundContent, attachment: Attachment | None
) -> None:
    recorder = Recorder()
    reply = await agent(recorder).respond(turn((content, attachment)))
    assert recorder.requests == []
    assert reply.replies == (OutText(body=MediaSettings().unsupported_text),)
    assert reply.notes["unsupported"] == [getattr(content, "media_type", "unsupported")]


async def test_the_polite_reply_is_configurable_per_agent() -> None:
    recorder = Recorder()
    llm = agent(recorder, unsupported_text="Só leio texto e fotos, desculpe!")
    reply = await llm.respond(turn((UnsupportedContent(original_type="poll"), None)))
    assert reply.replies == (OutText(body="Só leio texto e fotos, desculpe!"),)


LOCALIZED = {"english": "Sorry, I can only read text.", "spanish": "Lo siento, solo leo texto."}


async def test_a_polite_reply_per_language_follows_the_fixed_reply_language() -> None:
    llm = agent(Recorder(), unsupported_text=LOCALIZED, reply_language="es")
    reply = await llm.respond(turn((UnsupportedContent(original_type="poll"), None)))
    assert reply.replies == (OutText(body="Lo siento, solo leo texto."),)


async def test_a_polite_reply_per_language_follows_the_customers_earlier_messages() -> None:
    llm = agent(Recorder(), unsupported_text=LOCALIZED)
    poll = turn((UnsupportedContent(original_type="poll"), None))
    assert (await llm.respond(poll)).replies == (OutText(body="Sorry, I can only read text."),)
    spoken = dataclasses.replace(
        poll, history=(HistoryItem(role="user", text="Hola, ¿cuánto cuesta el pan de centeno?", at=T0),)
    )
    assert (await llm.respond(spoken)).replies == (OutText(body="Lo siento, solo leo texto."),)


@pytest.mark.parametrize("broken", [{"english": ""}, 5, "   ", {"english": 3}])
def test_a_broken_unsupported_text_is_refused(broken: object) -> None:
    with pytest.raises(ValueError, match="unsupported_text"):
        agent(Recorder(), unsupported_text=broken)


async def test_understood_and_not_understood_together_go_to_the_model_with_placeholders() -> None:
    recorder = Recorder()
    video = MediaContent(media_type="video", media_id="v")
    await agent(recorder).respond(
        turn((video, Attachment("video", "stored")), (TextContent(body="what is this?"), None))
    )
    assert recorder.user_content() == "[video: the customer sent a video I cannot watch]\nwhat is this?"


async def test_a_sticker_may_go_unanswered() -> None:
    recorder = Recorder(answer="")
    sticker = MediaContent(media_type="sticker", media_id="s", mime_type="image/webp")
    reply = await agent(recorder).respond(
        turn((sticker, Attachment("sticker", "stored", mime_type="image/webp", data=b"RIFF")))
    )
    assert reply.replies == ()
    assert recorder.user_content() == ["[sticker]", BinaryContent(b"RIFF", media_type="image/webp")]
    instructions = recorder.infos[-1].instructions
    assert instructions is not None
    assert "only a sticker or a reaction" in instructions


async def test_a_reaction_turn_may_go_unanswered_but_others_may_not() -> None:
    quiet = await agent(Recorder(answer="")).respond(
        turn((ReactionContent(message_id="w0", emoji="❤"), None))
    )
    assert quiet.replies == ()
    recorder = Recorder(answer="")
    with pytest.raises(AgentError, match="empty answer"):
        await agent(recorder).respond(turn((TextContent(body="hello?"), None)))
    instructions = recorder.infos[-1].instructions
    assert instructions is not None
    assert "sticker" not in instructions


async def test_the_image_is_sent_as_an_image_url_data_uri_on_the_wire() -> None:
    async with OpenAICompatibleServer(lambda body: "It is available!") as server:
        deps = AgentDeps(retriever=NoKnowledge(), settings=settings())
        spec = AgentSpec(
            id=3, tenant_id=7, name="shop-bot", kind="llm", config={"base_url": server.base_url, "model": "v"}
        )
        llm = LLMAgent(spec, deps)
        try:
            reply = await llm.respond(turn((IMAGE, STORED_PNG)))
        finally:
            await llm.aclose()
    assert reply.replies == (OutText(body="It is available!"),)
    user = server.requests[-1]["messages"][-1]
    assert user["role"] == "user"
    text_part, image_part = user["content"]
    assert text_part == {"type": "text", "text": "[image] Is this cake available?"}
    assert image_part["type"] == "image_url"
    assert image_part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
