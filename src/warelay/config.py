"""Settings: environment ``WARELAY_*`` (nested with ``__``), an optional YAML file, secrets as SecretStr.

Precedence, highest first: values passed to ``Settings(...)``, environment variables, ``.env``,
the YAML file named by ``WARELAY_CONFIG``, defaults. Settings validate themselves and fail fast on
unsafe values; :meth:`Settings.check_serving` adds the checks that only matter when warelay is
about to receive webhooks. Settings are built in ``create_app``/the CLI, never at import.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from warelay.errors import ConfigError

MIN_SECRET_KEY_LENGTH = 32


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WhatsAppSettings(_Section):
    """The one number that can be configured from the environment alone (upserted at start-up)."""

    phone_number_id: str | None = None
    display_phone_number: str | None = None
    display_name: str | None = None
    access_token: SecretStr | None = None
    app_secret: SecretStr | None = None
    app_id: str | None = None
    business_id: str | None = None
    verify_token: SecretStr | None = None
    api_version: str = Field(default="v23.0", pattern=r"^v\d+\.\d+$")
    graph_url: str = Field(default="https://graph.facebook.com", pattern=r"^https?://")
    throughput_mps: int = Field(default=80, ge=1, le=1000)
    tenant: str = Field(default="default", pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
    insecure_skip_signature: bool = False

    @field_validator("graph_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


class LLMSettings(_Section):
    """An OpenAI-compatible Chat Completions endpoint for the ``llm`` agent."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    temperature: float = Field(default=0.3, ge=0, le=2)
    max_tokens: int = Field(default=800, ge=1, le=32_000)

    @property
    def configured(self) -> bool:
        """True when there is an endpoint or a key to reach a model with."""
        return bool(self.base_url or self.api_key)


class EmbeddingSettings(_Section):
    """An OpenAI-compatible ``/embeddings`` endpoint for hybrid retrieval; off until ``model`` is set.

    An agent's configuration may override it with ``embeddings: {base_url, api_key, model, ...}``,
    or turn it off with ``embeddings: false`` (see ``warelay.knowledge.embeddings``).
    """

    base_url: str | None = Field(default=None, pattern=r"^https?://")
    api_key: SecretStr | None = None
    model: str | None = Field(default=None, min_length=1, max_length=200)
    dimensions: int | None = Field(default=None, ge=1, le=8192)
    batch_size: int = Field(default=64, ge=1, le=2048)
    timeout_seconds: float = Field(default=10, gt=0, le=300)


AgentTool = Literal[
    "buttons", "list", "link_button", "media", "location", "location_request", "reaction", "state", "handoff"
]


class AgentSettings(_Section):
    """The agent of the env-configured number (stored in the database as agent ``name``)."""

    kind: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,29}$")
    name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    system_prompt: str | None = None
    system_prompt_file: Path | None = None
    fallback_text: str = "Sorry, something went wrong on our side. Please try again in a moment."
    unknown_text: str | None = None
    timeout_seconds: float = Field(default=60, gt=0, le=600)
    knowledge_dir: Path | None = None
    acknowledgement: str | None = None
    # Rich replies the llm agent may send (warelay.agents.rich), as JSON: '["buttons", "list"]'.
    tools: tuple[AgentTool, ...] = ()
    # Bursts (people type in fragments): a message that arrives while the agent is still answering
    # the same user discards that answer and re-runs the turn with everything received; with a
    # window, messages arriving within it of each other become one turn before the agent starts
    # (each new message restarts the window, up to burst_max_ms after the first).
    abort_on_newer: bool = True
    burst_window_ms: int = Field(default=0, ge=0, le=60_000)
    burst_max_ms: int = Field(default=8_000, ge=0, le=120_000)


class ConversationSettings(_Section):
    """Sessions: how long they live and how much history the agent sees."""

    expiry_hours: float = Field(default=24, gt=0, le=24 * 365)
    history_window: int = Field(default=10, ge=0, le=200)

    @property
    def expiry(self) -> timedelta:
        """Expiry as a timedelta."""
        return timedelta(hours=self.expiry_hours)


