"""The suite file of ``warelay eval``: its schema, and loading it with errors that name the YAML line.

A suite names one agent (kind, configuration, knowledge files) and scripted conversations; each
step is one thing the user sends (text, a media file, a tap on a button or list row, or a raw Cloud
API message) and the assertions on warelay's replies to it. Paths in the file are relative to it.
See :mod:`warelay.evaluation` for an example.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Importing the agent modules registers their kinds.
import warelay.agents.knowledge
import warelay.agents.llm  # noqa: F401
from warelay.agents.base import agent_kinds
from warelay.agents.config import AgentConfig

__all__ = [
    "CHECK_KINDS",
    "ButtonCheck",
    "Check",
    "ContainsCheck",
    "ConversationSpec",
    "ExpectedState",
    "HandoffCheck",
    "MediaSpec",
    "NotContainsCheck",
    "RegexCheck",
    "StateCheck",
    "Step",
    "Suite",
    "SuiteAgent",
    "SuiteError",
    "load_suite",
]

CHECK_KINDS: Final = ("contains", "not_contains", "regex", "button", "state", "handoff")
MEDIA_TYPES: Final = ("image", "document", "audio", "video", "sticker")
# Meta takes captions on these media types only (the others refuse them).
_CAPTIONED: Final = frozenset({"image", "video", "document"})
MAX_SUITE_BYTES: Final = 1024 * 1024

NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


TextList = Annotated[list[NonEmpty], BeforeValidator(_as_list), Field(min_length=1)]


class SuiteError(Exception):
    """A suite file that cannot be used; ``problems`` are lines like ``file.yaml:12:7: where: what``."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"{path}: invalid eval suite\n" + "\n".join(f"  {p}" for p in problems))
        self.path = path
        self.problems = problems


class _Model(BaseModel):
    # Numbers where text is expected (``contains: 2019``) are taken as text.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


# ------------------------------------------------------------------------------------------ assertions


class ContainsCheck(_Model):
    """Every text is somewhere in the turn's replies (text, captions, interactive bodies, button titles)."""

    contains: TextList
    ignore_case: bool | None = None


class NotContainsCheck(_Model):
    """None of the texts is in the turn's replies."""

    not_contains: TextList
    ignore_case: bool | None = None


class RegexCheck(_Model):
    """A Python regular expression found (``re.search``) in the turn's replies."""

    regex: NonEmpty
    ignore_case: bool | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class ButtonCheck(_Model):
    """A reply button or list row with this title is among the turn's replies."""

    button: NonEmpty
    ignore_case: bool | None = None


class ExpectedState(_Model):
    """The conversation's state after the turn; only the fields given are compared.

    ``context`` is compared as a subset: each key given must be in the conversation's context with
    an equal value (a nested object compared whole); other keys of the context may be there too.
    ``intent: null`` asserts that there is no intent.
    """

    intent: str | None = None
    step: str | None = None
    context: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _something(self) -> ExpectedState:
        if not self.model_fields_set:
            raise ValueError("say what to compare: intent, step and/or context")
        return self


class StateCheck(_Model):
    """The conversation's intent/step/context after the turn (see :class:`ExpectedState`)."""

    state: ExpectedState


class HandoffCheck(_Model):
    """Whether the conversation has been handed to a human (warelay's API: ``handoff`` set)."""

    handoff: bool


def _check_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [kind for kind in CHECK_KINDS if kind in value]
        return found[0] if len(found) == 1 else None
    for kind, model in _CHECK_MODELS.items():
        if isinstance(value, model):
            return kind
    return None


_CHECK_MODELS: Final[dict[str, type[_Model]]] = {
    "contains": ContainsCheck,
    "not_contains": NotContainsCheck,
    "regex": RegexCheck,
    "button": ButtonCheck,
    "state": StateCheck,
    "handoff": HandoffCheck,
}

Check = Annotated[
    Annotated[ContainsCheck, Tag("contains")]
    | Annotated[NotContainsCheck, Tag("not_contains")]
    | Annotated[RegexCheck, Tag("regex")]
    | Annotated[ButtonCheck, Tag("button")]
    | Annotated[StateCheck, Tag("state")]
    | Annotated[HandoffCheck, Tag("handoff")],
    Discriminator(
        _check_kind,
        custom_error_type="assertion",
        custom_error_message=f"an assertion is a mapping with exactly one of: {', '.join(CHECK_KINDS)}",
    ),
]


