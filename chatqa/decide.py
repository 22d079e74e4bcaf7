"""Answer or abstain: the decision taken around the decoder, from signals calibrated on a dev set.

The decoder itself never abstains reliably (told to say "I don't know", the 0.5B model also refused 44% of
answerable questions; asked zero-shot whether the passages answer the question, it ranked worse than chance), so
the decision comes from signals around it:

- before drafting, from the question and what was read: the reader's no-answer margin (relative to its calibrated
  threshold), how many of the question's content words the passages hold at all, and how close the best passage
  is to the question in meaning (the embedder's cosine). A logistic score of these
  decides whether the draft is shown; answering this early keeps the answer streaming from its first token.
- after drafting, as a guard for the rare draft that should not have been written: a second logistic score adds what
  the draft shows (how many of its content words the passages it was shown hold; its tokens' mean log-probability)
  and, below its threshold, the draft is retracted and the abstention shown instead. Its threshold is calibrated so
  that it retracts only a small share of drafts to answerable questions.

The policy's numbers live in ``chatqa/models/abstention.json`` with how they were calibrated (``python -m finetune
abstention``); without that file the reader's own threshold decides alone, as in extractive mode.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatqa.grounding import content_words

logger = logging.getLogger(__name__)

POLICY_PATH = Path(__file__).parent / "models" / "abstention.json"
FEATURES = ("reader", "coverage", "dense")  # known before drafting
DRAFT_FEATURES = (*FEATURES, "support", "mean_logprob")  # known once the draft is written
READER_CLAMP = 12.0  # reader margins beyond this say nothing more; no span at all counts as -READER_CLAMP


@dataclass(frozen=True)
class Signals:
    """What the decision looks at, for one turn (also logged with it)."""

    reader: float  # reader's span score − no-answer score + its calibrated threshold − strictness: > 0 answers
    coverage: float  # share of the question's content words found in the passages read
    dense: float = 0.0  # the best passage's cosine similarity to the question (embedding search)
    support: float | None = None  # share of the draft's content words found in the passages it was shown
    mean_logprob: float | None = None  # mean log-probability of the draft's tokens

    def as_dict(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(float(v), 4)) for k, v in asdict(self).items()}


def reader_signal(span_score: float | None, no_answer_score: float, threshold: float, strictness: float = 0.0) -> float:
    """The reader's margin over its threshold, clamped; ``span_score`` None (no span at all) is the floor."""
    if span_score is None:
        return -READER_CLAMP
    return max(-READER_CLAMP, min(READER_CLAMP, span_score - no_answer_score + threshold - strictness))


def coverage(question: str, passages: Sequence[str]) -> float:
    """The share of ``question``'s content words that occur in ``passages`` (1.0 for a question without any)."""
    words = content_words(question)
    if not words:
        return 1.0
    found = set().union(*(content_words(p) for p in passages)) if passages else set()
    return len(words & found) / len(words)


@dataclass(frozen=True)
class AbstentionPolicy:
    """A logistic score over :data:`FEATURES` (answer when it is at least ``threshold``) and the draft guard."""

    weights: dict[str, float] = field(default_factory=lambda: {"reader": 1.0})
    bias: float = 0.0
    threshold: float = 0.0
    guard_weights: dict[str, float] = field(default_factory=dict)  # over DRAFT_FEATURES; empty: no guard
    guard_bias: float = 0.0
    guard_threshold: float = 0.0
    calibration: dict = field(default_factory=dict)  # how the numbers were obtained, and what they scored

    def __post_init__(self) -> None:
        unknown = (set(self.weights) - set(FEATURES)) | (set(self.guard_weights) - set(DRAFT_FEATURES))
        if unknown:
            raise ValueError(f"unknown abstention features {sorted(unknown)}; known: {', '.join(DRAFT_FEATURES)}")

    def score(self, signals: Signals) -> float:
        return self.bias + sum(w * float(getattr(signals, name)) for name, w in self.weights.items())

    def answers(self, signals: Signals) -> bool:
        """Before drafting: whether to answer at all."""
        return self.score(signals) >= self.threshold

    def guard_score(self, signals: Signals) -> float | None:
        """The draft guard's score, None without a guard or without the draft's signals."""
        if not self.guard_weights or any(getattr(signals, name) is None for name in self.guard_weights):
            return None
        return self.guard_bias + sum(w * float(getattr(signals, name)) for name, w in self.guard_weights.items())

    def retracts(self, signals: Signals) -> bool:
        """After drafting: whether the draft is retracted and the abstention shown instead."""
        score = self.guard_score(signals)
        return score is not None and score < self.guard_threshold

    def probability(self, signals: Signals) -> float:
        """The logistic score as a probability that the question is answerable from the passages."""
        z = self.score(signals)
        return 1.0 / (1.0 + math.exp(-z)) if z > -50 else 0.0

    @classmethod
    def load(cls, path: str | Path | None = None) -> AbstentionPolicy:
        """The calibrated policy at ``path`` (default: the shipped one); the reader-only default when absent."""
        path = Path(path) if path is not None else POLICY_PATH
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            logger.error("ignoring the abstention policy %s (%s): the reader decides alone", path, e)
            return cls()
        return cls(weights=dict(data["weights"]), bias=float(data["bias"]), threshold=float(data["threshold"]),
                   guard_weights=dict(data.get("guard_weights", {})), guard_bias=float(data.get("guard_bias", 0.0)),
                   guard_threshold=float(data.get("guard_threshold", 0.0)), calibration=data.get("calibration", {}))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n"
