"""Full-text retrieval over knowledge passages: SQLite FTS5 or PostgreSQL full-text, one confidence scale.

Where it sits: agents receive a :class:`warelay.agents.base.Retriever` in their ``AgentDeps``; this
is the one backed by the database. The knowledge agent answers from the best passage when its
confidence clears a threshold; the LLM agent puts the passages in its prompt. It is on the message
path, so it talks to the database through :mod:`warelay.storage.direct` (plain ``sqlite3`` in a
database thread, ``asyncpg`` on PostgreSQL), not through SQLAlchemy.

How a question is answered (one read transaction in the steady state, holding one statement; two
on PostgreSQL for agents searched through the GIN index, the first a ``SET LOCAL``):

1. the question is language-detected, tokenised and stemmed exactly as passages were
   (:func:`warelay.knowledge.text.query_groups`): one *group* of alternative terms per word;
2. the engine fetches candidates of the tenant's agent —
   SQLite: FTS5 ``MATCH '"a" OR "b"'`` (every term quoted) ranked by ``bm25(knowledge_fts)``;
   PostgreSQL: ``to_tsvector('simple', search_text) @@ to_tsquery('simple', 'a | b')`` through the
   GIN index, ranked by the same weighted coverage as step 3, tested with ``strpos`` on the stored
   terms. (``ts_rank_cd`` would re-parse ``search_text`` into a tsvector for every matching row —
   the schema stores no tsvector — which costs ~70 µs a row, 70 ms for 1,000 rows; ``strpos``
   costs ~5 µs.) An agent with few passages is simply scanned through the scope index, which
   beats any text index at that size and never touches other tenants' rows;
3. each candidate gets a **confidence** in 0..1 computed here in Python, identical on both engines:
   the share of the question's information found in the passage, each word weighted by its
   rarity among this agent's passages (BM25's IDF). Words no passage contains weigh the most, so a
   question about something the knowledge never mentions scores low even when its common words
   match. Candidates are ordered by confidence, and equal confidences by a BM25 score also
   computed here (term frequency, passage length), so both engines return the same order.

The document frequencies behind the weights are computed once per (tenant, agent) and kept in
memory; a scope's first question loads them in the same transaction as its candidates. The search
statement also returns a cheap version of the agent's documents (count, passage total, newest
change), so every process notices a change on its next question and reloads (once per process,
under the scope's lock, in a transaction of its own).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import httpx

from warelay.agents.base import Passage
from warelay.knowledge.embeddings import (
    Embedder,
    EmbeddingConfig,
    EmbeddingError,
    dot,
    embedding_config,
    from_bytes,
    sign_bits,
)
from warelay.knowledge.fuzzy import Vocabulary, correct_groups
from warelay.knowledge.text import query_groups
from warelay.storage.direct import Database, Row, Tx

log = logging.getLogger("warelay.knowledge")

# A pasted paragraph is not a question; its first words say enough to find candidates.
MAX_QUERY_GROUPS: Final = 24
# About how many passages the engine may rank for one question (see plan_match).
MATCH_BUDGET: Final = 1000
# With embeddings: how many passages closest by sign bits get an exact cosine (knowledge.embeddings).
RESCORE: Final = 64
# Reciprocal rank fusion's constant (Cormack et al., 2009).
RRF_K: Final = 60
Fusion = Literal["rrf", "mix"]

# Each statement carries the version of the agent's documents (count, passages, newest change):
# the cheap aggregate over a handful of rows that tells whether cached term statistics still hold.
# Columns of the search statements: the passage (see _Hit), then the version.
_VERSION_COLUMNS: Final = slice(7, 11)

# SQLite's CROSS JOIN keeps the written join order: the FTS5 match must drive the query (left to
# itself the planner walks the agent's passages and runs the MATCH once per passage: seconds).
# The inner query ranks narrow rows (scope columns only); the outer one reads the winners' text.
# Written in SQLite's own form (?n parameters, no casts), which storage.direct's translation of
# the PostgreSQL form leaves exactly as it is; the MATCH expression is a bound parameter, so no
# query syntax typed in a question ever reaches the statement's text.
# Parameters: ?1 tenant, ?2 agent, ?3 FTS5 match expression, ?4 candidates.
_SQLITE_SEARCH: Final = """
    SELECT p.id, p.title, p.content, p.answer, p.search_text, d.name AS document, p.language,
           v.docs, v.passages, v.max_id, v.changed
    FROM (
        SELECT knowledge_fts.rowid AS id, bm25(knowledge_fts) AS rank
        FROM knowledge_fts
        CROSS JOIN knowledge_passages AS s ON s.id = knowledge_fts.rowid
        WHERE knowledge_fts MATCH ?3 AND s.tenant_id = ?1 AND s.agent_id = ?2
        ORDER BY rank
        LIMIT ?4
    ) AS hit
    CROSS JOIN knowledge_passages AS p ON p.id = hit.id
    CROSS JOIN knowledge_documents AS d ON d.id = p.document_id
    CROSS JOIN (
        SELECT count(*) AS docs, coalesce(sum(passages), 0) AS passages, max(id) AS max_id,
               max(created_at) AS changed
        FROM knowledge_documents WHERE tenant_id = ?1 AND agent_id = ?2
    ) AS v