# ------------------------------------------------------------------------------------------ steps


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    return (Path(base) / value).resolve() if base is not None and not value.is_absolute() else value


class MediaSpec(_Model):
    """A file the user sends; ``type`` and ``mime_type`` are guessed from the file name when left out."""

    file: Path
    type: Literal["image", "document", "audio", "video", "sticker"] | None = None
    mime_type: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool = False

    @field_validator("file")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @model_validator(mode="after")
    def _complete(self) -> MediaSpec:
        if self.mime is None:
            raise ValueError(f"cannot tell the type of {self.file.name}: give mime_type")
        kind = self.kind
        if self.caption is not None and kind not in _CAPTIONED:
            raise ValueError(f"WhatsApp {kind} messages have no caption")
        if self.filename is not None and kind != "document":
            raise ValueError("only documents have a filename")
        if self.voice and kind != "audio":
            raise ValueError("only audio can be a voice note")
        return self

    @property
    def mime(self) -> str | None:
        """The file's MIME type: as given, else guessed from its name."""
        return self.mime_type or mimetypes.guess_type(self.file.name)[0]

    @property
    def kind(self) -> str:
        """The WhatsApp media type: as given, else from the MIME type."""
        return self.type or _media_type(self.mime or "")


def _media_type(mime: str) -> str:
    major = mime.split("/", 1)[0]
    return major if major in ("image", "audio", "video") else "document"


class Step(_Model):
    """One thing the user sends, and the assertions on warelay's replies to it.

    Exactly one of: ``user`` (a text message), ``media`` (a file), ``tap`` (the title or id of a
    reply button or list row in an earlier reply) or ``message`` (a raw Cloud API inbound message
    object, e.g. ``{type: location, location: {latitude: …, longitude: …}}``).
    """

    user: str | None = None
    media: MediaSpec | None = None
    tap: NonEmpty | None = None
    message: dict[str, Any] | None = None
    expect: list[Check] = Field(default_factory=list)
    timeout_seconds: float | None = Field(default=None, gt=0, le=600)

    @model_validator(mode="after")
    def _one_message(self) -> Step:
        given = [name for name in ("user", "media", "tap", "message") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "a step sends exactly one of: user (text), media, tap, message"
                + (f" (this one has {', '.join(given)})" if given else "")
            )
        if self.user is not None and not self.user.strip():
            raise ValueError("user: the message is empty")
        return self

    def describe(self) -> str:
        """What the user sends, in a few words for the report."""
        if self.user is not None:
            return self.user
        if self.media is not None:
            caption = f" {self.media.caption}" if self.media.caption else ""
            return f"[{self.media.kind} {self.media.file.name}]{caption}"
        if self.tap is not None:
            return f"[tap {self.tap}]"
        message = self.message or {}
        return f"[{message.get('type') or 'message'}]"


class ConversationSpec(_Model):
    """A scripted conversation, played by a fresh user."""

    name: NonEmpty
    user_name: NonEmpty = "Eval User"
    steps: list[Step] = Field(min_length=1)


