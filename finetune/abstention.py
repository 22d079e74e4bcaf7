"""Calibrating the answer-or-abstain policy (:mod:`chatqa.decide`) on a doc-QA calibration set.

    python -m finetune abstention --docs DIR --file finetune/data/docqa/docqa-calibration.json [--drafts]

Every single question of the set goes through the app's own path (search, reader) in extractive mode, which
records the decision's signals without drafting. A logistic regression of "answerable" on the signals (L2-
regularised, features standardised) gives the weights; the threshold is the highest score that still answers all
but ``max_answerable_abstention`` of the answerable questions, so the policy abstains as often as it can on the rest.
With ``--drafts`` the decoder also drafts every question, and the draft guard (a second logistic score that adds the
draft's support by its passages and its tokens' mean log-probability) gets a threshold that retracts at most
``max_retracted`` of the drafts to answerable questions (a rare replacement, by construction).

The calibration set must not be the set the policy is reported on: ``chatqa eval docs`` on the dev set measures it.
Leave-one-document-out scores on the calibration set itself are reported too (how stable the fit is).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from chatqa.decide import DRAFT_FEATURES, FEATURES, POLICY_PATH, AbstentionPolicy, Signals
from knowledge.errors import ChatQAError
from knowledge.files import atomic_write

logger = logging.getLogger(__name__)


@dataclass
class CalibrationConfig:
    docs: str = field(default="", metadata={"help": "folder with the calibration set's documents (build_docs.py)"})
    file: str = field(default="finetune/data/docqa/docqa-calibration.json", metadata={"help": "calibration set"})
    data_dir: str | None = field(default=None, metadata={"help": "knowledge base of the documents (default DOCS/kb)"})
    out: str = field(default=str(POLICY_PATH), metadata={"help": "where the policy is written"})
    max_answerable_abstention: float = field(
        default=0.08, metadata={"help": "share of answerable calibration questions the policy may abstain on"})
    drafts: bool = field(default=False, metadata={"help": "draft the answerable questions to set the draft guard"})
    max_retracted: float = field(default=0.03, metadata={"help": "share of answerable drafts the guard may retract"})
    l2: float = field(default=1.0, metadata={"help": "L2 penalty of the logistic regression"})
    k: int = field(default=5, metadata={"help": "passages read per question"})


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularised logistic regression (Newton's method; the bias is not penalised)."""
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"Got {len(x)} rows of features and {len(y)} labels.")
    design = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.diag([l2] * x.shape[1] + [0.0])
    theta = np.zeros(design.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ theta))
        gradient = design.T @ (p - y) + penalty @ theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def answering_threshold(scores: np.ndarray, answerable: np.ndarray, max_abstention: float) -> float:
    """The highest threshold (answer when score >= it) that abstains on at most ``max_abstention`` of the answerable
    questions."""
    ranked = np.sort(scores[answerable.astype(bool)])
    if not len(ranked):
        raise ChatQAError("the calibration set has no answerable question")
    allowed = math.floor(max_abstention * len(ranked))
    return float(ranked[allowed])


def fit_scores(rows: list[dict], features: tuple[str, ...], l2: float, budget: float) -> tuple[dict, float, float]:
    """Weights (in the signals' own units), bias and threshold of "answerable" on ``features`` of ``rows``
    (``{"signals": {...}, "answerable": bool}``): the threshold gives up at most ``budget`` of the answerable rows."""
    x = np.array([[float(r["signals"][f]) for f in features] for r in rows])
    y = np.array([1.0 if r["answerable"] else 0.0 for r in rows])
    if y.min() == y.max():
        raise ChatQAError("the calibration set needs both answerable and unanswerable questions")
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    w, b = fit_logistic((x - mean) / scale, y, l2)
    weights, bias = w / scale, b - float((w * mean / scale).sum())  # back to the signals' own units
    threshold = answering_threshold(x @ weights + bias, y, budget)
    return dict(zip(features, map(float, weights), strict=True)), float(bias), threshold


def fit_policy(rows: list[dict], cfg: CalibrationConfig, drafts: list[dict] | None = None) -> AbstentionPolicy:
    """The policy from calibration rows, with a draft guard when ``drafts`` (rows with the draft's signals) are given."""
    weights, bias, threshold = fit_scores(rows, FEATURES, cfg.l2, cfg.max_answerable_abstention)
    guard: dict = {}
    if drafts:
        usable = [r for r in drafts if all(r["signals"].get(f) is not None for f in DRAFT_FEATURES)]
        g_weights, g_bias, g_threshold = fit_scores(usable, DRAFT_FEATURES, cfg.l2, cfg.max_retracted)
        guard = {"guard_weights": g_weights, "guard_bias": g_bias, "guard_threshold": g_threshold}
    return AbstentionPolicy(weights=weights, bias=bias, threshold=threshold, **guard)


def _abstains(policy: AbstentionPolicy, row: dict) -> bool:
    """Whether the app ends with the abstention: decided before the draft, or the draft retracted."""
    signals = Signals(**{f: row["signals"].get(f) for f in DRAFT_FEATURES if f in row["signals"]})
    return not policy.answers(signals) or policy.retracts(signals)