class WorkerSettings(_Section):
    """The queue: concurrency, leases, retries."""

    enabled: bool = True
    # Worker processes `warelay serve` starts beside itself (0: its workers run in its own process).
    processes: int = Field(default=0, ge=0, le=64)
    agent_concurrency: int = Field(default=512, ge=1, le=100_000)
    send_concurrency: int = Field(default=256, ge=1, le=100_000)
    lease_seconds: float = Field(default=90, ge=5, le=3600)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_base_seconds: float = Field(default=1.0, gt=0, le=600)
    backoff_max_seconds: float = Field(default=300, gt=0, le=86_400)
    poll_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    batch_size: int = Field(default=200, ge=1, le=5000)


class OutboundSettings(_Section):
    """Delivery behaviour: read receipts, typing indicator, retries."""

    mark_read: bool = True
    typing_indicator: bool = True
    max_attempts: int = Field(default=8, ge=1, le=100)
    pair_backoff_base_seconds: float = Field(default=4, gt=0, le=3600)
    request_timeout_seconds: float = Field(default=20, gt=0, le=300)


class ApiSettings(_Section):
    """warelay's own API: the request rate each API key is allowed (counted in the database)."""

    # Requests per minute per key when the key sets no limit of its own; 0: keys are unlimited.
    rate_limit_per_minute: int = Field(default=600, ge=0, le=1_000_000)


_MB = 1024 * 1024


class MediaS3Settings(_Section):
    """An S3-compatible bucket for media files (``pip install 'warelay[s3]'``); unset: a local folder."""

    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    prefix: str = Field(default="", max_length=200, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*/)*$")


class TranscriptionSettings(_Section):
    """An OpenAI-compatible ``/audio/transcriptions`` endpoint for voice notes and audio.

    Without ``base_url`` the llm endpoint is used when it is OpenAI's own (a key and no other
    base URL) and ``use_llm_endpoint`` is on; otherwise voice notes reach the agent as a placeholder.
    """

    base_url: str | None = Field(default=None, pattern=r"^https?://")
    api_key: SecretStr | None = None
    model: str = Field(default="whisper-1", min_length=1)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    timeout_seconds: float = Field(default=60, gt=0, le=600)
    use_llm_endpoint: bool = True


class MediaSettings(_Section):
    """Inbound media: fetched into a store, read for the agent (vision, transcripts, document text)."""

    enabled: bool = True
    directory: Path = Path("media")
    s3: MediaS3Settings = MediaS3Settings()
    retention_days: float = Field(default=30, gt=0, le=3650)
    purge_interval_seconds: float = Field(default=3600, ge=1, le=86_400)
    # Meta's limits per type (protocol.md A8): larger files are refused without being read whole.
    max_image_bytes: int = Field(default=5 * _MB, ge=1)
    max_audio_bytes: int = Field(default=16 * _MB, ge=1)
    max_video_bytes: int = Field(default=16 * _MB, ge=1)
    max_document_bytes: int = Field(default=100 * _MB, ge=1)
    max_sticker_bytes: int = Field(default=500 * 1024, ge=1)
    document_text_chars: int = Field(default=10_000, ge=100, le=1_000_000)
    download_attempts: int = Field(default=3, ge=1, le=10)
    download_backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    download_timeout_seconds: float = Field(default=120, gt=0, le=3600)
    transcription: TranscriptionSettings = TranscriptionSettings()
    unsupported_text: str = Field(
        default="Sorry, I can't open that kind of message. Could you send it as text instead?", min_length=1
    )

    def max_bytes(self, media_type: str) -> int:
        """The size limit for a media type (image, audio, video, document, sticker)."""
        limit: int = getattr(self, f"max_{media_type}_bytes")
        return limit


