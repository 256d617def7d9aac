"""Knowledge files → passages: chunk CSV / Markdown / text files and store them for retrieval.

Where it sits: beside the message path, not on it. The CLI (``warelay knowledge add``), the
dashboard and the demo call :func:`add_document` / :func:`add_folder`; the passages it writes are
what ``knowledge.search`` finds when the knowledge agent (or the LLM agent's retrieval tool)
answers a turn. Every passage is indexed by :func:`warelay.knowledge.text.index_text`; on SQLite
the FTS5 table follows ``knowledge_passages`` through triggers, on PostgreSQL a GIN expression
index does.

Chunking rules:

* CSV with question/answer columns (``question``/``answer``, ``q``/``a``, ``pregunta``/``respuesta``,
  ``pertanyaan``/``jawaban``, ``faq``/``reply``…): one passage per row, title = question,
  answer = answer, content = ``"question\\nanswer"``.
* any other CSV: one passage per row, made of ``"column: value"`` lines; rows are never split.
* Markdown and text: one section per heading (the heading path is the title); a section longer
  than :data:`MAX_PASSAGE_CHARS` is split on paragraphs, then lines, then sentences, so that a
  passage ends mid-sentence only when one sentence alone is longer than the limit.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final

import httpx
from markdown_it import MarkdownIt
from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from warelay.errors import WarelayError
from warelay.knowledge.embeddings import (
    Embedder,
    EmbeddingConfig,
    EmbeddingError,
    embedding_config,
    sign_bits,
    to_bytes,
)
from warelay.knowledge.text import fold, index_text
from warelay.storage.models import Agent, KnowledgeDocument, KnowledgePassage, utcnow

log = logging.getLogger("warelay.knowledge")

SUPPORTED_SUFFIXES: Final = (".md", ".markdown", ".txt", ".csv")
MAX_PASSAGE_CHARS: Final = 1200
MAX_DOCUMENT_BYTES: Final = 20 * 1024 * 1024
MAX_NAME_CHARS: Final = 300
_INSERT_BATCH: Final = 500
# Indexing is CPU work in the event loop's thread (a worker thread would still hold the GIL);
# hand the loop back this often so that messages keep flowing during a big upload.
_YIELD_EVERY_S: Final = 0.005

_QUESTION_COLUMNS: Final = frozenset(
    {"question", "questions", "q", "pregunta", "preguntas", "pertanyaan", "faq", "query", "tanya", "ask"}
)
_ANSWER_COLUMNS: Final = frozenset(
    {
        "answer",
        "answers",
        "a",
        "respuesta",
        "respuestas",
        "jawaban",
        "jawab",
        "reply",
        "response",
        "respon",
        "balasan",
    }
)
_CSV_DELIMITERS: Final = (",", ";", "\t", "|")
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")
_INLINE_MARKUP = re.compile(r"!?\[([^\]]*)\]\([^)]*\)|[*_`~]+")
_MARKDOWN = MarkdownIt("commonmark")


class KnowledgeFileError(WarelayError, ValueError):
    """A knowledge file that cannot be added (unsupported type, not UTF-8, empty, too large)."""


@dataclass(frozen=True, slots=True)
class PassageDraft:
    """A passage cut from a file, before it is indexed and stored."""

    title: str | None
    content: str
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """A stored knowledge document."""

    id: int
    tenant_id: int
    agent_id: int
    name: str
    sha256: str
    passages: int
    created_at: datetime
    replaced: bool = False
    embedding_model: str | None = None  # the model its passages were embedded with
    embedding_error: str | None = None  # why they were not, although embeddings are configured


# --------------------------------------------------------------------------------------- chunking


def decode_text(name: str, data: bytes) -> str:
    """Decode a knowledge file as UTF-8 (a byte-order mark is tolerated), with a clear error otherwise."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KnowledgeFileError(
            f"{name}: not UTF-8 text (invalid byte at offset {exc.start}); save the file as UTF-8"
        ) from None
    if "\x00" in text:
        raise KnowledgeFileError(f"{name}: looks like a binary file, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def chunk_document(name: str, data: bytes) -> list[PassageDraft]:
    """Cut a knowledge file into passages according to its type (see the module docstring)."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise KnowledgeFileError(
            f"{name}: unsupported file type {suffix or '(none)'!r}; supported: {supported}"
        )
    text = decode_text(name, data)
    drafts = chunk_csv(text) if suffix == ".csv" else chunk_markdown(text)
    if not drafts:
        raise KnowledgeFileError(f"{name}: no text to learn from")
    return drafts


def _column_key(header: str) -> str:
    return "".join(ch for ch in fold(header) if ch.isalnum())


def _sniff_delimiter(text: str) -> str:
    first_line = text.split("\n", 1)[0]
    counts = {d: first_line.count(d) for d in _CSV_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def chunk_csv(text: str) -> list[PassageDraft]:
    """One passage per row: question/answer rows when the header says so, else ``column: value`` lines."""
    rows = [
        [cell.strip() for cell in row]
        for row in csv.reader(io.StringIO(text), delimiter=_sniff_delimiter(text))
        if any(cell.strip() for cell in row)
    ]
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    width = max(len(row) for row in rows)
    names = [header[i] if i < len(header) and header[i] else f"column {i + 1}" for i in range(width)]
    keys = [_column_key(n) for n in names]
    q_col = next((i for i, k in enumerate(keys) if k in _QUESTION_COLUMNS), None)
    a_col = next((i for i, k in enumerate(keys) if k in _ANSWER_COLUMNS), None)
    drafts: list[PassageDraft] = []
    if q_col is not None and a_col is not None and q_col != a_col:
        for row in body:
            question = row[q_col] if q_col < len(row) else ""
            answer = row[a_col] if a_col < len(row) else ""
            if not answer:
                continue  # a question without an answer gives the agent nothing to say
            content = f"{question}\n{answer}" if question else answer
            drafts.append(PassageDraft(title=question or None, content=content, answer=answer))
        return drafts
    for row in body:
        lines = [f"{names[i]}: {value}" for i, value in enumerate(row) if value]
        title = next((value for value in row if value), None)
        drafts.append(PassageDraft(title=title, content="\n".join(lines)))
    return drafts


def _plain_inline(markdown: str) -> str:
    """A heading's text without emphasis marks and with links reduced to their text."""
    return _INLINE_MARKUP.sub(lambda m: m.group(1) or "", markdown).strip()


def _sections(text: str) -> Iterator[tuple[str | None, str]]:
    """(heading path, body) for the text before the first heading and under each heading."""
    lines = text.split("\n")
    tokens = _MARKDOWN.parse(text)
    path: list[tuple[int, str]] = []
    title: str | None = None
    start = 0
    for i, token in enumerate(tokens):
        # Only top-level headings cut sections; a "#" inside a list or a quote stays body text.
        if token.type != "heading_open" or token.level != 0 or token.map is None:
            continue
        yield title, "\n".join(lines[start : token.map[0]])
        level = int(token.tag[1:])
        heading = _plain_inline(tokens[i + 1].content) if i + 1 < len(tokens) else ""
        while path and path[-1][0] >= level:
            path.pop()
        if heading:
            path.append((level, heading))
        title = " > ".join(h for _, h in path) or None
        start = token.map[1]
    yield title, "\n".join(lines[start:])


def chunk_markdown(text: str) -> list[PassageDraft]:
    """Passages of a Markdown or text file: one per heading section, long sections split."""
    drafts: list[PassageDraft] = []
    for title, body in _sections(text):
        body = body.strip()
        if not body:
            continue
        drafts.extend(PassageDraft(title=title, content=piece) for piece in split_text(body))
    return drafts


_SPLITTERS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"\n[ \t]*\n\s*"), "\n\n"),
    (re.compile(r"\n"), "\n"),
    (_SENTENCE_END, " "),
    (re.compile(r"\s+"), " "),
)


