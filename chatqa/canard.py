"""CANARD question rewrites (``../shared/data/dialog/``) as examples: each turn with its history, filtered for unsupported rewrites.

``canard-train.jsonl`` has no history field: a turn's history is the earlier turns of its ``dialog``, as their human
rewrites (standalone questions, which is what the dialog manager keeps at run time). The Wikipedia title and the
answers that the annotators saw are not in this copy, so some rewrites add words that the model could not know
("what team did unitas play for" → "what team did Johnny Unitas play for?" at turn 0). Training on those teaches the
model to invent names; :func:`unsupported_words` finds them and :func:`filter_supported` drops such examples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from knowledge.errors import ChatQAError

_WORD = re.compile(r"[a-z0-9]+")
# words a rewrite may add without the history saying them (articles, prepositions, possessive 's, punctuation-like)
FREE_WORDS = frozenset(
    "a an the of in on at to for by with from and or s 's is are was were did does do be been as that this it its "
    "their his her they he she what which who when where why how".split()
)


@dataclass(frozen=True)
class RewriteExample:
    dialog: str
    turn: int
    question: str
    rewrite: str
    history: list[str] = field(default_factory=list)  # earlier turns' standalone questions, oldest first
    answers: list[str] = field(default_factory=list)  # their answers, where the file has them (dev), else empty


class CanardFormatError(ChatQAError):
    """A CANARD file is missing, unreadable or lacks a field."""


def read_canard(path: str | Path) -> list[RewriteExample]:
    """Every turn of a CANARD JSONL file, with the earlier rewrites of its dialog as history."""
    path = Path(path)
    if not path.is_file():
        raise CanardFormatError(f"{path}: no such file (CANARD JSONL: see ../shared/data/dialog/README.md)")
    records, answers = [], {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                records.append((str(row["dialog"]), int(row["turn"]), str(row["question"]), str(row["rewrite"])))
                if isinstance(row.get("history"), list):
                    answers[(records[-1][0], records[-1][1])] = [str(a) for a in row["history"][1::2]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise CanardFormatError(f"{path}:{number}: not a CANARD record ({e})") from None
    examples = with_history(records)
    if answers:
        examples = [replace(ex, answers=answers.get((ex.dialog, ex.turn), [])) for ex in examples]
    return examples


def with_history(records: Iterable[tuple[str, int, str, str]]) -> list[RewriteExample]:
    """(dialog, turn, question, rewrite) rows → examples whose history is the earlier turns' rewrites (by turn)."""
    by_dialog: dict[str, list[tuple[int, str, str]]] = {}
    order: list[str] = []
    for dialog, turn, question, rewrite in records:
        if dialog not in by_dialog:
            by_dialog[dialog] = []
            order.append(dialog)
        by_dialog[dialog].append((turn, question, rewrite))
    out = []
    for dialog in order:
        turns = sorted(by_dialog[dialog])
        for i, (turn, question, rewrite) in enumerate(turns):
            out.append(RewriteExample(dialog, turn, question, rewrite, [r for _, _, r in turns[:i]]))
    return out


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def unsupported_words(example: RewriteExample) -> list[str]:
    """Words of the rewrite found neither in the question, nor in the history, nor among :data:`FREE_WORDS`."""
    known = set(words(example.question)) | FREE_WORDS
    for turn in example.history:
        known.update(words(turn))
    return [w for w in words(example.rewrite) if w not in known]


def filter_supported(examples: list[RewriteExample]) -> tuple[list[RewriteExample], int]:
    """The examples whose rewrite adds no unsupported word, and how many were dropped."""
    kept = [ex for ex in examples if not unsupported_words(ex)]
    return kept, len(examples) - len(kept)
