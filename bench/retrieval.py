"""Knowledge retrieval latency on a 10,000-passage knowledge base (target: p99 <= 20 ms on SQLite).

Where it sits: beside the message path's benchmark (bench/run.py), measuring one stage of it in
process: ``DatabaseRetriever.search`` as the agents call it, over the message path's own database
access (``storage.direct``), after the knowledge was added with ``knowledge.ingest.add_document``.

The knowledge base is a CSV FAQ of made-up words with a Zipf-like frequency (the most common word in
about one passage in ten, as in real text once stopwords are gone); questions are 2-8 words drawn
from the same distribution, a tenth of them with one word misspelt (the trigram fallback's path).
The first question of the run loads the agent's term statistics and is reported apart.

Usage::

    .venv/bin/python bench/retrieval.py [--passages 10000] [--questions 2000] [--database-url URL ...]

Without ``--database-url`` it runs on a SQLite file in a temporary folder, and on PostgreSQL too
when ``BENCH_DATABASE_URL`` is set (a database the benchmark may fill: it creates its own tables
through the migrations). Results go to ``bench/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warelay.knowledge.ingest import add_document
from warelay.knowledge.search import DatabaseRetriever
from warelay.numbers import ensure_agent, ensure_tenant
from warelay.storage.db import create_engine, upgrade
from warelay.storage.direct import Database

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET_P99_MS = 20.0
SYLLABLES: tuple[str, ...] = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "ga", "ba", "vi", "zu")
SYLLABLES += ("ran", "tol", "mer")


def vocabulary(rnd: random.Random) -> tuple[list[str], list[float]]:
    """5,000 made-up words and their Zipf-like weights (the head cut, as stopwords cut real text)."""
    words = sorted({"".join(rnd.choices(SYLLABLES, k=rnd.randint(2, 4))) for _ in range(9000)})[:5000]
    rnd.shuffle(words)
    return words, [1 / (rank + 50) for rank in range(len(words))]


def faq(rows: int, words: list[str], weights: list[float], rnd: random.Random) -> bytes:
    """A question/answer CSV of ``rows`` rows."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "answer"])
    for _ in range(rows):
        question = " ".join(rnd.choices(words, weights, k=8)) + "?"
        writer.writerow([question, " ".join(rnd.choices(words, weights, k=50)) + "."])
    return out.getvalue().encode()


def questions(count: int, words: list[str], weights: list[float], rnd: random.Random) -> list[str]:
    """Questions of 2-8 words; one in ten has a word with a letter dropped."""
    asked = []
    for i in range(count):
        chosen = rnd.choices(words, weights, k=rnd.randint(2, 8))
        if i % 10 == 0:
            word = chosen[0]
            cut = rnd.randrange(len(word))
            chosen[0] = word[:cut] + word[cut + 1 :]
        asked.append(" ".join(chosen))
    return asked


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def run(url: str, passages: int, count: int) -> dict[str, Any]:
    """Fill a fresh agent with ``passages`` passages on ``url`` and time ``count`` questions."""
    rnd = random.Random(7)
    words, weights = vocabulary(rnd)
    engine = create_engine(url)
    await upgrade(engine)
    subdomain = f"bench-{int(time.time())}"
    tenant_id = await ensure_tenant(engine, subdomain)
    agent_id = await ensure_agent(engine, tenant_id=tenant_id, name="bench", kind="knowledge")
    started = time.perf_counter()
    data = faq(passages, words, weights, rnd)
    await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="big.csv", data=data)
    ingest_s = time.perf_counter() - started
    db = Database(url)
    retriever = DatabaseRetriever(db)
    asked = questions(count, words, weights, rnd)
    started = time.perf_counter()
    await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query=asked[0])
    first_ms = (time.perf_counter() - started) * 1000
    latencies = []
    found = 0
    for question in asked[1:]:
        started = time.perf_counter()
        results = await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query=question)
        latencies.append((time.perf_counter() - started) * 1000)
        found += bool(results)
    await retriever.aclose()
    await db.close()
    await engine.dispose()
    p99 = percentile(latencies, 99)
    return {
        "engine": engine.dialect.name,
        "passages": passages,
        "questions": len(latencies),
        "answered_with_passages": found,
        "ingest_s": round(ingest_s, 2),
        "first_question_ms": round(first_ms, 2),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p90": round(percentile(latencies, 90), 2),
            "p99": round(p99, 2),
            "max": round(max(latencies), 2),
            "mean": round(statistics.fmean(latencies), 2),
        },
        "target": {"p99_ms": TARGET_P99_MS, "met": p99 <= TARGET_P99_MS},
    }


def main() -> None:
    """Parse the arguments, run each database, write bench/results/retrieval.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--questions", type=int, default=2000)
    parser.add_argument("--database-url", action="append", default=[])
    args = parser.parse_args()
    urls: list[str] = args.database_url
    with tempfile.TemporaryDirectory() as folder:
        if not urls:
            urls = [f"sqlite+aiosqlite:///{folder}/retrieval.db"]
            if os.environ.get("BENCH_DATABASE_URL"):
                urls.append(os.environ["BENCH_DATABASE_URL"])
        runs = [asyncio.run(run(url, args.passages, args.questions)) for url in urls]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    ).stdout.strip()
    report = {
        "benchmark": "retrieval",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "commit": commit},
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "retrieval.json").write_text(json.dumps(report, indent=2) + "\n")
    for r in runs:
        lat = r["latency_ms"]
        print(
            f"{r['engine']:<10} {r['passages']} passages, {r['questions']} questions: p50 {lat['p50']} ms, "
            f"p99 {lat['p99']} ms (target {TARGET_P99_MS} ms: {'met' if r['target']['met'] else 'MISSED'}), "
            f"first {r['first_question_ms']} ms, ingest {r['ingest_s']} s"
        )


if __name__ == "__main__":
    main()