def split_text(text: str, limit: int = MAX_PASSAGE_CHARS, level: int = 0) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters at the coarsest boundary that fits."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    if level >= len(_SPLITTERS):
        return [text[i : i + limit] for i in range(0, len(text), limit)]
    pattern, joiner = _SPLITTERS[level]
    pieces = [p for p in pattern.split(text) if p.strip()]
    if len(pieces) <= 1:
        return split_text(text, limit, level + 1)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if len(piece) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.extend(split_text(piece, limit, level + 1))
            continue
        candidate = f"{current}{joiner}{piece}" if current else piece
        if len(candidate) <= limit:
            current = candidate
        else:
            chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return [c.strip() for c in chunks if c.strip()]


# ---------------------------------------------------------------------------------------- storage


async def _index_drafts(
    drafts: Sequence[PassageDraft], on_progress: Callable[[int, int], None] | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    total = len(drafts)
    last_yield = time.perf_counter()
    for ordinal, draft in enumerate(drafts):
        # The title is indexed beside the content: for FAQ rows the question then counts twice,
        # which is what we want (the question says what the passage is about).
        source = f"{draft.title}\n{draft.content}" if draft.title else draft.content
        language, search_text = index_text(source)
        rows.append(
            {
                "ordinal": ordinal,
                "title": draft.title,
                "content": draft.content,
                "answer": draft.answer,
                "language": language,
                "search_text": search_text,
            }
        )
        if time.perf_counter() - last_yield > _YIELD_EVERY_S:
            if on_progress is not None and ordinal + 1 < total:
                on_progress(ordinal + 1, total)
            await asyncio.sleep(0)
            last_yield = time.perf_counter()
    return rows


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise KnowledgeFileError("a knowledge document needs a name")
    if len(name) > MAX_NAME_CHARS:
        raise KnowledgeFileError(f"document name longer than {MAX_NAME_CHARS} characters: {name[:40]}…")
    return name


async def _check_agent(conn: AsyncConnection, *, tenant_id: int, agent_id: int) -> dict[str, Any]:
    """The agent's stored configuration, once it is known to be the tenant's."""
    row = (await conn.execute(select(Agent.tenant_id, Agent.config).where(Agent.id == agent_id))).first()
    if row is None or row.tenant_id != tenant_id:
        raise KnowledgeFileError(f"tenant {tenant_id} has no agent {agent_id}")
    return dict(row.config or {})


async def _embed_rows(
    rows: list[dict[str, Any]],
    drafts: Sequence[PassageDraft],
    config: EmbeddingConfig,
    transport: httpx.AsyncBaseTransport | None,
) -> str | None:
    """Add each row's vector and sign bits (in place); the error instead when the endpoint fails."""
    embedder = Embedder(config, transport=transport)
    try:
        vectors = await embedder.embed([_embedding_text(d) for d in drafts])
    except EmbeddingError as exc:
        return str(exc)
    finally:
        await embedder.aclose()
    for row, vector in zip(rows, vectors, strict=True):
        row["embedding"] = to_bytes(vector)
        row["embedding_sign"] = sign_bits(vector)
    return None


def _embedding_text(draft: PassageDraft) -> str:
    # The question of a FAQ row is in its content already; a section's heading path is not.
    if draft.title and not draft.content.startswith(draft.title):
        return f"{draft.title}\n{draft.content}"
    return draft.content


async def _upsert_document(
    conn: AsyncConnection,
    *,
    tenant_id: int,
    agent_id: int,
    name: str,
    sha256: str,
    passages: int,
    embedding_model: str | None,
    embedding_error: str | None,
) -> tuple[int, datetime]:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(KnowledgeDocument).values(
        tenant_id=tenant_id,
        agent_id=agent_id,
        name=name,
        sha256=sha256,
        passages=passages,
        created_at=utcnow(),
        embedding_model=embedding_model,
        embedding_error=embedding_error,
    )
    # An upsert rather than select-then-insert: two uploads of the same new file at once must not
    # collide on the unique key (PostgreSQL); the second waits on the row lock and replaces the first.
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id", "agent_id", "name"],
        set_={
            "sha256": stmt.excluded.sha256,
            "passages": stmt.excluded.passages,
            "created_at": stmt.excluded.created_at,
            "embedding_model": stmt.excluded.embedding_model,
            "embedding_error": stmt.excluded.embedding_error,
        },
    ).returning(KnowledgeDocument.id, KnowledgeDocument.created_at)
    row = (await conn.execute(stmt)).one()
    return int(row.id), row.created_at


