"""Official SQuAD metrics: exact match and token F1 after the official answer normalisation.

Mirrors the official evaluation scripts (``evaluate-v1.1.py`` and ``evaluate-v2.0.py``): the same
normalisation, the maximum over reference answers, the v2.0 rule for empty answers, and v2.0's search
for the best no-answer threshold (``find_best_thresh``).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Return ``s`` lower-cased, without ASCII punctuation and the articles a/an/the, white space collapsed."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def _exact(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def _f1(prediction: str, truth: str) -> float:
    pred_tokens, truth_tokens = _tokens(prediction), _tokens(truth)
    if not pred_tokens or not truth_tokens:
        return float(pred_tokens == truth_tokens)  # v2.0: 1 only when both are empty
    n_same = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if n_same == 0:
        return 0.0
    precision = n_same / len(pred_tokens)
    recall = n_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def _check_truths(ground_truths: Sequence[str]) -> None:
    if isinstance(ground_truths, str):
        raise TypeError("ground_truths must be a list of reference strings, not a single string.")
    if not ground_truths:
        raise ValueError('ground_truths is empty; for an unanswerable question pass [""].')


def exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
    """Return 1.0 if the normalised prediction equals any normalised reference, else 0.0."""
    _check_truths(ground_truths)
    return max(_exact(prediction, t) for t in ground_truths)


def f1(prediction: str, ground_truths: Sequence[str]) -> float:
    """Return the best token F1 (0.0–1.0) of the prediction against any reference.

    As in the official v2.0 script, when either normalised side has no tokens the F1 is 1.0 if both
    are empty and 0.0 otherwise (so ``[""]`` as references scores 1 only for an empty prediction).
    """
    _check_truths(ground_truths)
    return max(_f1(prediction, t) for t in ground_truths)


def _check_predictions(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> None:
    if not references:
        raise ValueError("references is empty: there are no questions to score.")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        shown = ", ".join(repr(q) for q in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(
            f"{len(missing)} of {len(references)} questions have no prediction ({shown}{more}); "
            'give every question a prediction ("" to abstain).'
        )


def squad_v1(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    """Score SQuAD v1.1-style predictions.

    ``references`` maps each question id to its reference answers (non-empty). Predictions for ids not in
    ``references`` are ignored; a missing prediction is a ``ValueError``.
    Returns ``{"exact_match": %, "f1": %, "questions": n}`` with percentages in 0–100.
    """
    _check_predictions(predictions, references)
    em = total_f1 = 0.0
    for qid, truths in references.items():
        if not truths:
            raise ValueError(
                f"question {qid!r} has no reference answer; SQuAD v1.1 questions are all answerable."
            )
        em += exact_match(predictions[qid], truths)
        total_f1 += f1(predictions[qid], truths)
    n = len(references)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * total_f1 / n, "questions": n}


def _find_best_thresh(
    predictions: Mapping[Hashable, str],
    scores: Mapping[Hashable, float],
    no_answer_scores: Mapping[Hashable, float],
    has_answer: Mapping[Hashable, bool],
) -> tuple[float, float]:
    """The official v2.0 ``find_best_thresh``: return (best score in %, threshold).

    Start from abstaining everywhere, then, in increasing no-answer score, let each question answer and keep
    the running total's best. A question abstains when its no-answer score is > the threshold. (Like the
    official script, ties in no-answer scores are walked one question at a time.)
    """
    current = float(sum(1 for qid in scores if not has_answer[qid]))
    best = current
    lowest = min(no_answer_scores[qid] for qid in scores)
    # The official script starts at 0.0, which means "abstain on all" only for positive scores (probabilities).
    best_thresh = 0.0 if lowest > 0.0 else lowest - 1.0
    for qid in sorted(scores, key=lambda q: no_answer_scores[q]):
        # An answerable question gains its score; an unanswerable one loses 1 if it was answered (raw string).
        current += scores[qid] if has_answer[qid] else (-1.0 if predictions[qid] else 0.0)
        if current > best:
            best = current
            best_thresh = no_answer_scores[qid]
    return 100.0 * best / len(scores), float(best_thresh)


def squad_v2(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    no_answer_scores: Mapping[Hashable, float] | None = None,
) -> dict[str, float]:
    """Score SQuAD 2.0-style predictions, where ``""`` means the system abstained.

    ``references`` maps question ids to reference answers, an empty list meaning unanswerable (references
    that normalise to nothing are dropped; with none left the reference is ``""``, as in the official script).
    Returns ``exact``, ``f1`` (percent), ``has_ans_exact``, ``has_ans_f1``, ``no_ans_exact``, ``no_ans_f1``
    (percent over answerable / unanswerable questions, 0.0 for an empty group), ``has_ans_total``,
    ``no_ans_total`` and ``total``. With ``no_answer_scores`` (higher = more likely unanswerable, e.g.
    null score minus best span score) it adds ``best_exact``, ``best_exact_thresh``, ``best_f1`` and
    ``best_f1_thresh``: the scores reached when a question abstains iff its no-answer score > the threshold.
    ``exact``/``f1`` score the predictions as given.
    """
    _check_predictions(predictions, references)
    if no_answer_scores is not None:
        missing = [qid for qid in references if qid not in no_answer_scores]
        if missing:
            raise ValueError(
                f"{len(missing)} questions have no no-answer score (first: {missing[0]!r}); "
                "no_answer_scores must cover every question."
            )
    exact_scores: dict[Hashable, float] = {}
    f1_scores: dict[Hashable, float] = {}
    has_answer: dict[Hashable, bool] = {}
    for qid, truths in references.items():
        if isinstance(truths, str):
            raise TypeError(f"references[{qid!r}] must be a list of strings, not a single string.")
        has_answer[qid] = bool(truths)
        golds = [t for t in truths if normalize_answer(t)] or [""]
        exact_scores[qid] = max(_exact(predictions[qid], t) for t in golds)
        f1_scores[qid] = max(_f1(predictions[qid], t) for t in golds)

    def mean(values: Mapping[Hashable, float], ids: list[Hashable]) -> float:
        return 100.0 * sum(values[q] for q in ids) / len(ids) if ids else 0.0

    everyone = list(references)
    has_ids = [q for q in everyone if has_answer[q]]
    no_ids = [q for q in everyone if not has_answer[q]]
    result: dict[str, float] = {
        "exact": mean(exact_scores, everyone),
        "f1": mean(f1_scores, everyone),
        "total": len(everyone),
        "has_ans_exact": mean(exact_scores, has_ids),
        "has_ans_f1": mean(f1_scores, has_ids),
        "has_ans_total": len(has_ids),
        "no_ans_exact": mean(exact_scores, no_ids),
        "no_ans_f1": mean(f1_scores, no_ids),
        "no_ans_total": len(no_ids),
    }
    if no_answer_scores is not None:
        result["best_exact"], result["best_exact_thresh"] = _find_best_thresh(
            predictions, exact_scores, no_answer_scores, has_answer
        )
        result["best_f1"], result["best_f1_thresh"] = _find_best_thresh(
            predictions, f1_scores, no_answer_scores, has_answer
        )
    return result
