"""Agent configurations: what an operator may set for a named agent, validated before it is stored.

Where it sits: beside the agent registry. The ``agents`` table is the source of truth (one row per
tenant and name: its ``kind`` and a JSON ``config``); the CLI (``warelay agents …``), the admin API
and the agents file (``WARELAY_AGENTS_FILE``, seeded at start like the env number) all write
through :func:`warelay.agents.catalog.save_agent`, which validates with :class:`AgentConfig`. A key
left out inherits the ``WARELAY_AGENT__*`` default (see ``agents.provider.env_agent_defaults``).

Secrets: an agent's own model ``api_key`` is encrypted with ``WARELAY_SECRET_KEY`` before it is
stored (as ``api_key_enc``) and decrypted only when the agent is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from warelay.config import AgentTool
from warelay.crypto import SecretBox

__all__ = ["LANGUAGES", "AgentConfig", "AgentConfigError", "language_name"]

# Reply languages an operator may fix by code; "auto" answers in the customer's language.
LANGUAGES: Final[Mapping[str, str]] = {
    "en": "English",
    "es": "Spanish",
    "id": "Indonesian",
    "pt": "Portuguese",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "nl": "Dutch",
    "ms": "Malay",
    "tr": "Turkish",
    "ar": "Arabic",
    "hi": "Hindi",
}

MASK: Final = "********"  # how a secret that is set shows in listings

ShortText = Annotated[str, Field(min_length=1, max_length=4096)]
# A reply text: one for every language, or one per language (``{"english": …, "spanish": …}``).
ReplyText = ShortText | dict[Annotated[str, Field(pattern=r"^[a-z]{2,20}$")], ShortText]


class AgentConfigError(ValueError):
    """A configuration that cannot be stored; the message says which field and why."""


class EmbeddingsConfig(BaseModel):
    """An OpenAI-compatible ``/embeddings`` endpoint for this agent's knowledge (hybrid retrieval)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(default=None, pattern=r"^https?://")
    model: str | None = Field(default=None, max_length=200)
    api_key: SecretStr | None = None
    dimensions: int | None = Field(default=None, ge=1, le=8192)
    batch_size: int | None = Field(default=None, ge=1, le=2048)
    timeout_seconds: float | None = Field(default=None, gt=0, le=300)