"""

# Parameters: $1 tenant, $2 agent, $3 candidates, $4 the tsquery (GIN variant only), then per
# word group its terms and its weight (see _postgres_sql and _postgres_terms).
_POSTGRES_SEARCH: Final = """
    SELECT p.id, p.title, p.content, p.answer, p.search_text, d.name AS document, p.language,
           v.docs, v.passages, v.max_id, v.changed
    FROM (
        SELECT id, size FROM (
            SELECT s.id, s.size, {score} AS score
            FROM (
                -- OFFSET 0 keeps this subquery from being flattened, so that the padded text is
                -- built once per row rather than once per term.
                SELECT s.id, length(s.search_text) AS size, ' ' || s.search_text || ' ' AS padded
                FROM knowledge_passages AS s
                WHERE {where}
                OFFSET 0
            ) AS s
        ) AS scored
        WHERE score > 0
        ORDER BY score DESC, size, id
        LIMIT $3
    ) AS hit
    JOIN knowledge_passages AS p ON p.id = hit.id
    JOIN knowledge_documents AS d ON d.id = p.document_id
    CROSS JOIN (
        SELECT count(*) AS docs, coalesce(sum(passages), 0) AS passages, max(id) AS max_id,
               max(created_at) AS changed
        FROM knowledge_documents WHERE tenant_id = $1 AND agent_id = $2
    ) AS v
"""
# Small scopes: the (tenant_id, agent_id) index and a strpos test per passage.
_POSTGRES_SCAN_WHERE: Final = "s.tenant_id = $1 AND s.agent_id = $2"
# Large scopes: the GIN index of migration 0001. The tsvector expression must be written exactly
# as indexed (a literal 'simple' config) for the planner to match it; "+ 0" keeps the planner from
# choosing the scope index instead, which would re-parse every passage of the agent (~70 µs each).
_POSTGRES_INDEX_WHERE: Final = (
    "s.tenant_id + 0 = $1 AND s.agent_id + 0 = $2 "
    "AND to_tsvector('simple', s.search_text) @@ to_tsquery('simple', $4)"
)
_POSTGRES_NO_SEQSCAN: Final = "SET LOCAL enable_seqscan = off"  # see _postgres_candidates
# Up to this many passages an agent is scanned rather than searched through the GIN index.
POSTGRES_SCAN_PASSAGES: Final = 1000


@functools.lru_cache(maxsize=512)
def _postgres_sql(shape: tuple[int, ...], *, indexed: bool) -> str:
    """The PostgreSQL candidate statement for word groups of these sizes (terms per group).

    Each group scores its weight when the padded text holds one of its terms (padded with spaces
    too, see :func:`_postgres_terms`).
    """
    n = 5 if indexed else 4  # the first term's parameter
    cases = []
    for size in shape:
        tests = " OR ".join(f"strpos(s.padded, ${n + j}) > 0" for j in range(size))
        cases.append(f"CASE WHEN {tests} THEN CAST(${n + size} AS float8) ELSE 0 END")
        n += size + 1
    # Only generated parameter numbers are put into the SQL; every value is a bound parameter.
    return _POSTGRES_SEARCH.format(
        score=" + ".join(cases), where=_POSTGRES_INDEX_WHERE if indexed else _POSTGRES_SCAN_WHERE
    )


def _postgres_terms(groups: Sequence[tuple[str, ...]], weights: Sequence[float]) -> list[Any]:
    """The term and weight parameters of :func:`_postgres_sql`, in its order."""
    params: list[Any] = []
    for group, weight in zip(groups, weights, strict=True):
        params.extend(f" {term} " for term in group)
        params.append(weight)
    return params


# Parameters of both: $1 tenant, $2 agent.
_STATS: Final = """
    SELECT p.search_text, v.docs, v.passages, v.max_id, v.changed, p.id, p.embedding_sign, d.embedding_model
    FROM knowledge_passages AS p JOIN knowledge_documents AS d ON d.id = p.document_id CROSS JOIN (
        SELECT count(*) AS docs, coalesce(sum(passages), 0) AS passages, max(id) AS max_id,
               max(created_at) AS changed
        FROM knowledge_documents WHERE tenant_id = $1 AND agent_id = $2
    ) AS v
    WHERE p.tenant_id = $1 AND p.agent_id = $2
