"""Windows over (question, context) pairs for an extractive reader, and decoding of its logits into spans.

One code path serves both run time and training: the reader calls :func:`prepare_features` on a question and
its retrieved passages, the training code calls it with character answers to get start/end labels. Long
contexts are split into overlapping windows (``stride`` tokens shared by consecutive windows), and every
context token keeps its character offsets into its own context, so decoded spans are character ranges.

:func:`decode_spans` and :func:`best_answer` are pure numpy post-processing (as in transformers'
``utils_qa.py``): they need only the logits and the :class:`Features` the logits were computed on.
Everything here except :func:`collate` is torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

CLS_INDEX = 0  # label of "no answer in this window": the [CLS] token at position 0


@dataclass
class Features:
    """Tokenised windows. Row ``w`` of every list describes window ``w``.

    ``offsets[w][t]`` is ``(char_start, char_end)`` into the context of pair ``example_index[w]`` when token
    ``t`` is a context token, and ``None`` for question, special and padding tokens.
    ``start_positions``/``end_positions`` (training only) are token indices of the answer in the window, or
    0 (the [CLS] token) when the answer is not fully inside the window or the pair has no answer.
    """

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]]
    example_index: list[int]
    offsets: list[list[tuple[int, int] | None]]
    start_positions: list[int] | None = None
    end_positions: list[int] | None = None

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        columns: dict[str, Sequence[Any] | None] = {
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
            "example_index": self.example_index,
            "offsets": self.offsets,
            "start_positions": self.start_positions,
            "end_positions": self.end_positions,
        }
        for name, column in columns.items():
            if column is not None and len(column) != n:
                raise ValueError(
                    f"Features.{name} has {len(column)} rows but input_ids has {n}; all must be equal."
                )
        for w in range(n):
            width = len(self.input_ids[w])
            if (
                not len(self.attention_mask[w])
                == len(self.token_type_ids[w])
                == len(self.offsets[w])
                == width
            ):
                raise ValueError(
                    f"Features window {w}: attention_mask, token_type_ids and offsets must have {width} entries like input_ids."
                )
        if (self.start_positions is None) != (self.end_positions is None):
            raise ValueError("Features.start_positions and end_positions must be both given or both None.")

    def __len__(self) -> int:
        """Return the number of windows."""
        return len(self.input_ids)


@dataclass(frozen=True)
class Span:
    """A candidate answer: characters ``[start, end)`` of the context of pair ``example_index``."""

    example_index: int
    start: int  # char offset into the context
    end: int  # exclusive
    score: float  # start_logit + end_logit
    window: int  # which feature/window it came from


def _is_text_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _validate(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    answers: Sequence[tuple[int, int] | None] | None,
    max_length: int,
    stride: int,
    max_question_tokens: int,
) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("prepare_features needs a fast (Rust) tokenizer: character offsets come from it.")
    if not _is_text_sequence(questions) or not _is_text_sequence(contexts):
        raise TypeError(
            "questions and contexts must be sequences of strings (a bare string is not accepted)."
        )
    if len(questions) != len(contexts):
        raise ValueError(
            f"questions and contexts must have the same length; got {len(questions)} questions and {len(contexts)} contexts."
        )
    for name, texts in (("questions", questions), ("contexts", contexts)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}.")
    for name, value in (
        ("max_length", max_length),
        ("stride", stride),
        ("max_question_tokens", max_question_tokens),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}.")
    if max_question_tokens < 1:
        raise ValueError(f"max_question_tokens must be >= 1, got {max_question_tokens}.")
    if stride < 0:
        raise ValueError(f"stride must be >= 0, got {stride}.")
    n_special = tokenizer.num_special_tokens_to_add(pair=True)
    if max_length - max_question_tokens - n_special < 1:
        raise ValueError(
            f"max_length ({max_length}) must leave room for context tokens: it must be > max_question_tokens "
            f"({max_question_tokens}) + {n_special} special tokens."
        )
    if stride >= max_length - max_question_tokens - n_special:
        raise ValueError(
            f"stride must be < max_length - max_question_tokens - {n_special} "
            f"= {max_length} - {max_question_tokens} - {n_special} = {max_length - max_question_tokens - n_special}; "
            f"got stride={stride}."
        )
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max < 1_000_000 and max_length > model_max:
        raise ValueError(
            f"max_length ({max_length}) must be <= the tokenizer's model_max_length ({model_max})."
        )
    if answers is not None:
        if not isinstance(answers, Sequence):
            raise TypeError("answers must be a sequence with one (char_start, char_end) or None per pair.")
        if len(answers) != len(contexts):
            raise ValueError(
                f"answers must have one entry per pair; got {len(answers)} answers for {len(contexts)} contexts."
            )
        for i, answer in enumerate(answers):
            if answer is None:
                continue
            if len(answer) != 2:
                raise ValueError(f"answers[{i}] must be (char_start, char_end) or None, got {answer!r}.")
            start, end = answer
            if not 0 <= start < end <= len(contexts[i]):
                raise ValueError(
                    f"answers[{i}] = {answer!r} must satisfy 0 <= char_start < char_end <= len(context) "
                    f"= {len(contexts[i])}."
                )


def _truncate_questions(tokenizer: Any, questions: Sequence[str], max_question_tokens: int) -> list[str]:
    """Return the questions with leading whitespace removed, each cut to at most ``max_question_tokens`` tokens."""
    out = [q.lstrip() for q in questions]
    todo = list(range(len(out)))
    while todo:
        enc = tokenizer([out[i] for i in todo], add_special_tokens=False, return_offsets_mapping=True)
        still_long = []
        for i, ids, offs in zip(todo, enc["input_ids"], enc["offset_mapping"], strict=True):
            if len(ids) <= max_question_tokens:
                continue
            cut = offs[max_question_tokens - 1][1]
            # Cutting inside a word may re-tokenise into more pieces, so check again; always make progress.
            out[i] = out[i][: min(cut, len(out[i]) - 1)].rstrip()
            still_long.append(i)
        todo = still_long
    return out


def _label_window(offsets: list[tuple[int, int] | None], char_start: int, char_end: int) -> tuple[int, int]:
    """Return the (start, end) token indices of characters ``[char_start, char_end)`` in one window, or (0, 0)."""
    context_tokens = [t for t, o in enumerate(offsets) if o is not None]
    if not context_tokens:
        return CLS_INDEX, CLS_INDEX
    first, last = offsets[context_tokens[0]], offsets[context_tokens[-1]]
    assert first is not None and last is not None
    if first[0] > char_start or last[1] < char_end:
        return CLS_INDEX, CLS_INDEX  # the answer is not fully inside this window
    # First token that contains (or, if char_start is white space, follows) char_start; last one before char_end.
    start = next(t for t in context_tokens if offsets[t][1] > char_start)  # type: ignore[index]
    end = next(t for t in reversed(context_tokens) if offsets[t][0] < char_end)  # type: ignore[index]
    if end < start:  # the answer holds no token (white space only)
        return CLS_INDEX, CLS_INDEX
    return start, end


def prepare_features(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    answers: Sequence[tuple[int, int] | None] | None = None,
    max_length: int = 384,
    stride: int = 128,
    max_question_tokens: int = 64,
    padding: bool = False,
) -> Features:
    """Tokenise (question, context) pairs into overlapping windows of at most ``max_length`` tokens.

    ``answers`` (training) gives ``(char_start, char_end)`` per pair, or ``None`` for an unanswerable pair;
    omit it at inference. Questions lose leading white space and are cut to ``max_question_tokens`` tokens;
    contexts are split into windows sharing ``stride`` tokens. ``padding=True`` pads every window to
    ``max_length``; ``padding=False`` leaves windows of their own length (pad per batch with :func:`collate`).

    Returns a :class:`Features` with one row per window; with ``answers``, ``start_positions`` and
    ``end_positions`` hold the answer's token indices, or 0 ([CLS]) when the answer is not fully inside the
    window or the pair has none. Raises ``ValueError``/``TypeError`` naming the broken rule on bad arguments.
    """
    _validate(tokenizer, questions, contexts, answers, max_length, stride, max_question_tokens)
    if not questions:  # the tokenizer rejects an empty batch
        labels: list[int] | None = None if answers is None else []
        return Features([], [], [], [], [], labels, None if labels is None else [])
    short_questions = _truncate_questions(tokenizer, questions, max_question_tokens)
    enc = tokenizer(
        short_questions,
        list(contexts),
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        return_attention_mask=True,
        padding="max_length" if padding else False,
    )
    n_windows = len(enc["input_ids"])
    example_index = [int(i) for i in enc["overflow_to_sample_mapping"]]
    offsets: list[list[tuple[int, int] | None]] = []
    for w in range(n_windows):
        sequence_ids = enc.sequence_ids(w)
        offsets.append(
            [
                (int(o[0]), int(o[1])) if seq == 1 else None
                for o, seq in zip(enc["offset_mapping"][w], sequence_ids, strict=True)
            ]
        )
    start_positions: list[int] | None = None
    end_positions: list[int] | None = None
    if answers is not None:
        start_positions, end_positions = [], []
        for w in range(n_windows):
            answer = answers[example_index[w]]
            start, end = (CLS_INDEX, CLS_INDEX) if answer is None else _label_window(offsets[w], *answer)
            start_positions.append(start)
            end_positions.append(end)
    return Features(
        input_ids=[list(x) for x in enc["input_ids"]],
        attention_mask=[list(x) for x in enc["attention_mask"]],
        token_type_ids=[list(x) for x in enc["token_type_ids"]],
        example_index=example_index,
        offsets=offsets,
        start_positions=start_positions,
        end_positions=end_positions,
    )


def collate(features: Features, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Return the windows ``indices`` as a batch of ``torch.long`` tensors padded to the longest of them.

    Keys: ``input_ids`` (padded with ``pad_id``), ``attention_mask`` and ``token_type_ids`` (padded with 0),
    plus ``start_positions`` and ``end_positions`` (shape ``(batch,)``) when the features carry labels.
    """
    import torch

    rows = list(indices)
    if not rows:
        raise ValueError("collate needs at least one window index.")
    for i in rows:
        if not 0 <= i < len(features):
            raise IndexError(f"window index {i} out of range for {len(features)} features.")
    width = max(len(features.input_ids[i]) for i in rows)

    def pad(column: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([column[i] + [value] * (width - len(column[i])) for i in rows], dtype=torch.long)

    batch = {
        "input_ids": pad(features.input_ids, pad_id),
        "attention_mask": pad(features.attention_mask, 0),
        "token_type_ids": pad(features.token_type_ids, 0),
    }
    if features.start_positions is not None and features.end_positions is not None:
        batch["start_positions"] = torch.tensor([features.start_positions[i] for i in rows], dtype=torch.long)
        batch["end_positions"] = torch.tensor([features.end_positions[i] for i in rows], dtype=torch.long)
    return batch


def decode_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    features: Features,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> tuple[dict[int, list[Span]], dict[int, float]]:
    """Turn per-window start/end logits into character spans per example.

    ``start_logits``/``end_logits`` have shape ``(len(features), seq_len)`` with ``seq_len`` at least the
    longest window (positions past a window's length are ignored). In each window the ``n_best`` highest
    start and end logits *among context tokens* are paired; a pair is kept if ``end >= start`` and it spans at
    most ``max_answer_length`` tokens.

    Returns ``(spans, null_scores)``: ``spans[example_index]`` is that example's spans sorted by score
    (start + end logit) descending, de-duplicated on ``(start, end)`` keeping the best, at most ``n_best``
    (an empty list if none is valid); ``null_scores[example_index]`` is the minimum over its windows of
    ``start_logits[w, 0] + end_logits[w, 0]`` (the [CLS] "no answer" score).
    """
    if not isinstance(n_best, int) or n_best < 1:
        raise ValueError(f"n_best must be an int >= 1, got {n_best!r}.")
    if not isinstance(max_answer_length, int) or max_answer_length < 1:
        raise ValueError(f"max_answer_length must be an int >= 1, got {max_answer_length!r}.")
    starts = np.asarray(start_logits, dtype=np.float64)
    ends = np.asarray(end_logits, dtype=np.float64)
    if starts.ndim != 2 or ends.ndim != 2:
        raise ValueError(
            f"start and end logits must be 2-D (n_windows, seq_len); got shapes {starts.shape} and {ends.shape}."
        )
    if starts.shape != ends.shape:
        raise ValueError(
            f"start and end logits must have the same shape; got {starts.shape} and {ends.shape}."
        )
    if starts.shape[0] != len(features):
        raise ValueError(f"Got {starts.shape[0]} logit rows and {len(features)} features.")
    if np.isnan(starts).any() or np.isnan(ends).any():
        raise ValueError("start/end logits contain NaN.")

    candidates: dict[int, list[Span]] = {}
    null_scores: dict[int, float] = {}
    for w in range(len(features)):
        example = features.example_index[w]
        offsets = features.offsets[w]
        length = len(features.input_ids[w])
        if length > starts.shape[1]:
            raise ValueError(f"Logits have {starts.shape[1]} columns but window {w} has {length} tokens.")
        null = float(starts[w, CLS_INDEX] + ends[w, CLS_INDEX])
        null_scores[example] = min(null, null_scores.get(example, np.inf))
        found = candidates.setdefault(example, [])

        context = np.array([t for t, o in enumerate(offsets[:length]) if o is not None], dtype=np.intp)
        if context.size == 0:
            continue
        k = min(n_best, context.size)
        top_starts = context[np.argsort(-starts[w, context], kind="stable")[:k]]
        top_ends = context[np.argsort(-ends[w, context], kind="stable")[:k]]
        scores = starts[w, top_starts][:, None] + ends[w, top_ends][None, :]
        n_tokens = top_ends[None, :] - top_starts[:, None] + 1
        keep = (n_tokens >= 1) & (n_tokens <= max_answer_length) & np.isfinite(scores)
        for i, j in zip(*np.nonzero(keep), strict=True):
            first, last = offsets[top_starts[i]], offsets[top_ends[j]]
            assert first is not None and last is not None
            found.append(Span(example, first[0], last[1], float(scores[i, j]), w))

    spans: dict[int, list[Span]] = {}
    for example, found in candidates.items():
        found.sort(key=lambda s: (-s.score, s.window, s.start, s.end))
        seen: set[tuple[int, int]] = set()
        best: list[Span] = []
        for span in found:
            if (span.start, span.end) in seen:
                continue
            seen.add((span.start, span.end))
            best.append(span)
            if len(best) == n_best:
                break
        spans[example] = best
    return spans, null_scores


def best_answer(spans: Sequence[Span], null_score: float, threshold: float) -> Span | None:
    """Return the highest-scoring span, or ``None`` (abstain) when there is none or
    ``null_score - best.score > threshold``."""
    if not spans:
        return None
    best = max(spans, key=lambda s: s.score)
    if null_score - best.score > threshold:
        return None
    return best