class AgentConfig(BaseModel):
    """Everything an agent may be configured with; None (left out) inherits the environment's default."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # Who the agent speaks for ({business_name} in the prompt; the tenant's name when unset).
    business_name: str | None = Field(default=None, max_length=200)
    # llm: the model and its OpenAI-compatible endpoint (WARELAY_LLM__* when unset).
    model: str | None = Field(default=None, max_length=200)
    base_url: str | None = Field(default=None, pattern=r"^https?://", max_length=500)
    api_key: SecretStr | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=32_000)
    max_retries: int | None = Field(default=None, ge=0, le=10)
    # The instructions, inline or from a file; {business_name}, {user_name} and {tenant} are filled in.
    system_prompt: str | None = Field(default=None, max_length=50_000)
    system_prompt_file: str | None = Field(default=None, max_length=1000)
    history_window: int | None = Field(default=None, ge=0, le=200)
    knowledge_passages: int | None = Field(default=None, ge=0, le=20)
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    # Hybrid retrieval: overrides WARELAY_EMBEDDINGS__* key by key; false turns it off for this agent.
    embeddings: EmbeddingsConfig | Literal[False] | None = None
    vision: bool | None = None
    tools: list[AgentTool] | None = None
    # "auto": answer in the customer's language; a code (es, en, id, …) fixes it.
    reply_language: str | None = Field(default=None, pattern=r"^(auto|[a-z]{2})$")
    acknowledgement: ShortText | None = None
    fallback_text: ShortText | None = None
    unknown_text: ReplyText | None = None
    greeting_text: ReplyText | None = None
    thanks_text: ReplyText | None = None
    unsupported_text: ReplyText | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=600)
    abort_on_newer: bool | None = None
    burst_window_ms: int | None = Field(default=None, ge=0, le=60_000)
    burst_max_ms: int | None = Field(default=None, ge=0, le=120_000)
    # external: how the platform gets this agent's events — pushed to its webhook (the full
    # webhook_url, or webhook_path under AI_AGENT_BASE_URL), or polled with a cursor — signed with
    # signing_secret (generated when the agent is created, rotatable; encrypted at rest).
    delivery: Literal["push", "poll"] | None = None
    webhook_url: str | None = Field(default=None, pattern=r"^https?://", max_length=1000)
    webhook_path: str | None = Field(default=None, pattern=r"^/", max_length=300)
    signing_secret: SecretStr | None = None
    max_delivery_attempts: int | None = Field(default=None, ge=1, le=100)

    @field_validator("reply_language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and value not in LANGUAGES:
            raise ValueError(f"unknown language {value!r}; use auto or one of {', '.join(sorted(LANGUAGES))}")
        return value

    @field_validator("tools")
    @classmethod
    def _distinct_tools(cls, value: list[AgentTool] | None) -> list[AgentTool] | None:
        return list(dict.fromkeys(value)) if value is not None else None

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> AgentConfig:
        """Validate an operator's values, turning pydantic's errors into one readable message."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {_reason(err)}" for err in exc.errors()
            )
            raise AgentConfigError(f"invalid agent configuration: {problems}") from None

    def merged(self, changes: Mapping[str, Any], unset: tuple[str, ...] = ()) -> AgentConfig:
        """This configuration with ``changes`` applied and the ``unset`` keys removed (validated)."""
        unknown = sorted(set(unset) - set(type(self).model_fields))
        if unknown:
            raise AgentConfigError(f"invalid agent configuration: unknown keys {unknown}")
        values = self.model_dump(exclude_none=True)
        if self.api_key is not None:
            values["api_key"] = self.api_key.get_secret_value()
        if self.signing_secret is not None:
            values["signing_secret"] = self.signing_secret.get_secret_value()
        if isinstance(self.embeddings, EmbeddingsConfig) and self.embeddings.api_key is not None:
            values["embeddings"]["api_key"] = self.embeddings.api_key.get_secret_value()
        values.update(changes)
        for key in unset:
            values.pop(key, None)
        return type(self).parse(values)

    def stored(self, box: SecretBox) -> dict[str, Any]:
        """The JSON kept in the database: keys set, secrets encrypted."""
        values = self.model_dump(
            mode="json", exclude_none=True, exclude={"api_key", "embeddings", "signing_secret"}
        )
        if self.api_key is not None:
            values["api_key_enc"] = box.encrypt(self.api_key.get_secret_value())
        if self.signing_secret is not None:
            values["signing_secret_enc"] = box.encrypt(self.signing_secret.get_secret_value())
        if self.embeddings is False:
            values["embeddings"] = False
        elif self.embeddings is not None:
            embeddings = self.embeddings.model_dump(mode="json", exclude_none=True, exclude={"api_key"})
            if self.embeddings.api_key is not None:
                embeddings["api_key_enc"] = box.encrypt(self.embeddings.api_key.get_secret_value())
            values["embeddings"] = embeddings
        return values

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any], box: SecretBox | None) -> AgentConfig:
        """Read back what :meth:`stored` wrote (secrets decrypted into SecretStr)."""

        def decrypt(token: object) -> str:
            if box is None:
                raise AgentConfigError("the agent's stored api_key needs WARELAY_SECRET_KEY to be read")
            return box.decrypt(str(token))

        values = dict(stored)
        for secret in ("api_key", "signing_secret"):
            token = values.pop(f"{secret}_enc", None)
            if token is not None:
                values[secret] = decrypt(token)
        embeddings = values.get("embeddings")
        if isinstance(embeddings, dict) and "api_key_enc" in embeddings:
            embeddings = dict(embeddings)
            embeddings["api_key"] = decrypt(embeddings.pop("api_key_enc"))
            values["embeddings"] = embeddings
        return cls.parse(values)

    def runtime(self) -> dict[str, Any]:
        """The values an agent is built with (secrets as SecretStr, never printed)."""
        values: dict[str, Any] = {
            key: getattr(self, key) for key in type(self).model_fields if getattr(self, key) is not None
        }
        if isinstance(self.embeddings, EmbeddingsConfig):
            values["embeddings"] = self.embeddings.model_dump(exclude_none=True)
        return values

    def public(self) -> dict[str, Any]:
        """For listings: everything but secrets, which show as set or not."""
        values = self.model_dump(mode="json", exclude_none=True, exclude={"api_key", "signing_secret"})
        if self.api_key is not None:
            values["api_key"] = MASK
        if self.signing_secret is not None:
            values["signing_secret"] = MASK
        if isinstance(self.embeddings, EmbeddingsConfig) and self.embeddings.api_key is not None:
            values["embeddings"]["api_key"] = MASK
        return values


def _reason(err: Mapping[str, Any]) -> str:
    if err.get("type") == "extra_forbidden":
        return f"unknown key; known keys: {', '.join(AgentConfig.model_fields)}"
    return str(err.get("msg", "invalid"))


def language_name(code: str | None) -> str | None:
    """The English name of a fixed reply language (None for auto)."""
    if code is None or code == "auto":
        return None
    return LANGUAGES.get(code, code)
