"""Retrieval quality on the multilingual clinic FAQ of ``tests/data/knowledge``: hit@k and abstention.

The FAQ (``faq_multilingual.csv``) has the same 25 topics in English, Spanish and Indonesian; the
evaluation set (``faq_eval.json``) has, per language, paraphrased questions that share few words with
the FAQ, misspelt questions, and out-of-scope questions. A question is a hit at k when the passage of
its topic *in its own language* is among the first k results; an out-of-scope question is rightly
abstained from when the best result's confidence is below the knowledge agent's threshold.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from warelay.agents.base import Passage
from warelay.knowledge.search import DatabaseRetriever

DATA = Path(__file__).resolve().parents[2] / "data" / "knowledge"
FAQ_FILE = DATA / "faq_multilingual.csv"
EVAL_FILE = DATA / "faq_eval.json"
LANGUAGES = ("english", "spanish", "indonesian")


def faq_titles() -> dict[tuple[str, str], str]:
    """(topic, language) → the FAQ question, which is the title of its passage."""
    with FAQ_FILE.open(encoding="utf-8", newline="") as f:
        return {(row["topic"], row["language"]): row["question"] for row in csv.DictReader(f)}


@dataclass(frozen=True, slots=True)
class Questions:
    """One language's evaluation questions: (question, topic) pairs, and out-of-scope questions."""

    paraphrases: list[tuple[str, str]]
    typos: list[tuple[str, str]]
    out_of_scope: list[str]


def eval_set() -> dict[str, Questions]:
    """The evaluation questions per language (see the module docstring)."""
    data = json.loads(EVAL_FILE.read_text("utf-8"))
    return {
        language: Questions(
            paraphrases=[(str(q), str(t)) for q, t in data[language]["paraphrases"]],
            typos=[(str(q), str(t)) for q, t in data[language]["typos"]],
            out_of_scope=[str(q) for q in data[language]["out_of_scope"]],
        )
        for language in LANGUAGES
    }


@dataclass(frozen=True, slots=True)
class LanguageScore:
    """One language's figures."""

    language: str
    paraphrases: int
    hit1: float
    hit3: float
    answered: float  # right passage first *and* confident enough to be given as the answer
    typos: int
    typo_hit1: float
    out_of_scope: int
    abstention: float  # out-of-scope questions whose best confidence stays below the threshold
    wrong_answers: int  # in-scope questions answered (confident) with another topic's passage


async def evaluate(
    retriever: DatabaseRetriever, *, tenant_id: int, agent_id: int, threshold: float
) -> list[LanguageScore]:
    """Run every evaluation question through ``retriever`` and score it per language."""
    titles = faq_titles()
    scores = []
    for language, questions in eval_set().items():

        async def ask(question: str) -> Sequence[Passage]:
            return await retriever.search(tenant_id=tenant_id, agent_id=agent_id, query=question, limit=3)

        hit1 = hit3 = answered = wrong = 0
        paraphrases = questions.paraphrases
        for question, topic in paraphrases:
            found = await ask(question)
            expected = titles[(topic, language)]
            ranked = [p.title for p in found]
            hit1 += ranked[:1] == [expected]
            hit3 += expected in ranked
            if found and found[0].score >= threshold:
                if found[0].title == expected:
                    answered += 1
                else:
                    wrong += 1
        typo_hits = 0
        typos = questions.typos
        for question, topic in typos:
            found = await ask(question)
            typo_hits += [p.title for p in found[:1]] == [titles[(topic, language)]]
        abstained = 0
        out_of_scope = questions.out_of_scope
        for question in out_of_scope:
            found = await ask(question)
            abstained += not found or found[0].score < threshold
        scores.append(
            LanguageScore(
                language=language,
                paraphrases=len(paraphrases),
                hit1=hit1 / len(paraphrases),
                hit3=hit3 / len(paraphrases),
                answered=answered / len(paraphrases),
                typos=len(typos),
                typo_hit1=typo_hits / len(typos),
                out_of_scope=len(out_of_scope),
                abstention=abstained / len(out_of_scope),
                wrong_answers=wrong,
            )
        )
    return scores


def table(title: str, scores: Sequence[LanguageScore]) -> str:
    """The figures as a small text table (printed by the tests, copied into notes)."""
    lines = [
        title,
        f"{'language':<11} {'hit@1':>6} {'hit@3':>6} {'answered':>8} {'wrong':>5} "
        f"{'typo@1':>6} {'abstain':>7}",
    ]
    for s in scores:
        lines.append(
            f"{s.language:<11} {s.hit1:>6.2f} {s.hit3:>6.2f} {s.answered:>8.2f} {s.wrong_answers:>5} "
            f"{s.typo_hit1:>6.2f} {s.abstention:>7.2f}"
        )
    return "\n".join(lines)
