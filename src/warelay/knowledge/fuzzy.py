"""Trigram fallback for retrieval: question words no passage contains, matched to similar indexed terms.

Where it sits: ``knowledge.search`` keeps, per agent, the document frequency of every term its
passages are indexed with (the *vocabulary*). A question word none of whose terms is in the
vocabulary — a typo ("parkng", "implents"), or a form the stemmers do not conflate — is looked up
here among the vocabulary's terms by trigram similarity, as PostgreSQL's ``pg_trgm`` defines it
(the Jaccard index of the sets of three-letter pieces of the words padded with two spaces before and
one after). Terms similar enough join the word's group of alternatives, each with a *credit* below
one, so a corrected word counts less towards the confidence than a word typed right.

Why here and not in the database: it behaves the same on SQLite and PostgreSQL, needs no extension
(``CREATE EXTENSION pg_trgm`` is refused on many managed servers) and no second index, and it costs
time in proportion to the agent's vocabulary, not to its passages; the corrected terms then go
through the ordinary full-text query. Only unknown words are corrected: a word found as typed is
never replaced by a look-alike.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

# Below this similarity two terms are not taken for the same word. Measured on the clinic FAQ of
# tests/data/knowledge (tests/unit/knowledge/test_quality.py): 0.4 catches one-letter typos of
# words of five letters and more; lower values start matching unrelated words of out-of-scope
# questions.
MIN_SIMILARITY: Final = 0.45
# Terms shorter than this have too few trigrams to tell a typo from another word.
MIN_TERM_CHARS: Final = 4
# At most this many corrections per unknown word (the most similar first).
MAX_CORRECTIONS: Final = 3


def trigrams(term: str) -> frozenset[str]:
    """The trigrams of one term, padded as ``pg_trgm`` pads a word (two spaces before, one after)."""
    padded = f"  {term} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def similarity(a: str, b: str) -> float:
    """``pg_trgm``'s ``similarity()`` of two single terms: shared trigrams / all trigrams (0..1)."""
    ta, tb = trigrams(a), trigrams(b)
    union = len(ta | tb)
    return len(ta & tb) / union if union else 0.0


class Vocabulary:
    """An agent's indexed terms, with a trigram index to find the ones similar to a misspelt term."""

    def __init__(self, terms: Iterable[str]) -> None:
        self._trigrams: dict[str, frozenset[str]] = {}
        self._postings: defaultdict[str, list[str]] = defaultdict(list)
        for term in terms:
            if len(term) < MIN_TERM_CHARS or term.isdigit():
                continue
            grams = trigrams(term)
            self._trigrams[term] = grams
            for gram in grams:
                self._postings[gram].append(term)

    def __len__(self) -> int:
        return len(self._trigrams)

    def similar(
        self, term: str, *, minimum: float = MIN_SIMILARITY, limit: int = MAX_CORRECTIONS
    ) -> list[tuple[str, float]]:
        """Vocabulary terms at least ``minimum`` similar to ``term``, most similar first."""
        if len(term) < MIN_TERM_CHARS or term.isdigit():
            return []
        grams = trigrams(term)
        shared: Counter[str] = Counter()
        for gram in grams:
            shared.update(self._postings.get(gram, ()))
        found = []
        for candidate, common in shared.items():
            # |A ∪ B| = |A| + |B| - |A ∩ B|; a cheap bound first, most candidates share one trigram.
            score = common / (len(grams) + len(self._trigrams[candidate]) - common)
            if score >= minimum:
                found.append((candidate, score))
        found.sort(key=lambda item: (-item[1], item[0]))
        return found[:limit]


def correct_groups(
    groups: Sequence[tuple[str, ...]], document_frequency: Mapping[str, int], vocabulary: Vocabulary
) -> tuple[tuple[tuple[str, ...], ...], tuple[Mapping[str, float], ...]]:
    """Each word group, with similar vocabulary terms added to the groups no passage contains.

    Returns the groups and, per group, the credit of each added term (its similarity); the terms
    typed by the user have no entry, which means full credit.
    """
    out_groups: list[tuple[str, ...]] = []
    credits: list[Mapping[str, float]] = []
    for group in groups:
        if any(document_frequency.get(term, 0) for term in group):
            out_groups.append(group)
            credits.append({})
            continue
        best: dict[str, float] = {}
        for term in group:
            for candidate, score in vocabulary.similar(term):
                if score > best.get(candidate, 0.0):
                    best[candidate] = score
        chosen = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:MAX_CORRECTIONS]
        out_groups.append(group + tuple(term for term, _ in chosen))
        credits.append(dict(chosen))
    return tuple(out_groups), tuple(credits)