"""
_STATS_VERSION: Final = """
    SELECT count(*) AS docs, coalesce(sum(passages), 0) AS passages, max(id) AS max_id,
           max(created_at) AS changed
    FROM knowledge_documents WHERE tenant_id = $1 AND agent_id = $2
"""
_AGENT_CONFIG: Final = "SELECT config FROM agents WHERE id = $2 AND tenant_id = $1"
# The passages to compare with the question's vector: full-text candidates and the closest by sign
# bits. Parameters: $1 tenant, $2 agent, $3 passage ids.
_BY_IDS: Final = """
    SELECT p.id, p.title, p.content, p.answer, p.search_text, d.name AS document, p.language,
           p.embedding
    FROM knowledge_passages AS p JOIN knowledge_documents AS d ON d.id = p.document_id
    WHERE p.id = ANY($3) AND p.tenant_id = $1 AND p.agent_id = $2
"""


def fts5_query(groups: Sequence[Sequence[str]], *, all_of: bool = False) -> str:
    """An FTS5 MATCH expression: any term (or, with ``all_of``, a term of every group), each quoted.

    Quoting every term as an FTS5 string keeps words like ``OR``, ``NEAR`` or ``col:`` from being
    read as query syntax.
    """
    if not all_of:
        return " OR ".join(_fts5_string(term) for term in _flat(groups))
    return " AND ".join("(" + " OR ".join(_fts5_string(t) for t in group) + ")" for group in groups)


def tsquery(groups: Sequence[Sequence[str]], *, all_of: bool = False) -> str:
    """A ``to_tsquery`` expression like :func:`fts5_query`, each term a quoted lexeme."""
    if not all_of:
        return " | ".join(_lexeme(term) for term in _flat(groups))
    return " & ".join("(" + " | ".join(_lexeme(t) for t in group) + ")" for group in groups)


def _flat(groups: Sequence[Sequence[str]]) -> list[str]:
    return list(dict.fromkeys(term for group in groups for term in group))


def _fts5_string(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _lexeme(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def idf(document_frequency: int, passages: int) -> float:
    """BM25's inverse document frequency: rare terms weigh more; always positive."""
    df = min(document_frequency, passages)
    return math.log(1.0 + (passages - df + 0.5) / (df + 0.5))


# BM25's usual constants; the score only orders passages of equal confidence.
_K1: Final = 1.2
_B: Final = 0.75


