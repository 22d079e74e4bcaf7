"""The data of one conversational turn, as it flows from retrieval to the answer, the log and the UI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from knowledge.search import Hit

AnswerMode = Literal["extractive", "generative", "auto"]
ANSWER_MODES: tuple[str, ...] = ("extractive", "generative", "auto")


@dataclass(frozen=True)
class AnswerSpan:
    """The reader's answer: a character span of one retrieved passage, and of its document."""

    passage_index: int  # index into TurnResult.passages
    chunk_id: int
    doc_id: int
    doc_name: str
    start: int  # character offsets into the passage (chunk) text
    end: int
    text: str
    score: float  # start + end logit
    no_answer_score: float  # the null score the span had to beat

    def doc_offsets(self, passage: Hit) -> tuple[int, int]:
        """The span's character offsets in its document's text."""
        return passage.start + self.start, passage.start + self.end


@dataclass
class TurnResult:
    question: str  # as the person asked it (shown)
    standalone_question: str  # history-aware rewrite used for retrieval and reading
    answer: str  # the text shown
    mode: str  # "extractive" or "generative": how `answer` was made
    abstained: bool
    span: AnswerSpan | None  # None when abstaining
    passages: list[Hit] = field(default_factory=list)  # retrieved passages, best first, as read
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: condense, search, read, compose
    model_versions: dict[str, str] = field(default_factory=dict)  # role → version, e.g. {"reader": "default"}
    conversation_id: str | None = None
    turn_id: int | None = None  # row id in the conversation log, once recorded
    evidence: tuple[int, int, int] | None = None  # what to highlight: (passage index, start, end) in that passage
    citations: list[int] = field(default_factory=list)  # passage indices the answer cites as [n], in order
    cited_numbers: dict[int, int] = field(default_factory=dict)  # passage index → the n it was shown to the decoder as
    signals: dict[str, float | None] = field(default_factory=dict)  # what the answer-or-abstain decision looked at

    def details(self) -> dict:
        """What the conversation log keeps of the answer beyond its span: evidence, citations, signals."""
        return {"evidence": None if self.evidence is None else list(self.evidence), "citations": self.citations,
                "cited_numbers": {str(k): v for k, v in self.cited_numbers.items()}, "signals": self.signals}


def source_numbers(n_passages: int, shown: dict[int, int] | None) -> dict[int, int]:
    """The number each of a turn's passages is listed under: the [n] it was shown to the decoder as (so an answer's
    citations match the list), the other passages after them by rank; by rank alone when nothing was shown."""
    shown = {int(i): int(n) for i, n in (shown or {}).items() if 0 <= int(i) < n_passages}
    if not shown:
        return {i: i + 1 for i in range(n_passages)}
    numbers, after = dict(shown), max(shown.values())
    for i in range(n_passages):
        if i not in numbers:
            after += 1
            numbers[i] = after
    return numbers
