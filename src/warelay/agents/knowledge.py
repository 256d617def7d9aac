"""The offline knowledge agent: answers a turn from the business's knowledge files, no model needed.

Where it sits: stage ④ of the path. The worker hands it a :class:`~warelay.agents.base.Turn`; it
searches the agent's passages through ``deps.retriever`` (``knowledge.search.DatabaseRetriever`` in
the application) and replies with the best passage's answer when the retrieval confidence clears
``min_confidence``, or with the "I don't know that yet" text otherwise. Greetings and thanks get
short friendly replies, messages it cannot read (media, locations, contacts, orders…) a polite
"text only for now", and reactions, stickers, edits, deletions and notices no reply at all.

Its notes record, for the operator, the outcome, the confidence, the language and the passages the
answer came from (``knowledge.search.passage_notes``: id, document, title, score); when it says it
does not know, ``nearest`` holds the passage that came closest.

Configuration (``agents.config``, every key optional)::

    min_confidence    0..1, default 0.45 (tuned on out-of-scope questions: knowledge/test_quality.py)
    unknown_text      reply when nothing in the knowledge answers the question
    greeting_text     reply to a bare greeting ("hi", "hola", "selamat pagi")
    thanks_text       reply to a bare thank-you
    unsupported_text  reply to a message that is not text

Each text is either one string or a mapping from language ("english", "spanish", "indonesian")
to a string; the user's language picks the entry, falling back to English.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from warelay.agents.base import (
    AgentDeps,
    AgentReply,
    AgentSpec,
    Attachment,
    Passage,
    Retriever,
    Turn,
    register_agent,
)
from warelay.agents.config import language_name
from warelay.domain import (
    ButtonContent,
    ContactsContent,
    EditContent,
    InboundMessage,
    InteractiveReplyContent,
    LocationContent,
    MediaContent,
    OrderContent,
    OutText,
    ReactionContent,
    RevokeContent,
    SystemContent,
    TextContent,
    UnsupportedContent,
)
from warelay.errors import AgentError
from warelay.knowledge.search import passage_notes
from warelay.knowledge.text import DEFAULT_LANGUAGE, LANGUAGES, detect_language, tokenize

log = logging.getLogger("warelay.agents.knowledge")

DEFAULT_MIN_CONFIDENCE: Final = 0.45
# Long sections are cut for chat; WhatsApp takes 4096 characters but nobody reads that on a phone.
MAX_ANSWER_CHARS: Final = 1500

DEFAULT_UNKNOWN: Final[Localized] = MappingProxyType(
    {
        "english": "Sorry, I don't know that yet. A member of our team will get back to you.",
        "spanish": "Lo siento, todavía no lo sé. Alguien de nuestro equipo te responderá pronto.",
        "indonesian": "Maaf, saya belum tahu jawabannya. Tim kami akan segera membalas pesanmu.",
    }
)
DEFAULT_GREETING: Final[Localized] = MappingProxyType(
    {
        "english": "Hi! 👋 How can I help you today?",
        "spanish": "¡Hola! 👋 ¿En qué te puedo ayudar?",
        "indonesian": "Halo! 👋 Ada yang bisa kami bantu?",
    }
)
DEFAULT_THANKS: Final[Localized] = MappingProxyType(
    {
        "english": "You're welcome! 😊",
        "spanish": "¡De nada! 😊",
        "indonesian": "Sama-sama! 😊",
    }
)
DEFAULT_UNSUPPORTED: Final[Localized] = MappingProxyType(
    {
        "english": "Sorry, I can only read text messages for now. Could you write your question?",
        "spanish": "Lo siento, por ahora solo puedo leer mensajes de texto. ¿Puedes escribir tu pregunta?",
        "indonesian": "Maaf, untuk saat ini saya hanya bisa membaca pesan teks. Boleh tulis pertanyaannya?",
    }
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Folded words a bare greeting or thank-you is made of; a message with any other word is a question.
_GREETING_WORDS: Final = _words(
    """
    hi hello hey hiya hallo helo yo greetings good morning afternoon evening day there all everyone
    team guys hola buenos buenas dias tardes noches que tal halo hai hay selamat pagi siang sore malam
    permisi assalamualaikum assalamu alaikum salam kak kakak min admin gan sis mas mbak
    """
)
_GREETING_CORE: Final = _words(
    "hi hello hey hiya hallo helo yo greetings morning afternoon evening hola buenos buenas halo hai "
    "selamat assalamualaikum salam"
)
_THANKS_WORDS: Final = _words(
    """
    thanks thank you thx ty much so very a lot many gracias muchas mil terima kasih makasih banyak
    nuhun tengkyu ok okay oke great perfect perfecto sip mantap kak min gan
    """
)
_THANKS_CORE: Final = _words("thanks thank thx ty gracias terima makasih tengkyu nuhun")

Localized = Mapping[str, str]


def _localized(config: Mapping[str, Any], key: str, default: Localized) -> Localized:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value.strip():
        return dict.fromkeys(LANGUAGES, value)
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items())
    ):
        return dict(value)
    raise ValueError(f"knowledge agent: {key} must be a non-empty string or a mapping of language to string")


@dataclass(frozen=True, slots=True)
class KnowledgeAgentConfig:
    """The knowledge agent's settings, validated (see the module docstring for the keys)."""

    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    unknown_text: Localized = field(default_factory=lambda: DEFAULT_UNKNOWN)
    greeting_text: Localized = field(default_factory=lambda: DEFAULT_GREETING)
    thanks_text: Localized = field(default_factory=lambda: DEFAULT_THANKS)
    unsupported_text: Localized = field(default_factory=lambda: DEFAULT_UNSUPPORTED)
    # The language of every reply ("spanish"), or None to answer in the customer's.
    reply_language: str | None = None

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> KnowledgeAgentConfig:
        """Build the settings from an agent's stored configuration; ``ValueError`` on a bad value."""
        threshold = config.get("min_confidence", DEFAULT_MIN_CONFIDENCE)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise ValueError(
                f"knowledge agent: min_confidence must be a number from 0 to 1, not {threshold!r}"
            )
        return cls(
            min_confidence=float(threshold),
            unknown_text=_localized(config, "unknown_text", DEFAULT_UNKNOWN),
            greeting_text=_localized(config, "greeting_text", DEFAULT_GREETING),
            thanks_text=_localized(config, "thanks_text", DEFAULT_THANKS),
            unsupported_text=_localized(config, "unsupported_text", DEFAULT_UNSUPPORTED),
            reply_language=(language_name(config.get("reply_language")) or "").lower() or None,
        )