def score_passage(
    groups: Sequence[tuple[str, ...]],
    weights: Sequence[float],
    search_text: str,
    average_length: float,
    *,
    credits: Sequence[Mapping[str, float]] | None = None,
) -> tuple[float, float]:
    """(confidence, bm25) of one passage for a question's word groups and their IDF weights.

    The confidence is the weighted share of the groups having a term in the passage (0..1). A term
    counts with its credit (``credits[i][term]``, 1 when absent: the corrections of the trigram
    fallback count their similarity).
    """
    total = sum(weights)
    if total <= 0:
        return 0.0, 0.0
    terms = search_text.split()
    present = set(terms)
    norm = _K1 * (1.0 - _B + _B * len(terms) / max(average_length, 1.0))
    found = 0.0
    bm25 = 0.0
    for i, (group, weight) in enumerate(zip(groups, weights, strict=True)):
        if present.isdisjoint(group):
            continue
        credit = 0.0
        for term in group:
            if term in present:
                credit = max(credit, credits[i].get(term, 1.0) if credits is not None else 1.0)
        found += weight * credit
        # The alternative terms of one word are indexed side by side; count the word once.
        tf = max(terms.count(term) for term in group if term in present)
        bm25 += weight * credit * tf * (_K1 + 1.0) / (tf + norm)
    return found / total, bm25


@dataclass(frozen=True, slots=True)
class MatchPlan:
    """Which word groups the engine's query uses, and whether a passage needs any term or every group."""

    groups: tuple[tuple[str, ...], ...]
    all_of: bool = False


def plan_match(
    groups: Sequence[tuple[str, ...]], document_frequency: Mapping[str, int], passages: int
) -> list[MatchPlan]:
    """The engine queries to try in turn, the first returning rows wins (see :data:`MATCH_BUDGET`).

    Ranking every passage that contains a very common word costs time in proportion to how many
    there are (bm25 over 10,000 rows takes SQLite ~30 ms), and such words barely move the
    confidence. So the query keeps the rarest words while the passages they match stay within
    the budget; the common ones still count when candidates are scored. When even the rarest word
    is common, passages must contain several of the words (AND), which finds the passages a
    question covers best, with an OR over the rarest word as the fallback. Knowledge bases smaller
    than the budget are always searched with every word.
    """

    def frequency(group: tuple[str, ...]) -> int:
        return max(document_frequency.get(term, 0) for term in group)

    ranked = sorted(groups, key=frequency)
    # Words no passage contained when the statistics were taken cost nothing to look up (and may
    # be new since); they go into every OR query.
    unknown = [g for g in ranked if frequency(g) == 0]
    known = [g for g in ranked if frequency(g) > 0]
    if not known:
        return [MatchPlan(tuple(unknown))]
    plans: list[MatchPlan] = []
    if frequency(known[0]) > MATCH_BUDGET and len(known) > 1:
        chosen: list[tuple[str, ...]] = []
        expected = float(max(passages, 1))
        for group in known:
            chosen.append(group)
            expected *= min(frequency(group) / max(passages, 1), 1.0)
            if expected <= MATCH_BUDGET:
                break
        plans.append(MatchPlan(tuple(chosen), all_of=True))
    chosen = [*unknown, known[0]]
    rows = frequency(known[0])
    for group in known[1:]:
        rows += frequency(group)
        if rows > MATCH_BUDGET:
            break
        chosen.append(group)
    plans.append(MatchPlan(tuple(chosen)))
    return plans


def passage_notes(passages: Iterable[Passage]) -> list[dict[str, Any]]:
    """What a turn records of the passages its answer used: id, document, title and score of each.

    JSON-ready, for ``AgentReply.notes["passages"]``, so that an operator can see why the agent
    said what it said.
    """
    return [
        {"id": int(p.id), "document": p.document, "title": p.title, "score": float(p.score)} for p in passages
    ]


@dataclass(frozen=True, slots=True)
class _Signs:
    """The embedded passages of a scope for one model: ids and sign bits, side by side."""

    ids: list[int]
    signs: list[int]