_SCOPE_CHARS = r"[\x21\x23-\x5b\x5d-\x7e]+"
_SCOPE_PATTERN = rf"^{_SCOPE_CHARS}( {_SCOPE_CHARS})*$"
_SEED_AI_ENV = {"AI_BASE_URL": "base_url", "AI_AGENT_BASE_URL": "agent_base_url", "AI_CLIENT_ID": "client_id"}


class AISettings(_Section):
    """An external AI agent platform that tenants connect over OAuth 2.0 + PKCE (seed 000).

    ``base_url`` serves the authorization page (``/integration-request``) and the token endpoint
    (``/integration-token``); ``agent_base_url`` is where events are pushed to the platform's agent.
    Seed 000's unprefixed ``AI_BASE_URL``, ``AI_AGENT_BASE_URL`` and ``AI_CLIENT_ID`` are read too
    (``WARELAY_AI__*`` wins). warelay is a public client (PKCE, no secret) unless ``client_secret``
    is set.
    """

    base_url: str | None = Field(default=None, pattern=r"^https?://[^?#]+$")
    agent_base_url: str | None = Field(default=None, pattern=r"^https?://[^?#]+$")
    client_id: str | None = Field(default=None, min_length=1, max_length=500)
    client_secret: SecretStr | None = None
    # How warelay authenticates at the token endpoint: "none" (public client, client_id in the body)
    # by default, "client_secret_post" when a secret is set; "client_secret_basic" if asked.
    token_endpoint_auth_method: Literal["none", "client_secret_post", "client_secret_basic"] | None = None
    # Full URLs overriding {base_url}/integration-request and {base_url}/integration-token.
    authorize_url: str | None = Field(default=None, pattern=r"^https?://[^#]+$")
    token_url: str | None = Field(default=None, pattern=r"^https?://[^?#]+$")
    # RFC 7009 token revocation, called when a tenant disconnects; unset: the token is only deleted.
    revocation_url: str | None = Field(default=None, pattern=r"^https?://[^?#]+$")
    # Space-separated scope tokens (RFC 6749 3.3).
    scope: str = Field(default="messaging", pattern=_SCOPE_PATTERN)
    timeout_seconds: float = Field(default=10, gt=0, le=120)

    @field_validator("base_url", "agent_base_url", "token_url", "revocation_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return None if value is None else value.rstrip("/")

    @model_validator(mode="after")
    def _check_client_auth(self) -> AISettings:
        method = self.token_endpoint_auth_method
        if method in ("client_secret_post", "client_secret_basic") and self.client_secret is None:
            raise ValueError(f"token_endpoint_auth_method {method} needs WARELAY_AI__CLIENT_SECRET")
        if method == "none" and self.client_secret is not None:
            raise ValueError("token_endpoint_auth_method none sends no secret: unset the client secret")
        return self

    @property
    def client_auth_method(self) -> str:
        """The token endpoint's client authentication method in effect."""
        if self.token_endpoint_auth_method is not None:
            return self.token_endpoint_auth_method
        return "none" if self.client_secret is None else "client_secret_post"

    @property
    def authorization_endpoint(self) -> str | None:
        """Where the browser is sent to authorize: ``{base_url}/integration-request`` unless overridden."""
        if self.authorize_url:
            return self.authorize_url
        return f"{self.base_url}/integration-request" if self.base_url else None

    @property
    def token_endpoint(self) -> str | None:
        """Where codes and refresh tokens go: ``{base_url}/integration-token`` unless overridden."""
        if self.token_url:
            return self.token_url
        return f"{self.base_url}/integration-token" if self.base_url else None

    def missing(self) -> list[str]:
        """The settings an OAuth connection still needs (empty when tenants can connect)."""
        missing = []
        if self.authorization_endpoint is None or self.token_endpoint is None:
            missing.append("AI_BASE_URL (or WARELAY_AI__BASE_URL)")
        if not self.client_id:
            missing.append("AI_CLIENT_ID (or WARELAY_AI__CLIENT_ID)")
        return missing


class Settings(BaseSettings):
    """All of warelay's settings."""

    model_config = SettingsConfigDict(
        env_prefix="WARELAY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    database_url: str = "sqlite+aiosqlite:///./warelay.db"
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    secret_key: SecretStr | None = None
    admin_token: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # A YAML file of agents applied at every start (warelay.agents.catalog), as the env number is.
    agents_file: Path | None = None

    whatsapp: WhatsAppSettings = WhatsAppSettings()
    llm: LLMSettings = LLMSettings()
    embeddings: EmbeddingSettings = EmbeddingSettings()
    agent: AgentSettings = AgentSettings()
    conversations: ConversationSettings = ConversationSettings()
    worker: WorkerSettings = WorkerSettings()
    outbound: OutboundSettings = OutboundSettings()
    api: ApiSettings = ApiSettings()
    media: MediaSettings = MediaSettings()
    ai: AISettings = AISettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Add the YAML file named by ``WARELAY_CONFIG`` below the environment."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        yaml_path = os.environ.get("WARELAY_CONFIG")
        if yaml_path:
            if not Path(yaml_path).is_file():
                raise ConfigError(f"WARELAY_CONFIG names {yaml_path!r}, which is not a file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return (*sources, file_secret_settings)

    @model_validator(mode="before")
    @classmethod
    def _openai_key(cls, data: Any) -> Any:
        # OPENAI_API_KEY is honoured when WARELAY_LLM__API_KEY is not set (seed 004's variable).
        if isinstance(data, dict) and os.environ.get("OPENAI_API_KEY"):
            llm = data.get("llm") or {}
            if isinstance(llm, dict) and not llm.get("api_key"):
                data = {**data, "llm": {**llm, "api_key": os.environ["OPENAI_API_KEY"]}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _seed_ai_env(cls, data: Any) -> Any:
        # Seed 000's AI_BASE_URL / AI_AGENT_BASE_URL (and AI_CLIENT_ID) under WARELAY_AI__* ones.
        seed = {field: os.environ[name] for name, field in _SEED_AI_ENV.items() if os.environ.get(name)}
        if seed and isinstance(data, dict):
            ai = data.get("ai") or {}
            if isinstance(ai, dict):
                data = {**data, "ai": {**seed, **ai}}
        return data

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        keys = [k.strip() for k in value.get_secret_value().split(",")]
        if not keys or any(len(k) < MIN_SECRET_KEY_LENGTH for k in keys):
            raise ValueError(
                f"WARELAY_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters "
                "(a comma-separated list rotates keys: each one that long)"
            )
        return value

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("WARELAY_ADMIN_TOKEN must be at least 16 characters")
        return value

    @property
    def secret_keys(self) -> list[str]:
        """The secret keys, newest (the one that encrypts) first."""
        if self.secret_key is None:
            return []
        return [k.strip() for k in self.secret_key.get_secret_value().split(",")]

    @property
    def agent_kind(self) -> str:
        """The env-configured number's agent kind: as set, else ``llm`` when a model is configured."""
        if self.agent.kind:
            return self.agent.kind
        return "llm" if self.llm.configured else "knowledge"

    def check_serving(self) -> None:
        """Refuse to serve webhooks on unsafe settings."""
        if not self.secret_keys:
            raise ConfigError(
                "WARELAY_SECRET_KEY is not set: it encrypts credentials at rest and keys API-key hashes "
                "(any string of at least 32 characters; `warelay demo` makes one for you)"
            )
        wa = self.whatsapp
        if wa.phone_number_id and wa.app_secret is None and not wa.insecure_skip_signature:
            raise ConfigError(
                "WARELAY_WHATSAPP__APP_SECRET is not set, so webhook signatures cannot be verified; set it, "
                "or set WARELAY_WHATSAPP__INSECURE_SKIP_SIGNATURE=true to accept unsigned webhooks (unsafe)"
            )
        if wa.phone_number_id and wa.access_token is None:
            raise ConfigError(
                "WARELAY_WHATSAPP__ACCESS_TOKEN is required with WARELAY_WHATSAPP__PHONE_NUMBER_ID"
            )


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into a readable ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
