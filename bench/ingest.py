"""Benchmark: ingestion throughput of `KnowledgeBase.add_files` (load, chunk, embed, SQLite + FTS5, FAISS).

    python bench/ingest.py                 # writes bench/results/ingest.json and ingest.png
    python bench/ingest.py --baseline      # also the old way, in the same run: one embedder call and one SQLite
                                           # transaction per file, FAISS written once at the end, fp32
    python bench/ingest.py --replot        # only redraw the PNG from the saved JSON

Two folders, each added to a fresh knowledge base with the real embedder (loaded and warmed before timing):
2,000 small generated text files (2-5 sentences of the SQuAD dev articles each, ~500 characters), and the 13 SQuAD
dev articles (`squad-v1.1-dev-13art.json`) as text files, each added `--repeats` times (the median run is reported,
every run kept). The machine's load average is recorded before and after each run, with the CPU time the run used
(all threads): this project's machines are shared, and on a busy machine wall-clock time stretches while CPU time
does much less. `embedder` records what embedded (ct2-int8, torch-bf16 or
torch-fp32; CHATQA_EMBEDDER_BACKEND=torch measures the torch path) and `batch_size` its batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatqa.evaluation import ArticleDocument  # noqa: E402
from chatqa.squad import load_squad  # noqa: E402
from knowledge.base import KnowledgeBase  # noqa: E402
from knowledge.embedder import Embedder  # noqa: E402
from knowledge.store import VectorIndex  # noqa: E402

QA = REPO.parent / "shared" / "data" / "qa"
ARTICLES = QA / "dev" / "squad-v1.1-dev-13art.json"
TARGETS = {"small_files_seconds": 30.0, "articles_chunks_per_second": 60.0}
BEFORE = {"small_files": 9.3, "articles": 26.3}  # issue #23 (2,000 files in 215 s) and bench/results/retrieval.json


def write_small_files(folder: Path, n: int, sentences: list[str], rng: random.Random) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"note-{i:04d}.txt").write_text(" ".join(rng.sample(sentences, rng.randint(2, 5))), encoding="utf-8")


def write_articles(folder: Path) -> None:
    folder.mkdir(parents=True)
    for article in load_squad(ARTICLES).articles:
        doc = ArticleDocument.from_article(article)
        (folder / doc.file_name).write_text(doc.text, encoding="utf-8")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(folder: Path, embedder: Embedder, *, per_file: bool = False) -> dict:
    """Add `folder` to a fresh knowledge base; per_file: one file per batch (one embedder call per file)."""
    size = sum(p.stat().st_size for p in folder.iterdir())
    with tempfile.TemporaryDirectory() as tmp, KnowledgeBase(tmp, embedder=embedder) as kb:
        save = VectorIndex.save
        if per_file:  # as before #23: a SQLite transaction per file, FAISS written once at the end
            kb.batch_chunks = kb.batch_files = 1
            VectorIndex.save = lambda index: None  # type: ignore[method-assign]
        load_before = load_average()
        t, cpu = time.perf_counter(), time.process_time()
        try:
            report = kb.add_files([folder])
        finally:
            VectorIndex.save = save  # type: ignore[method-assign]
        if per_file:
            kb.index.save()
        seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
        chunks = kb.store.count_chunks()
    files = len(report.added)
    return {
        "files": files, "chunks": chunks, "megabytes": round(size / 1e6, 3), "seconds": round(seconds, 2),
        "files_per_second": round(files / seconds, 1), "chunks_per_second": round(chunks / seconds, 1),
        # CPU time of all this process's threads: on a machine shared with other work, wall-clock time stretches
        # but CPU time much less; cpu_seconds / cores is what the run would take with the cores to itself
        "cpu_seconds": round(cpu_seconds, 2),
        "embedder": embedder.runs_on, "batch_size": embedder.batch_size, "batched": not per_file,
        "load_average_before": load_before, "load_average_after": load_average(),
    }


RUN_SUMMARY = ("seconds", "files_per_second", "chunks_per_second", "cpu_seconds", "load_average_before")


def median_run(runs: list[dict]) -> dict:
    """The run with the median time (the shared machine's neighbours make single runs vary by ±10%)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, metric, target, label, before in (
        (left, "small_files", "files_per_second", 2000 / TARGETS["small_files_seconds"], "files/s", BEFORE["small_files"]),
        (right, "articles", "chunks_per_second", TARGETS["articles_chunks_per_second"], "chunks/s", BEFORE["articles"]),
    ):
        runs = [(name, r) for name, r in (("batched", results[key]), ("per file, fp32", results.get(f"{key}_baseline")))
                if r is not None]
        bars = ax.bar([n for n, _ in runs], [r[metric] for _, r in runs], color=["C0", "C7"][: len(runs)])
        for bar, (_, r) in zip(bars, runs, strict=True):
            ax.annotate(f"{r[metric]}\n({r['seconds']} s, load {r['load_average_before'][0]})",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        every = [r[metric] for r in results.get(f"{key}_runs", [])]
        if every:
            ax.plot([bars[0].get_x() + bars[0].get_width() / 2] * len(every), every, "k.", label="each run")
        ax.axhline(target, color="C2", lw=0.8, ls=":", label=f"target {target:.1f} {label}")
        ax.axhline(before, color="C3", lw=0.8, ls="--", label=f"before #23, as reported: {before:g} {label}")
        ax.set_ylabel(label)
        ax.margins(y=0.25)
        ax.legend(fontsize=8, loc="lower right")
    left.set_title(f"{results['small_files']['files']:,} small text files", fontsize=10)
    right.set_title(f"{results['articles']['files']} SQuAD dev articles ({results['articles']['chunks']} chunks)", fontsize=10)
    fig.suptitle(f"Ingestion, {results['machine']['cpus']}-core CPU (shared; load average shown)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="small files to generate (default 2000)")
    parser.add_argument("--baseline", action="store_true", help="also measure one embedder call per file in fp32")
    parser.add_argument("--baseline-files", type=int, default=300,
                        help="small files in the baseline run (default 300: it is slow; files/s is what compares)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each folder; the median run is reported, all are kept (default 3)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the saved JSON")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((args.out / "ingest.json").read_text()), args.out / "ingest.png")
        return

    rng = random.Random(0)
    contexts = [p.context for a in load_squad(ARTICLES).articles for p in a.paragraphs]
    sentences = [s for c in contexts for s in re.split(r"(?<=[.!?])\s+", c) if len(s) > 20]
    embedder = Embedder()
    embedder.warm_up()
    embedder.embed(sentences[:64])  # first-call costs out of the timings
    results: dict = {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        small, articles = Path(tmp) / "small", Path(tmp) / "articles"
        write_small_files(small, args.files, sentences, rng)
        write_articles(articles)
        for key, folder in (("small_files", small), ("articles", articles)):
            runs = []
            for _ in range(args.repeats):
                runs.append(run(folder, embedder))
                print(json.dumps({key: runs[-1]}), flush=True)
            results[key] = median_run(runs)
            results[f"{key}_runs"] = [{k: r[k] for k in RUN_SUMMARY} for r in runs]
        if args.baseline:
            fp32 = Embedder(precision="fp32")
            fp32._model = embedder.model  # the same loaded model, without autocast
            results["articles_baseline"] = run(articles, fp32, per_file=True)
            print(json.dumps({"articles_baseline": results["articles_baseline"]}), flush=True)
            subset = Path(tmp) / "small-subset"
            write_small_files(subset, args.baseline_files, sentences, random.Random(0))  # the same first files
            results["small_files_baseline"] = run(subset, fp32, per_file=True)
            print(json.dumps({"small_files_baseline": results["small_files_baseline"]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "ingest.png")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