@dataclass(frozen=True)
class _ScopeStats:
    version: tuple[Any, ...]
    passages: int
    average_length: float
    document_frequency: dict[str, int]
    agent_config: Mapping[str, Any] = field(default_factory=dict)
    signs: Mapping[str, _Signs] = field(default_factory=dict)  # by embeddings model

    def weights(self, groups: Sequence[tuple[str, ...]]) -> list[float]:
        """Each word group's IDF weight (a group is as common as its most common term)."""
        total = max(self.passages, 1)
        return [idf(max(self.document_frequency.get(t, 0) for t in group), total) for group in groups]

    @functools.cached_property
    def vocabulary(self) -> Vocabulary:
        """The trigram index of the scope's terms, built on the first question that needs it."""
        return Vocabulary(self.document_frequency)


@dataclass(frozen=True, slots=True)
class _Query:
    """A question's word groups as searched: trigram corrections added, with their credits."""

    groups: tuple[tuple[str, ...], ...]
    credits: tuple[Mapping[str, float], ...]


def _expand(groups: Sequence[tuple[str, ...]], stats: _ScopeStats) -> _Query:
    """The question's groups, unknown words completed by the trigram fallback (see knowledge.fuzzy)."""
    if all(any(stats.document_frequency.get(t, 0) for t in group) for group in groups):
        return _Query(tuple(groups), tuple({} for _ in groups))
    corrected, credits = correct_groups(groups, stats.document_frequency, stats.vocabulary)
    return _Query(corrected, credits)


class _Hit(NamedTuple):
    """A candidate passage (the first columns of the search statements)."""

    id: int
    title: str | None
    content: str
    answer: str | None
    search_text: str
    document: str
    language: str | None


@dataclass(frozen=True, slots=True)
class _QueryVector:
    """A question's embedding, for the scope's passages embedded with ``model``."""

    model: str
    vector: list[float]
    sign: int


@dataclass(frozen=True, slots=True)
class _Found:
    """What one question's transaction found: the statistics it used, candidates, their version."""

    stats: _ScopeStats
    query: _Query
    hits: list[_Hit]
    version: tuple[Any, ...] | None  # None when there are no candidates
    cosines: Mapping[int, float] = field(default_factory=dict)  # by passage id, when embedded


# The transaction functions below run, on SQLite, whole in a database thread (see
# warelay.storage.direct): they await nothing but ``tx`` and touch no shared state; the caches
# and locks stay with DatabaseRetriever, on the event loop.


async def _find(
    tx: Tx,
    tenant_id: int,
    agent_id: int,
    groups: Sequence[tuple[str, ...]],
    stats: _ScopeStats | None,
    candidates: int,
    vector: _QueryVector | None = None,
) -> _Found:
    """One question's transaction: the scope's statistics (unless given), then its candidates.

    With the question's ``vector``, the passages closest to it by sign bits join the full-text
    candidates, and every candidate's cosine similarity is computed from its stored vector.
    """
    if stats is None:
        stats = await _load_stats(tx, tenant_id, agent_id)
    query = _expand(groups, stats)
    rows: list[Row] = []
    if query.groups:
        if tx.postgres:
            rows = await _postgres_candidates(tx, tenant_id, agent_id, query.groups, stats, candidates)
        else:
            rows = await _sqlite_candidates(tx, tenant_id, agent_id, query.groups, stats, candidates)
    signs = stats.signs.get(vector.model) if vector is not None else None
    if vector is None or signs is None:
        if not rows:
            return _Found(stats, query, [], None)
        hits = [_Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
        return _Found(stats, query, hits, tuple(rows[0][_VERSION_COLUMNS]))
    version = tuple(rows[0][_VERSION_COLUMNS]) if rows else await _version(tx, tenant_id, agent_id)
    ids = {int(r[0]) for r in rows}
    ids.update(nearest_by_signs(vector.sign, signs.ids, signs.signs, RESCORE))
    hits = []
    cosines: dict[int, float] = {}
    for r in await tx.fetch(_BY_IDS, tenant_id, agent_id, sorted(ids)):
        hits.append(_Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6]))
        if r[7] is not None:
            stored = from_bytes(bytes(r[7]))
            if len(stored) == len(vector.vector):
                cosines[int(r[0])] = dot(vector.vector, stored)
    return _Found(stats, query, hits, version, cosines)


