"""Request and response schemas of the admin API: tenants, numbers, agents, API keys.

``*Create`` and ``*Update`` are what a caller sends (unknown fields refused, so a typo is a 422
rather than a silently ignored setting); ``*Public`` is what the API answers. Secrets are
write-only: a number's app secret, access token and verify token go in, and only ``*_set`` flags
come out; an agent's keys come out masked; an API key comes out once, in :class:`KeyCreated`.
An ``*Update`` changes the fields it names and nothing else; ``null`` clears a field that may be
empty (and is refused for one that may not).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from warelay.agents.catalog import NAME_PATTERN
from warelay.tenancy import SUBDOMAIN_PATTERN

Subdomain = Annotated[str, Field(pattern=SUBDOMAIN_PATTERN, max_length=63, examples=["acme"])]
TenantName = Annotated[str, Field(min_length=1, max_length=200)]
PhoneNumberId = Annotated[
    str, Field(pattern=r"^[0-9]{1,64}$", description="Meta's Phone Number ID", examples=["106540352242922"])
]
MetaId = Annotated[str, Field(pattern=r"^[0-9]{1,64}$")]
AgentName = Annotated[str, Field(pattern=NAME_PATTERN, examples=["support"])]
AgentKind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,29}$", examples=["llm", "knowledge"])]
Secret = Annotated[SecretStr, Field(min_length=1, max_length=4096)]
Scope = Literal["admin", "messages:send", "conversations:read", "conversations:write"]
RateLimit = Annotated[
    int,
    Field(
        ge=0,
        le=1_000_000,
        description="requests per minute; 0: unlimited; null: WARELAY_API__RATE_LIMIT_PER_MINUTE",
    ),
]
NumberStatus = Literal["active", "inactive"]
_PHONE_PUNCTUATION = re.compile(r"[\s+\-().]")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    def _refuse_null(self, *fields: str) -> None:
        for name in fields:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")


def _phone_digits(value: str | None) -> str | None:
    """A phone number as Meta writes it (digits, country code first) from what an operator typed."""
    if value is None:
        return None
    digits = _PHONE_PUNCTUATION.sub("", value)
    if not re.fullmatch(r"[0-9]{5,15}", digits):
        raise ValueError("a phone number is 5-15 digits with its country code, e.g. +1-234-567-8900")
    return digits


# ------------------------------------------------------------------------------------------ tenants


class TenantCreate(_Input):
    """A new tenant: its subdomain (how seed 002's clients and the URLs name it) and a display name."""

    subdomain: Subdomain
    name: TenantName | None = None


class TenantUpdate(_Input):
    """A tenant's display name (the subdomain is its identity and does not change)."""

    name: TenantName | None = None


class TenantPublic(BaseModel):
    """A tenant with how much it holds."""

    subdomain: str
    name: str | None
    numbers: int = Field(description="WhatsApp numbers")
    agents: int = Field(description="named agents")
    keys: int = Field(description="API keys not revoked")
    created_at: datetime


# ------------------------------------------------------------------------------------------ numbers


class NumberCreate(_Input):
    """A WhatsApp number with its Meta credentials (the fields of seed 001's form)."""

    phone_number_id: PhoneNumberId
    display_phone_number: str | None = Field(
        default=None, max_length=32, description="the number itself; +, spaces and dashes are dropped"
    )
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    status: NumberStatus = "active"
    agent: AgentName | None = Field(
        default=None, description="the tenant's agent that answers (null: the default agent)"
    )
    app_id: MetaId | None = None
    app_secret: Secret = Field(description="verifies webhook signatures; write-only")
    business_id: MetaId | None = None
    access_token: Secret = Field(description="system-user token for the Graph API; write-only")
    verify_token: Secret | None = Field(
        default=None, description="what Meta echoes when verifying the webhook; write-only"
    )
    api_version: str = Field(default="v23.0", pattern=r"^v\d+\.\d+$", description="Graph API version")
    graph_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=300,
        description="Graph API base URL (platform admins only; default https://graph.facebook.com)",
    )
    throughput_mps: int = Field(default=80, ge=1, le=1000, description="Meta throughput tier, messages/s")

    @field_validator("display_phone_number")
    @classmethod
    def _digits(cls, value: str | None) -> str | None:
        return _phone_digits(value)