async def add_document(
    engine: AsyncEngine,
    *,
    tenant_id: int,
    agent_id: int,
    name: str,
    data: bytes,
    on_progress: Callable[[int, int], None] | None = None,
    embeddings: Any = None,
    transport: httpx.AsyncBaseTransport | None = None,
    decrypt: Callable[[str], str] | None = None,
) -> DocumentInfo:
    """Add (or replace) a knowledge file for a tenant's agent; all its passages change in one transaction.

    ``on_progress(done, total)`` is called while passages are indexed, and with ``(total, total)``
    once they are committed. Raises :class:`KnowledgeFileError` for a file that cannot be used.

    When the agent uses embeddings (``embeddings``, the application's ``EmbeddingSettings``, under
    the agent's own ``embeddings`` entry: see :mod:`warelay.knowledge.embeddings`), every passage is
    embedded before the transaction. If the endpoint fails, the document is stored all the same,
    searchable by full text, with the failure in ``embedding_error`` (logged as a warning, returned
    in the :class:`DocumentInfo`); adding the file again retries. ``transport`` is the HTTP
    transport of the embeddings client (tests fake the endpoint there); ``decrypt`` reads an
    agent's encrypted embeddings key (``SecretBox.decrypt``).
    """
    name = _check_name(name)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise KnowledgeFileError(f"{name}: larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB")
    drafts = chunk_document(name, data)
    if on_progress is not None:
        on_progress(0, len(drafts))
    rows = await _index_drafts(drafts, on_progress)
    sha256 = hashlib.sha256(data).hexdigest()
    async with engine.connect() as conn:
        agent_config = await _check_agent(conn, tenant_id=tenant_id, agent_id=agent_id)
    config = embedding_config(agent_config, embeddings, decrypt)
    embedding_error = None
    if config is not None:
        embedding_error = await _embed_rows(rows, drafts, config, transport)
        if embedding_error is not None:
            log.warning(
                "knowledge document %s for tenant %s agent %s stored without embeddings: %s",
                name,
                tenant_id,
                agent_id,
                embedding_error,
            )
    embedding_model = config.model if config is not None and embedding_error is None else None
    async with engine.begin() as conn:
        await _check_agent(conn, tenant_id=tenant_id, agent_id=agent_id)
        document_id, created_at = await _upsert_document(
            conn,
            tenant_id=tenant_id,
            agent_id=agent_id,
            name=name,
            sha256=sha256,
            passages=len(rows),
            embedding_model=embedding_model,
            embedding_error=embedding_error,
        )
        deleted = await conn.execute(
            delete(KnowledgePassage).where(KnowledgePassage.document_id == document_id)
        )
        for start in range(0, len(rows), _INSERT_BATCH):
            batch = rows[start : start + _INSERT_BATCH]
            await conn.execute(
                insert(KnowledgePassage),
                [
                    {**row, "document_id": document_id, "tenant_id": tenant_id, "agent_id": agent_id}
                    for row in batch
                ],
            )
    if on_progress is not None:
        on_progress(len(rows), len(rows))
    replaced = deleted.rowcount > 0
    log.info(
        "knowledge document %s %s for tenant %s agent %s: %s passages",
        name,
        "replaced" if replaced else "added",
        tenant_id,
        agent_id,
        len(rows),
    )
    return DocumentInfo(
        id=document_id,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name=name,
        sha256=sha256,
        passages=len(rows),
        created_at=created_at,
        replaced=replaced,
        embedding_model=embedding_model,
        embedding_error=embedding_error,
    )


