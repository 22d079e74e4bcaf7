"""Hybrid search pieces: a safe FTS5 query from any user text, and reciprocal rank fusion."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

SearchMode = Literal["dense", "bm25", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")

# Words too common to help BM25; dropping them keeps OR queries fast over large collections.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once
    only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves also many much""".split()
)
MAX_QUERY_TERMS = 32
_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(text: str) -> list[str]:
    """The words of a query worth searching for, lower-cased, de-duplicated, in order (at most MAX_QUERY_TERMS).

    Stop words and single letters (the "s" of "ABC's" matches almost every passage and makes a query slow) are
    dropped unless nothing else is left.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    content = [w for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())] or words
    return list(dict.fromkeys(content))[:MAX_QUERY_TERMS]


def fts5_match(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression that ORs the terms, each as a quoted string ("" for no terms).

    Quoting every term turns FTS5 syntax in user text (`AND`, `NEAR(`, `*`, `-`, `:` and quotes) into plain
    words, so no input can raise a syntax error.
    """
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def fts5_query(text: str) -> str:
    """`fts5_match(query_terms(text))`: any user text as a safe FTS5 query."""
    return fts5_match(query_terms(text))


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], *, k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of weight / (k + rank), rank from 1. Best first."""
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"Got {len(weights)} weights for {len(rankings)} rankings.")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with where it is and why it was found."""

    chunk_id: int
    doc_id: int
    doc_name: str
    text: str
    start: int  # character offsets of the chunk in its document's text
    end: int
    page: int | None
    score: float  # the fused score in hybrid mode, else the single retriever's score
    dense_score: float | None = None  # cosine similarity
    bm25_score: float | None = None  # -bm25 (higher is better)
    dense_rank: int | None = None
    bm25_rank: int | None = None

    def covers(self, start: int, end: int) -> bool:
        """True when the document range [start, end) lies inside this chunk."""
        return self.start <= start and end <= self.end