class NumberUpdate(_Input):
    """Changes to a number: the fields named change; ``null`` clears an optional one."""

    display_phone_number: str | None = Field(default=None, max_length=32)
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    status: NumberStatus | None = None
    agent: AgentName | None = Field(default=None, description="null: back to the default agent")
    app_id: MetaId | None = None
    app_secret: Secret | None = None
    business_id: MetaId | None = None
    access_token: Secret | None = None
    verify_token: Secret | None = None
    api_version: str | None = Field(default=None, pattern=r"^v\d+\.\d+$")
    graph_url: str | None = Field(default=None, pattern=r"^https?://", max_length=300)
    throughput_mps: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("display_phone_number")
    @classmethod
    def _digits(cls, value: str | None) -> str | None:
        return _phone_digits(value)

    @model_validator(mode="after")
    def _required_stay_set(self) -> Self:
        self._refuse_null(
            "status", "app_secret", "access_token", "api_version", "graph_url", "throughput_mps"
        )
        return self


class NumberPublic(BaseModel):
    """A number as the API shows it: secrets only as set or not, and the webhook URL to give Meta."""

    tenant: str
    phone_number_id: str
    display_phone_number: str | None
    display_name: str | None
    status: NumberStatus | str
    agent: str | None = Field(description="the linked agent; null: the tenant's default agent answers")
    answered_by: str = Field(description="the agent that answers: the linked one, else the default")
    channel: str
    app_id: str | None
    business_id: str | None
    app_secret_set: bool
    access_token_set: bool
    verify_token_set: bool
    api_version: str
    graph_url: str
    throughput_mps: int
    webhook_url: str = Field(description="paste into Meta's webhook configuration")
    configured_by_env: bool = Field(
        description="configured through WARELAY_WHATSAPP__* and rewritten at every start: change it there"
    )
    created_at: datetime
    updated_at: datetime


# ------------------------------------------------------------------------------------------ agents


class AgentCreate(_Input):
    """A named agent: its kind and configuration (any key of ``warelay agents``' configuration)."""

    name: AgentName
    kind: AgentKind
    config: dict[str, Any] = Field(default_factory=dict, description="validated; secrets stored encrypted")
    numbers: list[PhoneNumberId] = Field(
        default_factory=list, max_length=1000, description="phone number ids of this tenant it answers"
    )


class AgentUpdate(_Input):
    """Changes to an agent: ``config`` is merged key by key (a ``null`` value goes back to the
    default), ``numbers`` are linked to it in addition to those it answers already."""

    kind: AgentKind | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    numbers: list[PhoneNumberId] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _kind_not_null(self) -> Self:
        self._refuse_null("kind")
        return self


class AgentPublic(BaseModel):
    """An agent with its configuration (secrets masked) and the numbers it answers."""

    tenant: str
    name: str
    kind: str
    config: dict[str, Any]
    numbers: list[str]
    default: bool = Field(description="the tenant's default agent: it answers numbers linked to none")
    created_at: datetime
    updated_at: datetime


# ------------------------------------------------------------------------------------------ keys


class KeyCreate(_Input):
    """A new API key of the tenant."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    scopes: list[Scope] = Field(min_length=1, max_length=4)
    rate_limit_per_minute: RateLimit | None = Field(default=None, description="platform admins only")


class KeyUpdate(_Input):
    """Changes to a key: its label, its rate limit (platform admins only; null: the default)."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    rate_limit_per_minute: RateLimit | None = None


class KeyPublic(BaseModel):
    """An API key as listed: its first characters, never the key."""

    id: int
    tenant: str | None
    name: str | None
    prefix: str
    scopes: list[str]
    rate_limit_per_minute: int | None
    created_at: datetime
    last_used_at: datetime | None = Field(description="recorded at most once a minute per process")
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    """A key just created: ``key`` is shown this once and cannot be read again."""

    key: str