async def list_documents(
    engine: AsyncEngine, *, tenant_id: int, agent_id: int | None = None
) -> list[DocumentInfo]:
    """A tenant's knowledge documents (one agent's when ``agent_id`` is given), by agent then name."""
    stmt = select(KnowledgeDocument).where(KnowledgeDocument.tenant_id == tenant_id)
    if agent_id is not None:
        stmt = stmt.where(KnowledgeDocument.agent_id == agent_id)
    stmt = stmt.order_by(KnowledgeDocument.agent_id, KnowledgeDocument.name)
    async with engine.connect() as conn:
        result = await conn.execute(stmt)
        return [
            DocumentInfo(
                id=row.id,
                tenant_id=row.tenant_id,
                agent_id=row.agent_id,
                name=row.name,
                sha256=row.sha256,
                passages=row.passages,
                created_at=row.created_at,
                embedding_model=row.embedding_model,
                embedding_error=row.embedding_error,
            )
            for row in result
        ]


async def remove_document(engine: AsyncEngine, *, tenant_id: int, agent_id: int, name: str) -> bool:
    """Remove a knowledge document and its passages; False when there was no such document."""
    async with engine.begin() as conn:
        document_id = (
            await conn.execute(
                select(KnowledgeDocument.id).where(
                    KnowledgeDocument.tenant_id == tenant_id,
                    KnowledgeDocument.agent_id == agent_id,
                    KnowledgeDocument.name == name,
                )
            )
        ).scalar_one_or_none()
        if document_id is None:
            return False
        # Passages first and explicitly: the FTS5 delete trigger must see each row go.
        await conn.execute(delete(KnowledgePassage).where(KnowledgePassage.document_id == document_id))
        await conn.execute(delete(KnowledgeDocument).where(KnowledgeDocument.id == document_id))
    log.info("knowledge document %s removed for tenant %s agent %s", name, tenant_id, agent_id)
    return True