def nearest_by_signs(sign: int, ids: Sequence[int], signs: Sequence[int], count: int) -> list[int]:
    """The ``count`` ids whose sign bits differ least from ``sign`` (Hamming distance)."""
    if len(ids) <= count:
        return list(ids)
    distances = [(sign ^ other).bit_count() for other in signs]
    return [ids[i] for i in heapq.nsmallest(count, range(len(ids)), key=distances.__getitem__)]


async def _sqlite_candidates(
    tx: Tx,
    tenant_id: int,
    agent_id: int,
    groups: Sequence[tuple[str, ...]],
    stats: _ScopeStats,
    candidates: int,
) -> list[Row]:
    rows: list[Row] = []
    for plan in plan_match(groups, stats.document_frequency, stats.passages):
        match = fts5_query(plan.groups, all_of=plan.all_of)
        rows = await tx.fetch(_SQLITE_SEARCH, tenant_id, agent_id, match, candidates)
        if rows:
            break
    return rows


async def _postgres_candidates(
    tx: Tx,
    tenant_id: int,
    agent_id: int,
    groups: Sequence[tuple[str, ...]],
    stats: _ScopeStats,
    candidates: int,
) -> list[Row]:
    # Candidates are ranked by the question's weighted coverage, every word counted.
    terms = _postgres_terms(groups, stats.weights(groups))
    shape = tuple(len(group) for group in groups)
    if stats.passages <= POSTGRES_SCAN_PASSAGES:
        return await tx.fetch(_postgres_sql(shape, indexed=False), tenant_id, agent_id, candidates, *terms)
    statement = _postgres_sql(shape, indexed=True)
    # The planner underrates to_tsvector's cost and picks a sequential scan, parsing every passage
    # of every tenant, once the match looks unselective; this transaction only reads.
    await tx.execute(_POSTGRES_NO_SEQSCAN)
    rows: list[Row] = []
    for plan in plan_match(groups, stats.document_frequency, stats.passages):
        match = tsquery(plan.groups, all_of=plan.all_of)
        rows = await tx.fetch(statement, tenant_id, agent_id, candidates, match, *terms)
        if rows:
            break
    return rows


async def _load_stats(tx: Tx, tenant_id: int, agent_id: int) -> _ScopeStats:
    """Count, for every term of the agent's passages, how many passages contain it."""
    frequency: Counter[str] = Counter()
    version: tuple[Any, ...] | None = None
    passages = 0
    length = 0
    signs: dict[str, _Signs] = {}
    for row in await tx.fetch(_STATS, tenant_id, agent_id):
        version = (row[1], row[2], row[3], row[4])
        terms = row[0].split()
        frequency.update(set(terms))
        length += len(terms)
        passages += 1
        if row[6] is not None and row[7] is not None:
            by_model = signs.setdefault(row[7], _Signs([], []))
            by_model.ids.append(int(row[5]))
            by_model.signs.append(int.from_bytes(row[6], "little"))
    if version is None:
        version = await _version(tx, tenant_id, agent_id)
    config_row = await tx.fetchrow(_AGENT_CONFIG, tenant_id, agent_id)
    config = tx.json(config_row[0]) if config_row is not None else None
    log.debug("knowledge stats loaded for tenant %s agent %s: %s passages", tenant_id, agent_id, passages)
    return _ScopeStats(
        version=version,
        passages=passages,
        average_length=length / passages if passages else 1.0,
        document_frequency=dict(frequency),
        agent_config=config if isinstance(config, Mapping) else {},
        signs=signs,
    )


async def _version(tx: Tx, tenant_id: int, agent_id: int) -> tuple[Any, ...]:
    v = await tx.fetchrow(_STATS_VERSION, tenant_id, agent_id)
    assert v is not None  # an aggregate without GROUP BY always has its row
    return (v[0], v[1], v[2], v[3])


