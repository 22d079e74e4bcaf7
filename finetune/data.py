"""Training examples for the reader: SQuAD-format positives and built "no answer" negatives.

No SQuAD 2.0 training file is available, so unanswerable examples are built the way the reader meets them:

- `removed`: the question's own paragraph with the sentence(s) holding the answer cut out. The passage stays on
  topic and close to the question, as SQuAD 2.0's unanswerable questions are.
- `neighbour`: the paragraph of the same article that shares the most content words with the question (what
  retrieval puts in front of the reader) when it does not contain the answer.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatqa.metrics import normalize_answer
from chatqa.squad import load_squad
from knowledge.chunker import split_units
from knowledge.search import STOPWORDS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    question: str
    context: str
    answer: tuple[int, int] | None  # character span in context; None = no answer
    kind: str = "positive"  # "positive", "removed", "neighbour"
    group: str = ""  # article title (or conversation id): examples of one group stay on one side of a split


def load_examples(paths: Iterable[str | Path]) -> list[TrainExample]:
    """Every question of the files, with its first answer (None for SQuAD 2.0 unanswerables)."""
    examples = []
    for path in paths:
        squad = load_squad(path)
        for ex in squad.examples():
            if ex.is_impossible or not ex.answers:
                examples.append(TrainExample(ex.question, ex.context, None, "removed", ex.title))
            else:
                a = ex.answers[0]
                examples.append(TrainExample(ex.question, ex.context, (a.start, a.end), "positive", ex.title))
        logger.info("%s: %d examples", Path(path).name, len(examples))
    return examples


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS and len(w) > 1}


def _contains(context: str, answer_text: str) -> bool:
    needle = normalize_answer(answer_text)
    return bool(needle) and needle in normalize_answer(context)


def removed_sentence_negative(example: TrainExample) -> TrainExample | None:
    """The context without the sentences that overlap the answer; None when too little is left or the answer
    text still occurs elsewhere."""
    if example.answer is None:
        return None
    start, end = example.answer
    units = split_units(example.context)
    kept = [(s, e) for s, e, _ in units if e <= start or s >= end]
    if len(kept) < 2 or len(kept) == len(units):
        return None
    context = " ".join(example.context[s:e] for s, e in kept)
    if _contains(context, example.context[start:end]):
        return None
    return TrainExample(example.question, context, None, "removed", example.group)


def neighbour_negatives(examples: Sequence[TrainExample], indices: Iterable[int]) -> dict[int, TrainExample]:
    """For the positive examples at `indices`: the most word-similar other paragraph of the same group, when it
    does not contain the answer."""
    paragraphs: dict[str, dict[str, set[str]]] = {}
    for ex in examples:
        group = paragraphs.setdefault(ex.group, {})
        if ex.context not in group:
            group[ex.context] = _content_words(ex.context)
    out = {}
    for i in indices:
        ex = examples[i]
        if ex.answer is None:
            continue
        q = _content_words(ex.question)
        best, best_overlap = None, 0
        for p, p_words in paragraphs[ex.group].items():
            overlap = len(q & p_words)
            if p != ex.context and overlap > best_overlap:
                best, best_overlap = p, overlap
        if best is not None and not _contains(best, ex.context[ex.answer[0] : ex.answer[1]]):
            out[i] = TrainExample(ex.question, best, None, "neighbour", ex.group)
    return out


def with_negatives(examples: Sequence[TrainExample], ratio: float, seed: int = 0) -> list[TrainExample]:
    """The examples plus about `ratio` × positives built negatives, half of each kind, in a seeded shuffle."""
    if ratio < 0:
        raise ValueError(f"negative ratio must be >= 0, got {ratio}")
    rng = random.Random(seed)
    positives = [i for i, ex in enumerate(examples) if ex.answer is not None]
    want = round(ratio * len(positives))
    chosen = rng.sample(positives, min(len(positives), want))
    half = len(chosen) // 2
    negatives = [n for n in (removed_sentence_negative(examples[i]) for i in chosen[:half]) if n is not None]
    negatives += list(neighbour_negatives(examples, chosen[half:]).values())
    logger.info("built %d negatives for %d positives (ratio %.2f)", len(negatives), len(positives), ratio)
    out = list(examples) + negatives
    rng.shuffle(out)
    return out
