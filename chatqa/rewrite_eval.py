"""`chatqa eval rewrites`: how close the follow-up rewrites come to CANARD's human rewrites.

Three systems rewrite every question of a CANARD file: the model (:class:`chatqa.models.rewriter.Rewriter`), the rules
(:meth:`chatqa.dialog.DialogManager.condense_by_rules`) and copying the question unchanged; "app" is what the dialog
manager makes of the first two (:func:`chatqa.dialog.choose_rewrite`: the model, or the rules where the model kept a
pronoun they resolve). Each sees what it would
see in the app: the earlier turns' standalone questions (here CANARD's human rewrites of them) and, for the rules,
their answers where the file has them (dev does). First turns are never rewritten (the app does not rewrite them),
so every system returns them as asked. Scores are sacrebleu corpus BLEU on a 0–1 scale (the literature: copying
≈ 0.33, humans ≈ 0.59), over all turns and over follow-ups only, and the model's latency per follow-up, one question
per call as in the app.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from chatqa.canard import RewriteExample, read_canard
from chatqa.dialog import DialogManager, Exchange, choose_rewrite


def load_rewriter(data_dir: Path | None = None, model_folder: Path | None = None):
    """The shipped rewriter (converted into ``<data_dir>/models`` once), or the CTranslate2 ``model_folder``; loaded
    now, so that a missing model is an error here rather than a silent fallback to the rules."""
    from chatqa.models.rewriter import Rewriter
    from knowledge.base import default_data_dir

    rewriter = Rewriter((data_dir or default_data_dir()) / "models", model_folder=model_folder)
    rewriter.warm_up()
    return rewriter


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (default 13a tokenisation, mixed case) on a 0–1 scale."""
    if len(hypotheses) != len(references):
        raise ValueError(f"Got {len(hypotheses)} hypotheses and {len(references)} references.")
    if not hypotheses:
        return 0.0
    import sacrebleu

    return round(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score / 100, 4)


def rules_rewrite(example: RewriteExample, dialog: DialogManager | None = None) -> str:
    dialog = dialog if dialog is not None else DialogManager()
    answers = list(example.answers) + [""] * (len(example.history) - len(example.answers))
    return dialog.condense_by_rules(example.question, [Exchange(q, a) for q, a in zip(example.history, answers, strict=True)])


def evaluate_rewrites(
    path: str | Path,
    *,
    rewriter=None,
    limit: int | None = None,
    batch_size: int = 16,
    latency_samples: int = 50,
) -> dict:
    """BLEU of model (when ``rewriter`` is given), rules and copy against the human rewrites; model latency."""
    t0 = time.perf_counter()
    examples = read_canard(path)
    if limit is not None:
        examples = examples[:limit]
    references = [ex.rewrite for ex in examples]
    followups = [i for i, ex in enumerate(examples) if ex.history]
    systems = {"copy": [" ".join(ex.question.split()) for ex in examples]}
    dialog = DialogManager()
    systems["rules"] = [rules_rewrite(ex, dialog) for ex in examples]
    latencies: list[float] = []
    if rewriter is not None:
        model = list(systems["copy"])
        for start in range(0, len(followups), batch_size):
            chunk = followups[start : start + batch_size]
            for i, text in zip(chunk, rewriter.rewrite_batch(
                    [(examples[i].question, examples[i].history) for i in chunk]), strict=True):
                model[i] = text
        systems["model"] = model
        # what the app uses: the model's rewrite, or the rules' where the model kept a pronoun they resolve
        systems["app"] = [choose_rewrite(ex.question, model[i], lambda i=i: systems["rules"][i]) if ex.history
                          else model[i] for i, ex in enumerate(examples)]
        for i in followups[:latency_samples]:
            t = time.perf_counter()
            rewriter.rewrite(examples[i].question, examples[i].history)
            latencies.append(time.perf_counter() - t)
    report: dict = {"file": str(path), "examples": len(examples), "followups": len(followups)}
    for name in ("app", "model", "rules", "copy"):
        if name in systems:
            report[f"bleu_{name}"] = corpus_bleu(systems[name], references)
    for name in ("app", "model", "rules", "copy"):
        if name in systems:
            report[f"bleu_{name}_followups"] = corpus_bleu([systems[name][i] for i in followups],
                                                          [references[i] for i in followups])
    if latencies:
        ordered = sorted(latencies)
        report.update(latency_p50_s=round(statistics.median(ordered), 3),
                      latency_p95_s=round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
                      latency_samples=len(ordered))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report