def _pick(texts: Localized, language: str) -> str:
    text = texts.get(language) or texts.get(DEFAULT_LANGUAGE)
    return text if text is not None else next(iter(texts.values()))


# ------------------------------------------------------------------------------- reading the turn

Handling = Literal["text", "unsupported", "silent"]


def _text_of(message: InboundMessage, attachment: Attachment | None = None) -> str | None:
    content = message.content
    if isinstance(content, TextContent):
        return content.body
    if isinstance(content, MediaContent):
        # A voice note is read as its transcript, when one was made. A caption of other media
        # ("is this in stock?") is about what this agent cannot see: those get the polite reply.
        if content.media_type == "audio" and attachment is not None and attachment.text:
            return attachment.text
        return None
    if isinstance(content, ButtonContent):
        return content.text or content.payload
    if isinstance(content, InteractiveReplyContent):
        return content.title or content.description
    return None


# How each kind of inbound content is handled; a kind missing here counts as unsupported.
_HANDLING: Final[dict[type, Handling]] = {
    TextContent: "text",
    ButtonContent: "text",
    InteractiveReplyContent: "text",
    MediaContent: "unsupported",
    LocationContent: "unsupported",
    ContactsContent: "unsupported",
    OrderContent: "unsupported",
    UnsupportedContent: "unsupported",
    ReactionContent: "silent",
    RevokeContent: "silent",
    SystemContent: "silent",
    EditContent: "silent",
}


def _handling(message: InboundMessage, attachment: Attachment | None = None) -> Handling:
    content = message.content
    if isinstance(content, MediaContent):
        if content.media_type == "sticker":
            return "silent"  # a sticker is a reaction in picture form, not a question
        if _text_of(message, attachment):
            return "text"  # a transcribed voice note
    return _HANDLING.get(type(content), "unsupported")


def _is_bare(tokens: Sequence[str], words: frozenset[str], core: frozenset[str]) -> bool:
    return 0 < len(tokens) <= 6 and all(t in words for t in tokens) and any(t in core for t in tokens)


_SENTENCE_END = re.compile(r"[.!?…](?=\s)")


