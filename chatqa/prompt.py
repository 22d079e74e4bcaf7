"""The generative decoder's prompt: the numbered passages (where each comes from, the reader's span marked), the
last exchanges, the standalone question, and the rules of a good answer.

One prompt format serves answering and training: ``chatqa export --format chat`` writes the decoder's training data
with :func:`prompt_messages` too. Passages are cut to a character budget around what matters (the reader's span, or
the sentences sharing the most words with the question), because on two CPU cores every prompt token costs time
before the first answer token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chatqa.grounding import content_words, sentence_bounds

SYSTEM_PROMPT = (
    "You answer questions about the user's documents. Answer in one to three sentences, in the language of the "
    "question, using only the passages. Quote names, options, commands and code exactly. Cite the passages you use "
    "like [1]."
)
SPAN_NOTE = " The words a reading model picked as the likely answer are marked **like this**."
SPAN_MARK = "**"


@dataclass(frozen=True)
class PromptPassage:
    """A passage as the decoder sees it: ``text`` is ``passage[start:end]`` of the retrieved passage ``index``."""

    number: int  # cited as [number]
    index: int  # index into the turn's retrieved passages
    where: str  # "guide.pdf, page 3"
    text: str
    start: int
    end: int
    span: tuple[int, int] | None = None  # the reader's span, as offsets into ``text``


def window(text: str, budget: int, focus: tuple[int, int] | None, question: str = "") -> tuple[int, int]:
    """Offsets of at most about ``budget`` characters of ``text``, cut at sentence ends: centred on ``focus``
    (character offsets) when given, else on the sentence sharing most content words with ``question``."""
    if len(text) <= budget:
        return 0, len(text)
    sentences = sentence_bounds(text)
    if focus is not None:
        first = next(i for i, (s, e) in enumerate(sentences) if e > focus[0] or i == len(sentences) - 1)
        last = next(i for i, (s, e) in enumerate(sentences) if e >= focus[1] or i == len(sentences) - 1)
    else:
        terms = content_words(question)
        scores = [len(terms & content_words(text[s:e])) for s, e in sentences]
        first = last = max(range(len(sentences)), key=lambda i: (scores[i], -i))
    start, end = sentences[first][0], sentences[last][1]
    if end - start > budget:  # one long sentence (or a span in one): cut characters around the focus
        centre = (focus[0] + focus[1]) // 2 if focus is not None else start + budget // 2
        start = max(start, min(centre - budget // 2, end - budget))
        return start, min(end, start + budget)
    while True:  # grow by whole sentences, after first (the answer often follows its cue), while they fit
        grown = False
        for i in (last + 1, first - 1):
            if 0 <= i < len(sentences) and max(end, sentences[i][1]) - min(start, sentences[i][0]) <= budget:
                start, end = min(start, sentences[i][0]), max(end, sentences[i][1])
                first, last = min(first, i), max(last, i)
                grown = True
        if not grown:
            return start, end


def prompt_passages(
    passages: Sequence, question: str, span: tuple[int, int, int] | None, budgets: Sequence[int]
) -> list[PromptPassage]:
    """The passages shown to the decoder, numbered from 1: the first ``len(budgets)`` retrieved ``passages`` (objects
    with ``text``, ``doc_name`` and ``page``), each cut to its budget. ``span`` is the reader's answer as
    ``(passage index, start, end)``; its passage is always shown (first, when it is not among the others)."""
    order = list(range(min(len(passages), len(budgets))))
    if span is not None and span[0] not in order and span[0] < len(passages):
        order = [span[0], *order[:-1]] if order else [span[0]]
    shown = []
    for number, (index, budget) in enumerate(zip(order, budgets, strict=False), start=1):
        passage = passages[index]
        focus = (span[1], span[2]) if span is not None and span[0] == index else None
        start, end = window(passage.text, budget, focus, question)
        marked = None
        if focus is not None and start <= focus[0] and focus[1] <= end:
            marked = (focus[0] - start, focus[1] - start)
        where = passage.doc_name + (f", page {passage.page}" if getattr(passage, "page", None) else "")
        shown.append(PromptPassage(number, index, where, passage.text[start:end].strip(), start, end, marked))
    return shown


def _marked(p: PromptPassage) -> str:
    text = p.text
    if p.span is None:
        return text
    lead = len(text) - len(text.lstrip())  # text was stripped: offsets count from the unstripped window
    s, e = p.span[0] - lead, p.span[1] - lead
    if not 0 <= s < e <= len(text):
        return text
    return f"{text[:s]}{SPAN_MARK}{text[s:e]}{SPAN_MARK}{text[e:]}"


def prompt_messages(
    question: str, passages: Sequence[PromptPassage], history: Sequence[tuple[str, str]] = (), history_turns: int = 2,
    mark_span: bool = False,
) -> list[dict[str, str]]:
    """The chat messages (system, user) of one answer. Each passage is one line, its white space collapsed: with
    the documents' own line breaks and headings, the 0.5B model tends to continue the passage list instead of
    answering. ``mark_span`` marks the reader's span (measured: see the README's decoder section)."""
    lines = [f"[{p.number}] ({p.where}) {_squash(_marked(p) if mark_span else p.text)}" for p in passages]
    parts = ["Passages:\n" + "\n".join(lines)]
    turns = list(history)[-history_turns:] if history_turns else []
    if turns:
        parts.append("Earlier in this conversation:\n" + "\n".join(
            f"Q: {_squash(q, 200)}\nA: {_squash(a, 300)}" for q, a in turns
        ))
    parts.append(f"Question: {question.strip()}")
    system = SYSTEM_PROMPT + (SPAN_NOTE if mark_span and any(p.span for p in passages) else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def _squash(text: str, limit: int | None = None) -> str:
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[: limit - 1].rstrip() + "…"


_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def citations(answer: str, passages: Sequence[PromptPassage]) -> list[int]:
    """The retrieved-passage indices that ``answer`` cites as [n] (or [1, 2]), in order of first citation; numbers
    that name no shown passage are ignored."""
    by_number = {p.number: p.index for p in passages}
    cited: list[int] = []
    for m in _CITATION.finditer(answer):
        for n in m.group(1).split(","):
            index = by_number.get(int(n))
            if index is not None and index not in cited:
                cited.append(index)
    return cited