class SuiteAgent(_Model):
    """The agent under test: a registered kind, its configuration, and the knowledge it answers from.

    ``config`` is what an agent's stored configuration holds (``system_prompt``, ``tools``,
    ``min_confidence``…); what it leaves out comes from ``WARELAY_AGENT__*``, and the ``llm`` kind's
    endpoint from ``WARELAY_LLM__*`` unless ``config`` names one. ``knowledge`` lists files and
    folders; without it, ``WARELAY_AGENT__KNOWLEDGE_DIR`` is used when set.
    """

    kind: NonEmpty
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] = "eval"
    config: dict[str, Any] = Field(default_factory=dict)
    knowledge: Annotated[list[Path], BeforeValidator(_as_list)] = Field(default_factory=list)

    @field_validator("kind")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in agent_kinds():
            raise ValueError(f"unknown agent kind {value!r}; known: {', '.join(agent_kinds())}")
        return value

    @field_validator("knowledge")
    @classmethod
    def _exist(cls, value: list[Path], info: ValidationInfo) -> list[Path]:
        paths = [_resolve(path, info) for path in value]
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            raise ValueError(f"no such file or folder: {', '.join(missing)}")
        return paths

    @field_validator("config")
    @classmethod
    def _valid_config(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        prompt_file = value.get("system_prompt_file")
        if prompt_file is not None:
            if not isinstance(prompt_file, str) or not prompt_file:
                raise ValueError("system_prompt_file must be a file path")
            path = _resolve(Path(prompt_file), info)
            if not path.is_file():
                raise ValueError(f"system_prompt_file: no such file: {path}")
            value = {**value, "system_prompt_file": str(path)}
        AgentConfig.parse(value)  # what an operator could store for an agent (raises a ValueError)
        return value


class Suite(_Model):
    """A suite: the agent, defaults for the steps, and the conversations."""

    name: str | None = None
    agent: SuiteAgent
    ignore_case: bool = False
    timeout_seconds: float = Field(default=60, gt=0, le=600)
    conversations: list[ConversationSpec] = Field(min_length=1)

    @field_validator("conversations")
    @classmethod
    def _unique_names(cls, value: list[ConversationSpec]) -> list[ConversationSpec]:
        seen: set[str] = set()
        for conversation in value:
            if conversation.name in seen:
                raise ValueError(f"two conversations are named {conversation.name!r}")
            seen.add(conversation.name)
        return value

    @property
    def assertions(self) -> int:
        """How many assertions the suite makes."""
        return sum(len(step.expect) for c in self.conversations for step in c.steps)


# ------------------------------------------------------------------------------------------ loading


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false, so ``tap: Yes`` stays the text "Yes"."""


_BOOL_TAG: Final = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file; raises :class:`SuiteError` naming the line of each problem."""
    try:
        if path.stat().st_size > MAX_SUITE_BYTES:
            raise SuiteError(path, [f"{path}: larger than {MAX_SUITE_BYTES // 1024} KiB"])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(path, [f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise SuiteError(path, [f"{path}: a folder, not a suite file"]) from None
    except UnicodeDecodeError as exc:
        raise SuiteError(path, [f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except OSError as exc:
        raise SuiteError(path, [f"{path}: cannot be read ({exc.strerror})"]) from None
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(path, [f"{where}: not valid YAML: {problem}"]) from None
    if root is None:
        raise SuiteError(path, [f"{path}: the file is empty"])
    duplicates = [
        f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: {key!r} is given twice"
        for key, node in _duplicate_keys(root)
    ]
    if duplicates:
        raise SuiteError(path, duplicates)
    if not isinstance(data, dict):
        mark = root.start_mark
        raise SuiteError(
            path,
            [f"{path}:{mark.line + 1}:{mark.column + 1}: a suite is a mapping with agent and conversations"],
        )
    try:
        return Suite.model_validate(data, context={"base": path.resolve().parent})
    except ValidationError as exc:
        raise SuiteError(path, [_problem(path, root, error) for error in exc.errors()]) from None


def _duplicate_keys(node: yaml.Node) -> Iterator[tuple[str, yaml.Node]]:
    """Keys given twice in one mapping (YAML loaders keep the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    yield key.value, key
                seen.add(key.value)
            yield from _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item)


def _problem(path: Path, root: yaml.Node, error: Any) -> str:
    """``file:line:col: where: what`` for one validation error, at the YAML node it concerns."""
    node = root
    where: list[str] = []
    loc = list(error["loc"])
    for n, part in enumerate(loc):
        child = _child(node, part)
        if child is not None:
            node = child
            where.append(f"[{part}]" if isinstance(part, int) else f".{part}")
        elif isinstance(part, str) and n == len(loc) - 1 and part not in CHECK_KINDS:
            where.append(f".{part}")  # a missing field: the mapping it belongs in is the place
        # anything else is a union tag pydantic adds to the location, not a key of the file
    mark = node.start_mark
    label = "".join(where).lstrip(".") or "the file"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{path}:{mark.line + 1}:{mark.column + 1}: {label}: {message}"


def _child(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
    return None