def trim_answer(content: str, limit: int = MAX_ANSWER_CHARS) -> str:
    """A passage's text for a chat reply: whole when short, else cut after the last sentence that fits.

    Markdown stays as written: the worker turns every reply into WhatsApp markup
    (``outbound.format.markdown_to_whatsapp``) before it is split and sent.
    """
    text = content.strip()
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.end() for m in _SENTENCE_END.finditer(head + " ")]
    cut = ends[-1] if ends and ends[-1] > limit // 2 else head.rfind(" ")
    return head[: cut if cut > 0 else limit].rstrip() + " …"


# ------------------------------------------------------------------------------------------ agent


class KnowledgeAgent:
    """Answers questions with the best-matching passage of the agent's knowledge, or says it does not know."""

    kind = "knowledge"

    def __init__(self, *, spec: AgentSpec, retriever: Retriever, config: KnowledgeAgentConfig) -> None:
        self.spec = spec
        self.config = config
        self._retriever = retriever

    def _language(self, question: str | None) -> str:
        """The language to reply in: the agent's fixed one, else the question's, else the default."""
        if self.config.reply_language:
            return self.config.reply_language
        return detect_language(question) if question else DEFAULT_LANGUAGE

    async def respond(self, turn: Turn) -> AgentReply:
        """Answer one turn (see the module docstring for what each kind of message gets)."""
        if turn.tenant_id != self.spec.tenant_id:
            # Never answer one tenant's user from another tenant's knowledge.
            raise AgentError(
                f"turn of tenant {turn.tenant_id} given to an agent of tenant {self.spec.tenant_id}"
            )
        attachments = [turn.attachments.get(m.provider_message_id) for m in turn.messages]
        handlings = [_handling(m, a) for m, a in zip(turn.messages, attachments, strict=True)]
        texts = [
            t
            for m, a, h in zip(turn.messages, attachments, handlings, strict=True)
            if h == "text" and (t := _text_of(m, a))
        ]
        if not texts:
            if "unsupported" in handlings:
                return self._say(self.config.unsupported_text, self._language(None), "unsupported")
            return AgentReply()
        question = "\n".join(texts)
        language = self._language(question)
        tokens = tokenize(question)
        if _is_bare(tokens, _GREETING_WORDS, _GREETING_CORE):
            return self._say(self.config.greeting_text, language, "greeting")
        if _is_bare(tokens, _THANKS_WORDS, _THANKS_CORE):
            return self._say(self.config.thanks_text, language, "thanks")
        return await self._answer(turn, question, language)

    async def _answer(self, turn: Turn, question: str, language: str) -> AgentReply:
        agent_id = self.spec.id if self.spec.id is not None else turn.agent_id
        passages: Sequence[Passage] = ()
        if agent_id is not None:
            passages = await self._retriever.search(
                tenant_id=self.spec.tenant_id, agent_id=agent_id, query=question, limit=1
            )
        best = passages[0] if passages else None
        confidence = best.score if best is not None else 0.0
        if best is None or confidence < self.config.min_confidence:
            log.debug("no confident answer (best %s) for %s", confidence, turn.session.session_id)
            reply = self._say(self.config.unknown_text, language, "unknown", confidence=confidence)
            if best is not None:
                # Not used for the answer, but it tells an operator what came closest, and how close.
                return AgentReply(
                    replies=reply.replies, notes={**reply.notes, "nearest": passage_notes([best])}
                )
            return reply
        body = best.answer.strip() if best.answer and best.answer.strip() else trim_answer(best.content)
        return AgentReply(
            replies=(OutText(body=body),),
            notes={
                "outcome": "answer",
                "passages": passage_notes([best]),
                "confidence": confidence,
                "language": language,
                "document": best.document,
            },
        )

    def _say(
        self,
        texts: Localized,
        language: str,
        outcome: str,
        *,
        confidence: float | None = None,
    ) -> AgentReply:
        notes: dict[str, Any] = {
            "outcome": outcome,
            "language": language,
            "passages": [],
            "confidence": confidence,
        }
        return AgentReply(replies=(OutText(body=_pick(texts, language)),), notes=notes)


@register_agent("knowledge")
def build_knowledge_agent(spec: AgentSpec, deps: AgentDeps) -> KnowledgeAgent:
    """Build the knowledge agent for ``spec`` from its configuration and the application's retriever."""
    return KnowledgeAgent(
        spec=spec, retriever=deps.retriever, config=KnowledgeAgentConfig.from_mapping(spec.config)
    )
