"""The rewriter's prompt: shared by training (``finetune/rewriter.py``) and generation (``chatqa/models/rewriter.py``).

A plain completion prompt, no chat template (SmolLM2's template adds a system prompt of ~20 tokens to every call):

    Rewrite the question to stand alone.
    Earlier: What team did Johnny Unitas play for?
    Earlier: How many games did the Colts win?
    Question: who did they play in the playoffs
    Rewrite: who did the Colts play in the playoffs?

The history is the earlier turns' standalone questions (at run time the dialog manager's own rewrites; in training the
human rewrites of the earlier turns): the first one, which usually names the conversation's subject, and the latest
``max_history - 1``. Answers are not shown: CANARD's training copy has none, so a model trained on it has not learnt
to use them.
"""

from __future__ import annotations

from collections.abc import Sequence

INSTRUCTION = "Rewrite the question to stand alone."
MAX_HISTORY = 3


def select_history(history: Sequence[str], max_history: int = MAX_HISTORY) -> list[str]:
    """The first earlier question and the latest ``max_history - 1`` (all of them when there are few)."""
    if max_history < 1:
        raise ValueError(f"max_history must be at least 1, got {max_history}")
    turns = [" ".join(h.split()) for h in history if h and h.strip()]
    if len(turns) <= max_history:
        return turns
    return [turns[0]] + (turns[-(max_history - 1) :] if max_history > 1 else [])


def build_prompt(question: str, history: Sequence[str], max_history: int = MAX_HISTORY) -> str:
    """The text the model continues with the rewrite (it ends with "Rewrite:")."""
    lines = [INSTRUCTION]
    lines += [f"Earlier: {turn}" for turn in select_history(history, max_history)]
    lines += [f"Question: {' '.join(question.split())}", "Rewrite:"]
    return "\n".join(lines)


def clean_rewrite(generated: str, question: str, max_words: int = 60) -> str:
    """The first line of the model's continuation, or ``question`` when it produced nothing usable."""
    text = generated.strip().split("\n", 1)[0].strip()
    if not text or len(text.split()) > max_words:
        return " ".join(question.split())
    return text