class DatabaseRetriever:
    """The :class:`~warelay.agents.base.Retriever` over the knowledge tables (SQLite or PostgreSQL).

    ``embeddings`` (the application's ``EmbeddingSettings``) and each agent's own ``embeddings``
    entry say which agents search with embeddings too; their passages must have been embedded with
    the same model at ingest. Such a question's passages are ranked by ``fusion`` of the full-text
    and the embedding rankings — ``"rrf"`` (reciprocal rank fusion) or ``"mix"`` (by the score
    below) — and every passage's ``score`` is ``(1 - semantic_weight) * confidence + semantic_weight
    * max(cosine, 0)``. If the endpoint fails, the question is answered by full text alone.
    ``transport`` is the embeddings client's HTTP transport (tests fake the endpoint there);
    ``decrypt`` reads an agent's encrypted embeddings key (``SecretBox.decrypt``).
    """

    def __init__(
        self,
        db: Database,
        *,
        candidates: int = 32,
        cached_scopes: int = 256,
        embeddings: Any = None,
        fusion: Fusion = "mix",
        semantic_weight: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
        decrypt: Callable[[str], str] | None = None,
    ) -> None:
        if fusion not in ("rrf", "mix"):
            raise ValueError(f"fusion must be 'rrf' or 'mix', not {fusion!r}")
        if not 0 <= semantic_weight <= 1:
            raise ValueError(f"semantic_weight must be from 0 to 1, not {semantic_weight!r}")
        self._db = db
        self._candidates = candidates
        self._cached_scopes = cached_scopes
        self._stats: OrderedDict[tuple[int, int], _ScopeStats] = OrderedDict()
        self._locks: dict[tuple[int, int], asyncio.Lock] = {}
        self._embeddings = embeddings
        self._fusion = fusion
        self._semantic_weight = semantic_weight
        self._transport = transport
        self._decrypt = decrypt
        self._embedders: dict[EmbeddingConfig, Embedder] = {}

    async def aclose(self) -> None:
        """Close the HTTP clients of the embeddings endpoints used so far."""
        embedders, self._embedders = list(self._embedders.values()), {}
        for embedder in embedders:
            await embedder.aclose()

    async def search(
        self, *, tenant_id: int, agent_id: int, query: str, limit: int = 5, language: str | None = None
    ) -> Sequence[Passage]:
        """Best passages first, ``score`` being the confidence (0..1); empty when nothing matches."""
        if limit <= 0:
            return []
        detected, groups = query_groups(query, language)
        groups = groups[:MAX_QUERY_GROUPS]
        if not groups:
            return []
        key = (tenant_id, agent_id)
        candidates = max(self._candidates, limit)
        stats = self._stats.get(key)
        if stats is None:
            found = await self._first_search(key, groups, candidates)
            vector = await self._query_vector(found.stats, query, key)
            if vector is not None:  # the scope turned out to be embedded: search again with it
                found = await self._db.read(
                    _find, tenant_id, agent_id, groups, found.stats, candidates, vector
                )
        else:
            vector = await self._query_vector(stats, query, key)
            found = await self._db.read(_find, tenant_id, agent_id, groups, stats, candidates, vector)
        if not found.hits:
            return []
        stats = found.stats
        if found.version != stats.version:
            stats = await self._refresh_stats(key, found.version)
        if key in self._stats:  # another search may have evicted it meanwhile
            self._stats.move_to_end(key)
        expanded = found.query
        weights = stats.weights(expanded.groups)
        lexical = sorted(
            (
                (
                    *score_passage(
                        expanded.groups,
                        weights,
                        hit.search_text,
                        stats.average_length,
                        credits=expanded.credits,
                    ),
                    hit,
                )
                for hit in found.hits
            ),
            # Equal confidence: a passage in the question's language first (a FAQ kept in several
            # languages has the same names and numbers in each), then the better BM25 score.
            key=lambda item: (-round(item[0], 4), item[2].language != detected, -item[1], item[2].id),
        )
        ranked = [(confidence, hit) for confidence, _bm25, hit in lexical if confidence > 0]
        if found.cosines:
            ranked = self._fuse(lexical, found.cosines, detected)
        results = [
            Passage(
                id=int(hit.id),
                document=hit.document,
                title=hit.title,
                content=hit.content,
                answer=hit.answer,
                score=round(score, 4),
            )
            for score, hit in ranked[:limit]
        ]
        log.debug(
            "knowledge search tenant=%s agent=%s language=%s groups=%s embedded=%s best=%s",
            tenant_id,
            agent_id,
            detected,
            expanded.groups,
            bool(found.cosines),
            [(p.id, p.score) for p in results[:3]],
        )
        return results

    def _fuse(
        self,
        lexical: Sequence[tuple[float, float, _Hit]],
        cosines: Mapping[int, float],
        detected: str,
    ) -> list[tuple[float, _Hit]]:
        """Full-text and embedding rankings combined; each passage with its hybrid score."""
        w = self._semantic_weight
        scores = {
            hit.id: (1.0 - w) * confidence + w * max(cosines.get(hit.id, 0.0), 0.0)
            for confidence, _bm25, hit in lexical
        }
        hits = {hit.id: hit for _c, _b, hit in lexical}
        if self._fusion == "mix":
            order = sorted(hits, key=lambda i: (-round(scores[i], 4), hits[i].language != detected, i))
        else:
            fused: dict[int, float] = {}
            by_text = [hit.id for confidence, _bm25, hit in lexical if confidence > 0]
            by_meaning = sorted(cosines, key=lambda i: (-cosines[i], i))
            for ranking in (by_text, by_meaning):
                for rank, passage_id in enumerate(ranking):
                    fused[passage_id] = fused.get(passage_id, 0.0) + 1.0 / (RRF_K + rank + 1)
            order = sorted(fused, key=lambda i: (-fused[i], hits[i].language != detected, i))
        return [(scores[i], hits[i]) for i in order if scores[i] > 0]

    async def _query_vector(
        self, stats: _ScopeStats, query: str, key: tuple[int, int]
    ) -> _QueryVector | None:
        """The question's embedding when the scope is embedded with its agent's model; else None.

        A failing endpoint (or a malformed ``embeddings`` entry in the agent's configuration) is
        logged and leaves the question to full text: a turn is never failed for it.
        """
        if not stats.signs:
            return None
        try:
            config = embedding_config(stats.agent_config, self._embeddings, self._decrypt)
        except ValueError as exc:
            log.warning("knowledge search for tenant %s agent %s without embeddings: %s", *key, exc)
            return None
        if config is None or config.model not in stats.signs:
            return None
        embedder = self._embedders.get(config)
        if embedder is None:
            embedder = self._embedders[config] = Embedder(config, transport=self._transport)
        try:
            [vector] = await embedder.embed([query])
        except EmbeddingError as exc:
            log.warning("knowledge search for tenant %s agent %s by full text only: %s", *key, exc)
            return None
        return _QueryVector(config.model, vector, int.from_bytes(sign_bits(vector), "little"))

    async def _first_search(
        self, key: tuple[int, int], groups: Sequence[tuple[str, ...]], candidates: int
    ) -> _Found:
        """A question for a scope without cached statistics: they load in the same transaction.

        The scope's lock makes concurrent first questions load them once. It is held across the
        transaction, which is safe: it is only ever awaited before a transaction starts, so its
        waiters hold no connection or database thread that the holder could need.
        """
        async with self._lock(key):
            stats = self._stats.get(key)
            if stats is None:
                found = await self._db.read(_find, *key, groups, None, candidates)
                self._remember(key, found.stats)
                return found
        return await self._db.read(_find, *key, groups, stats, candidates)

    async def _refresh_stats(self, key: tuple[int, int], version: tuple[Any, ...] | None) -> _ScopeStats:
        """Load a scope's statistics unless another search just did (``version`` None: any version)."""
        async with self._lock(key):
            stats = self._stats.get(key)
            if stats is None or (version is not None and stats.version != version):
                stats = await self._db.read(_load_stats, *key)
                self._remember(key, stats)
        return stats

    def _lock(self, key: tuple[int, int]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _remember(self, key: tuple[int, int], stats: _ScopeStats) -> None:
        self._stats[key] = stats
        self._stats.move_to_end(key)
        while len(self._stats) > self._cached_scopes:
            evicted, _ = self._stats.popitem(last=False)
            self._locks.pop(evicted, None)
