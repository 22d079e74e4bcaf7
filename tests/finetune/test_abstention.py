"""Calibrating the answer-or-abstain policy: the logistic fit, the threshold rule, the draft guard, the
leave-one-document-out check, on hand-made signals."""

from __future__ import annotations

import numpy as np
import pytest

from chatqa.decide import Signals
from finetune.abstention import (
    CalibrationConfig,
    answering_threshold,
    fit_logistic,
    fit_policy,
    leave_one_document_out,
    rates,
)


def test_the_logistic_fit_separates_a_separable_signal():
    x = np.array([[-2.0], [-1.5], [-1.0], [1.0], [1.5], [2.0]])
    y = np.array([0, 0, 0, 1, 1, 1], dtype=float)
    w, b = fit_logistic(x, y, l2=0.1)
    assert w[0] > 1.0 and abs(b) < 1e-6
    with pytest.raises(ValueError, match="Got 6 rows of features and 2 labels"):
        fit_logistic(x, y[:2])


def test_the_threshold_keeps_the_answerable_abstention_within_its_budget():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, -1.0, -2.0])
    answerable = np.array([1] * 10 + [0, 0])
    assert answering_threshold(scores, answerable, 0.0) == 0.1  # answers every answerable one
    assert answering_threshold(scores, answerable, 0.2) == 0.3  # may abstain on two of ten


def _rows(seed: int = 0, gap: float = 1.0) -> list[dict]:
    """Answerable questions have higher coverage and reader margins; ``gap`` scales how much higher."""
    rng = np.random.default_rng(seed)
    rows = []
    for doc in ("a.pdf", "b.html", "c.md"):
        for i in range(20):
            answerable = i < 14
            rows.append({"id": f"{doc}-{i}", "document": doc, "answerable": answerable, "signals": {
                "reader": float(rng.normal(2.0 * gap if answerable else -1.0 * gap, 1.5)),
                "coverage": float(np.clip(rng.normal(0.7 + 0.2 * gap if answerable else 0.7 - 0.2 * gap, 0.12), 0, 1)),
                "dense": float(rng.normal(0.5 + 0.1 * gap if answerable else 0.5 - 0.05 * gap, 0.08)),
            }})
    return rows


def test_a_fitted_policy_abstains_on_unanswerable_questions_within_the_budget():
    rows = _rows()
    cfg = CalibrationConfig(max_answerable_abstention=0.1)
    policy = fit_policy(rows, cfg)
    assert policy.weights["coverage"] > 0 and policy.weights["reader"] > 0
    measured = rates(policy, rows)
    assert measured["abstain_answerable"] <= 0.1 and measured["abstain_unanswerable"] >= 0.75
    unseen = leave_one_document_out(rows, cfg)  # each document decided by a policy fitted on the others
    assert unseen["questions"] == 60 and unseen["abstain_unanswerable"] >= 0.6
    assert not policy.answers(Signals(reader=-3.0, coverage=0.3, dense=0.3))


def test_the_draft_guard_retracts_at_most_its_share_of_answerable_drafts():
    rows = _rows(gap=0.2)  # hard to tell apart before the draft
    rng = np.random.default_rng(1)
    drafts = [{**r, "signals": {**r["signals"], "support": float(rng.normal(0.9 if r["answerable"] else 0.6, 0.1)),
                                "mean_logprob": float(rng.normal(-0.3 if r["answerable"] else -0.8, 0.2))}}
              for r in rows]
    cfg = CalibrationConfig(max_answerable_abstention=0.1, max_retracted=0.05)
    policy = fit_policy(rows, cfg, drafts)
    assert policy.guard_weights["support"] > 0 and policy.guard_weights["mean_logprob"] > 0
    answerable = [d for d in drafts if d["answerable"]]
    retracted = sum(policy.retracts(Signals(**d["signals"])) for d in answerable)
    assert retracted <= 0.05 * len(answerable)
    with_guard, without = rates(policy, drafts), rates(fit_policy(rows, cfg), rows)
    assert with_guard["abstain_unanswerable"] > without["abstain_unanswerable"]
    unseen = leave_one_document_out(rows, cfg, drafts)
    assert unseen["questions"] == 60 and unseen["abstain_unanswerable"] >= without["abstain_unanswerable"] - 0.1


def test_a_calibration_set_needs_both_kinds():
    rows = [r for r in _rows() if r["answerable"]]
    with pytest.raises(Exception, match="both answerable and unanswerable"):
        fit_policy(rows, CalibrationConfig())