def supported_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The knowledge files :func:`add_folder` would add, in name order (hidden files skipped)."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path
        for path in candidates
        if path.is_file()
        and path.suffix.lower() in SUPPORTED_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


async def add_folder(
    engine: AsyncEngine,
    *,
    tenant_id: int,
    agent_id: int,
    folder: str | Path,
    recursive: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
    embeddings: Any = None,
    transport: httpx.AsyncBaseTransport | None = None,
    decrypt: Callable[[str], str] | None = None,
) -> list[DocumentInfo]:
    """Add every supported file of ``folder``, each as its own document named by its relative path.

    Each file is its own transaction; the first file that cannot be used stops the run with a
    :class:`KnowledgeFileError` naming it (the files before it stay added).
    ``on_progress(name, done, total)`` reports passages per file; ``embeddings``, ``transport`` and
    ``decrypt`` are :func:`add_document`'s.
    """
    root = Path(folder)
    if not await asyncio.to_thread(root.is_dir):
        raise KnowledgeFileError(f"{root}: not a folder")
    documents: list[DocumentInfo] = []
    for path in await asyncio.to_thread(supported_files, root, recursive=recursive):
        name = path.relative_to(root).as_posix()
        data = await asyncio.to_thread(path.read_bytes)
        progress: Callable[[int, int], None] | None = None
        if on_progress is not None:

            def progress(
                done: int,
                total: int,
                _name: str = name,
                _report: Callable[[str, int, int], None] = on_progress,
            ) -> None:
                _report(_name, done, total)

        documents.append(
            await add_document(
                engine,
                tenant_id=tenant_id,
                agent_id=agent_id,
                name=name,
                data=data,
                on_progress=progress,
                embeddings=embeddings,
                transport=transport,
                decrypt=decrypt,
            )
        )
    return documents


async def add_sources(
    engine: AsyncEngine,
    *,
    tenant_id: int,
    agent_id: int,
    sources: Sequence[Path],
    embeddings: Any = None,
    decrypt: Callable[[str], str] | None = None,
) -> list[DocumentInfo]:
    """Add knowledge files and folders (a folder's files each named by their path inside it).

    A source that is neither a file nor a folder, or a file that cannot be used, raises
    :class:`KnowledgeFileError` naming it.
    """
    documents: list[DocumentInfo] = []
    for source in sources:
        if await asyncio.to_thread(source.is_dir):
            documents += await add_folder(
                engine,
                tenant_id=tenant_id,
                agent_id=agent_id,
                folder=source,
                embeddings=embeddings,
                decrypt=decrypt,
            )
        elif await asyncio.to_thread(source.is_file):
            data = await asyncio.to_thread(source.read_bytes)
            documents.append(
                await add_document(
                    engine,
                    tenant_id=tenant_id,
                    agent_id=agent_id,
                    name=source.name,
                    data=data,
                    embeddings=embeddings,
                    decrypt=decrypt,
                )
            )
        else:
            raise KnowledgeFileError(f"{source}: not a file or folder")
    return documents


async def count_passages(engine: AsyncEngine, *, tenant_id: int, agent_id: int) -> int:
    """How many passages a tenant's agent can search."""
    async with engine.connect() as conn:
        result = await conn.execute(
            select(func.count())
            .select_from(KnowledgePassage)
            .where(KnowledgePassage.tenant_id == tenant_id, KnowledgePassage.agent_id == agent_id)
        )
        return int(result.scalar_one())
