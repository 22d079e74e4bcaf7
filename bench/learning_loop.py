"""Benchmark: how much the reader learns from use in a new domain (COVID-QA), and what it forgets (SQuAD).

    python bench/learning_loop.py [--steps 0,100,250,500,1000]   # bench/results/learning_loop.json and .png

The 98 papers of ../shared/data/qa/train/covidqa-200423.json (the shipped reader never saw them) go into a fresh
knowledge base, one document each. Its 1,358 questions are shuffled once (seed 0): the first 1,000 are asked by a
simulated user, the other 358 are never asked and only scored.

The simulated user asks each question in its own conversation through the app's code path (ChatEngine: dialog
manager, hybrid search, reader, conversation log) and rates the answer the way the UI records it: 👍 when the span
matches the gold answer (F1 ≥ 0.8), else 👎 with the gold answer selected in the passage that holds it (typed, when
no retrieved passage holds it). After 100, 250, 500 and 1,000 logged questions, `retrain_reader` (what
`python -m finetune reader --from-logs` runs) retrains from the whole log and promotes only a better model; then
the never-asked questions are scored with the active reader, each against its own paper (reading comprehension,
top span) and end to end (retrieval + reader, extractive mode). SQuAD v1.1 dev F1 is measured on the whole dev file
before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "qa"
COVID = SHARED / "train" / "covidqa-200423.json"
SQUAD_DEV = SHARED / "dev" / "squad-v1.1-dev-13art.json"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def load_questions():
    data = json.loads(COVID.read_text(encoding="utf-8"))
    questions = []
    for article in data["data"]:
        for p_index, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                questions.append({"id": qa["id"], "question": qa["question"], "paper": p_index,
                                  "context": paragraph["context"], "answers": [a["text"] for a in qa["answers"]],
                                  "starts": [a["answer_start"] for a in qa["answers"]]})
    random.Random(0).shuffle(questions)
    return data, questions


def build_kb(data, folder: Path) -> None:
    from knowledge.base import KnowledgeBase

    with KnowledgeBase(folder) as kb:
        for article in data["data"]:
            for i, paragraph in enumerate(article["paragraphs"]):
                kb.add_bytes(paragraph["context"].encode("utf-8"), f"covid-paper-{i:03d}.txt", save_index=False)
        kb.index.save()
        log(f"knowledge base: {len(kb.list_documents())} papers, {kb.store.count_chunks()} passages")


def give_feedback(engine, q: dict) -> str:
    """Ask like a person in the app and rate the answer like the UI would. Returns the kind of feedback."""
    from chatqa import metrics

    conversation = engine.log.new_conversation()
    result = engine.ask(q["question"], conversation, mode="extractive")
    span = result.span.text if result.span is not None else ""
    if result.turn_id is None:
        raise RuntimeError("the turn was not logged")
    if not result.abstained and metrics.f1(span, q["answers"]) >= 0.8:
        engine.log.feedback(result.turn_id, "up")
        return "up"
    gold = q["answers"][0]
    for rank, passage in enumerate(result.passages):
        at = passage.text.find(gold)
        if at >= 0:
            engine.log.feedback(result.turn_id, "down", passage_rank=rank, start=at, end=at + len(gold))
            return "down+span"
    engine.log.feedback(result.turn_id, "down", typed_answer=gold[:2000])
    return "down+typed"


def score(engine, never_asked: list[dict], rc_file: Path) -> dict:
    from chatqa import metrics
    from chatqa.evaluation import evaluate_reader

    engine.sync_reader()
    rc = evaluate_reader(rc_file, reader=engine.reader)
    e2e = []
    for q in never_asked:
        result = engine.ask(q["question"], mode="extractive")  # no conversation: nothing is logged
        e2e.append(metrics.f1(result.span.text if result.span is not None else "", q["answers"]))
    return {"rc_f1": rc["f1"], "rc_exact_match": rc["exact_match"], "e2e_f1": round(100 * sum(e2e) / len(e2e), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="0,100,250,500,1000", help="logged questions at which to retrain")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the knowledge base here for reuse")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]

    from chatqa.cli import _offline

    _offline()
    from chatqa.engine import EngineSettings, open_engine
    from chatqa.evaluation import evaluate_reader
    from finetune.from_logs import LogRetrainConfig, retrain_reader

    data, questions = load_questions()
    asked, never_asked = questions[: max(steps)], questions[max(steps) :]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="chatqa-loop-"))
    kb_cache = work / "kb"
    if not (kb_cache / "chatqa.db").exists():
        t = time.perf_counter()
        build_kb(data, kb_cache)
        log(f"built in {time.perf_counter() - t:.0f} s")
    data_dir = work / "run"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(kb_cache, data_dir)
    rc_file = work / "never-asked.json"
    rc_file.write_text(json.dumps({"version": "1.1", "data": [{"title": "covidqa never asked", "paragraphs": [
        {"context": q["context"], "qas": [{"id": q["id"], "question": q["question"],
                                           "answers": [{"text": a, "answer_start": at}
                                                       for a, at in zip(q["answers"], q["starts"], strict=True)]}]}
        for q in never_asked]}]}))

    engine = open_engine(data_dir, settings=EngineSettings(mode="extractive"), decoder=False)
    engine.warm_up(decoder=False)
    squad_before = evaluate_reader(SQUAD_DEV, reader=engine.reader)
    log(f"SQuAD v1.1 dev F1 before: {squad_before['f1']}")

    curve, feedback_counts, logged = [], {}, 0
    for step in steps:
        t = time.perf_counter()
        for q in asked[logged:step]:
            kind = give_feedback(engine, q)
            feedback_counts[kind] = feedback_counts.get(kind, 0) + 1
        logged = step
        point = {"logged": step, "feedback": dict(feedback_counts), "asking_seconds": round(time.perf_counter() - t, 1)}
        if step:
            report = retrain_reader(LogRetrainConfig(data_dir=str(data_dir)))
            point.update(version=report.version.id, promoted=report.promoted, reason=report.reason,
                         retrain_seconds=report.seconds, heldout=report.metrics["new"]["heldout"],
                         heldout_parent=report.metrics["parent"]["heldout"],
                         squad_sample=report.metrics["new"].get("squad"))
            log(f"retrain at {step}: {report.version.id} {'promoted' if report.promoted else 'refused'} "
                f"({report.reason}) in {report.seconds:.0f} s")
        point["active"] = engine.registry.active().id
        if curve and curve[-1]["active"] == point["active"]:
            # the same model as at the last point: its scores are the same (reading is deterministic)
            point.update({k: curve[-1][k] for k in ("rc_f1", "rc_exact_match", "e2e_f1")}, rescored=False)
        else:
            point.update(score(engine, never_asked, rc_file))
        log(f"{step} logged: {point}")
        curve.append(point)

    squad_after = evaluate_reader(SQUAD_DEV, reader=engine.reader)
    log(f"SQuAD v1.1 dev F1 after: {squad_after['f1']}")
    last = curve[-1]
    result = {
        "questions": {"asked": len(asked), "never_asked": len(never_asked)},
        "f1_before": curve[0]["rc_f1"],
        f"f1_after_{steps[-1]}": last["rc_f1"],
        f"f1_gain_at_{steps[-1]}": round(last["rc_f1"] - curve[0]["rc_f1"], 2),
        "e2e_f1_before": curve[0]["e2e_f1"],
        f"e2e_f1_after_{steps[-1]}": last["e2e_f1"],
        "squad_f1_before": squad_before["f1"],
        "squad_f1_after": squad_after["f1"],
        "squad_f1_drop": round(squad_before["f1"] - squad_after["f1"], 2),
        "retrain_seconds": last.get("retrain_seconds"),
        "machine": f"{os.cpu_count()} CPU cores",
        "curve": curve,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(curve, args.out / "learning_loop.png")
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))


def plot(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["logged"] for p in curve]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(x, [p["rc_f1"] for p in curve], "o-", label="reading comprehension (own paper)")
    ax.plot(x, [p["e2e_f1"] for p in curve], "s-", label="end to end (search + reader)")
    for p in curve:
        if p.get("promoted"):
            ax.annotate(p["version"], (p["logged"], p["rc_f1"]), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
    ax.set_xlabel("logged questions with feedback")
    ax.set_ylabel("F1 on 358 never-asked COVID-QA questions")
    ax.set_title("ChatQA learning from use")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