def _shares(decided: list[tuple[dict, bool]]) -> dict:
    """Abstention on answerable and on unanswerable rows, from (row, abstained) pairs."""
    answerable = [a for r, a in decided if r["answerable"]]
    unanswerable = [a for r, a in decided if not r["answerable"]]
    return {"answerable": len(answerable), "unanswerable": len(unanswerable),
            "abstain_answerable": round(sum(answerable) / max(len(answerable), 1), 4),
            "abstain_unanswerable": round(sum(unanswerable) / max(len(unanswerable), 1), 4)}


def rates(policy: AbstentionPolicy, rows: list[dict]) -> dict:
    """Abstention on answerable and on unanswerable rows under ``policy``."""
    return _shares([(r, _abstains(policy, r)) for r in rows])


def leave_one_document_out(rows: list[dict], cfg: CalibrationConfig, drafts: list[dict] | None = None) -> dict:
    """Each document's questions decided by a policy fitted on the other documents' questions, pooled. With
    ``drafts``, rows are scored with their draft's signals (the guard included)."""
    scored = _with_drafts(rows, drafts)
    decided: list[tuple[dict, bool]] = []
    for doc in sorted({r["document"] for r in rows}):
        rest = [r for r in rows if r["document"] != doc]
        rest_drafts = [r for r in drafts or [] if r["document"] != doc] or None
        if len({r["answerable"] for r in rest}) < 2:
            continue
        policy = fit_policy(rest, cfg, rest_drafts)
        decided += [(r, _abstains(policy, r)) for r in scored if r["document"] == doc]
    return {**_shares(decided), "questions": len(decided)}


def _with_drafts(rows: list[dict], drafts: list[dict] | None) -> list[dict]:
    """``rows`` with their draft's signals merged in (by id), when there are drafts."""
    by_id = {d["id"]: d["signals"] for d in drafts or []}
    return [{**r, "signals": {**r["signals"], **by_id.get(r["id"], {})}} for r in rows]


def collect(cfg: CalibrationConfig, mode: str) -> list[dict]:
    """Run the calibration set's single questions through the app in ``mode``; one row per question."""
    from chatqa.engine import EngineSettings, open_engine
    from chatqa.evaluation import add_documents, evaluate_docs, load_docqa_set
    from knowledge.base import KnowledgeBase

    docs = Path(cfg.docs)
    data_dir = Path(cfg.data_dir) if cfg.data_dir else docs / "kb"
    data = load_docqa_set(cfg.file)
    with KnowledgeBase(data_dir) as kb:  # before the engine opens it, so the bundled guide is not added
        add_documents(kb, data, docs)
    engine = open_engine(data_dir, settings=EngineSettings(mode=mode, k=cfg.k), decoder=mode != "extractive")
    engine.policy = AbstentionPolicy(weights={f: 0.0 for f in FEATURES}, bias=1.0)  # always answer: see the drafts
    details: list[dict] = []
    try:
        engine.warm_up(decoder=mode != "extractive")
        evaluate_docs(cfg.file, docs, engine, modes=(mode,), k=cfg.k, details=details,
                      progress=lambda label: logger.debug("%s", label))
    finally:
        engine.kb.close()
        if engine.log is not None:
            engine.log.close()
    return [{"id": d["id"], "document": d["document"], "answerable": d["kind"] != "unanswerable",
             "signals": d["signals"]} for d in details if d["group"] == "questions"]


def calibrate(cfg: CalibrationConfig) -> dict:
    """Fit the policy, write it to ``cfg.out``, and return what was measured."""
    if not cfg.docs:
        raise ChatQAError("--docs DIR is needed: the calibration set's documents (build_docs.py)")
    t0 = time.perf_counter()
    rows = collect(cfg, "extractive")
    drafts = collect(cfg, "generative") if cfg.drafts else None
    fitted = fit_policy(rows, cfg, drafts)
    report = {"calibration": rates(fitted, _with_drafts(rows, drafts)),
              "leave_one_document_out": leave_one_document_out(rows, cfg, drafts)}
    if drafts:
        answered = [r for r in _with_drafts(rows, drafts) if fitted.answers(Signals(**{f: r["signals"][f] for f in FEATURES}))]
        retracted = [r for r in answered if _abstains(fitted, r)]
        report["draft_guard"] = {"drafts_shown_then_retracted": round(len(retracted) / max(len(answered), 1), 4),
                                 "of_them_unanswerable": sum(not r["answerable"] for r in retracted)}
    policy = AbstentionPolicy(
        weights={f: round(w, 6) for f, w in fitted.weights.items()}, bias=round(fitted.bias, 6),
        threshold=round(fitted.threshold, 6), guard_weights={f: round(w, 6) for f, w in fitted.guard_weights.items()},
        guard_bias=round(fitted.guard_bias, 6), guard_threshold=round(fitted.guard_threshold, 6),
        calibration={"file": str(cfg.file), "questions": len(rows), "date": datetime.now(timezone.utc).date().isoformat(),
                     "max_answerable_abstention": cfg.max_answerable_abstention, "max_retracted": cfg.max_retracted,
                     **report},
    )
    atomic_write(cfg.out, policy.to_json())
    report.update(policy=json.loads(policy.to_json()), seconds=round(time.perf_counter() - t0, 1))
    return report
