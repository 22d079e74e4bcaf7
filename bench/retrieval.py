"""Benchmark: ingestion throughput and hybrid-search latency.

    python bench/retrieval.py                       # writes bench/results/retrieval.json and retrieval.png

Ingestion adds the SQuAD dev articles as text documents through `KnowledgeBase.add_files` (load, chunk, embed,
SQLite + FTS5, FAISS) with the real embedder. Search latency is measured over knowledge bases of 10k and 100k
chunks: their texts are random mixes of SQuAD train sentences (realistic vocabulary for BM25), their stored
vectors random unit vectors (computing 100k real embeddings takes ~30 min here and does not change search cost).
Each query is a real SQuAD dev question, embedded by the real model as part of the timed search.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatqa.evaluation import ArticleDocument  # noqa: E402
from chatqa.squad import load_squad  # noqa: E402
from knowledge.base import KnowledgeBase  # noqa: E402
from knowledge.embedder import Embedder  # noqa: E402
from knowledge.store import NewChunk  # noqa: E402

QA = REPO.parent / "shared" / "data" / "qa"


def bench_ingestion(embedder: Embedder, articles_file: Path) -> dict:
    squad = load_squad(articles_file)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        for article in squad.articles:
            doc = ArticleDocument.from_article(article)
            (folder / doc.file_name).write_text(doc.text, encoding="utf-8")
        size = sum(p.stat().st_size for p in folder.iterdir())
        with KnowledgeBase(Path(tmp) / "data", embedder=embedder) as kb:
            t = time.perf_counter()
            report = kb.add_files([folder])
            seconds = time.perf_counter() - t
            chunks = kb.store.count_chunks()
    return {
        "documents": len(report.added),
        "megabytes": round(size / 1e6, 3),
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "chunks_per_second": round(chunks / seconds, 1),
        "megabytes_per_second": round(size / 1e6 / seconds, 3),
    }


def synthetic_chunks(n: int, sentences: list[str], dim: int, rng: random.Random) -> list[NewChunk]:
    vectors = np.random.default_rng(rng.randrange(2**32)).standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks, pos = [], 0
    for i in range(n):
        text = " ".join(rng.sample(sentences, rng.randint(5, 9)))
        chunks.append(NewChunk(text, pos, pos + len(text), len(text) // 5, None, vectors[i]))
        pos += len(text) + 2
    return chunks


def bench_search(embedder: Embedder, size: int, sentences: list[str], questions: list[str], rng) -> dict:
    with tempfile.TemporaryDirectory() as tmp, KnowledgeBase(tmp, embedder=embedder) as kb:
        t = time.perf_counter()
        per_doc = 1000
        for d in range(0, size, per_doc):
            chunks = synthetic_chunks(min(per_doc, size - d), sentences, embedder.dim, rng)
            doc_id, ids = kb.store.insert_document(
                name=f"synthetic-{d // per_doc}.txt", sha256=f"{size}-{d}", size=0, mime="text/plain",
                title="", text="", pages=[], sections=[], chunks=chunks,
            )
            kb.index.add(np.array(ids), np.stack([c.embedding for c in chunks]))
        kb.index.save()
        build = time.perf_counter() - t
        for q in questions[:10]:  # warm caches and the model
            kb.search(q, k=5)
        timings = {"hybrid": [], "dense": [], "bm25": []}
        for q in questions:
            for mode, times in timings.items():
                t = time.perf_counter()
                kb.search(q, k=5, mode=mode)
                times.append(1000 * (time.perf_counter() - t))
    result = {"chunks": size, "build_seconds": round(build, 1), "queries": len(questions)}
    for mode, times in timings.items():
        result[f"{mode}_p50_ms"] = round(float(np.percentile(times, 50)), 2)
        result[f"{mode}_p95_ms"] = round(float(np.percentile(times, 95)), 2)
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["chunks"] for r in results["search"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, marker, color in (("hybrid", "o", "C0"), ("dense", "s", "C1"), ("bm25", "^", "C2")):
        for stat, style in (("p50", "-"), ("p95", "--")):
            values = [r[f"{mode}_{stat}_ms"] for r in results["search"]]
            ax.plot(sizes, values, marker=marker, ls=style, color=color, label=f"{mode} {stat}")
    ax.axhline(50, color="grey", lw=0.8, ls=":", label="50 ms target (hybrid p95)")
    ax.set_xscale("log")
    ax.set_xlabel("chunks in the knowledge base")
    ax.set_ylabel("latency per query (ms)")
    ax.set_title("Search latency, 2-core CPU (query embedding included)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="knowledge-base sizes in chunks")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the saved JSON")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((args.out / "retrieval.json").read_text()), args.out / "retrieval.png")
        return

    rng = random.Random(0)
    embedder = Embedder()
    embedder.warm_up()
    train = load_squad(QA / "train" / "squad-v1.1-train.json")
    contexts = sorted({ex.context for ex in train.examples()})
    sentences = [s for c in contexts for s in re.split(r"(?<=[.!?])\s+", c) if len(s) > 20]
    dev = load_squad(QA / "dev" / "squad-v1.1-dev-13art.json")
    questions = rng.sample([ex.question for ex in dev.examples()], args.queries)

    results = {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": __import__("os").cpu_count()},
        "ingestion": bench_ingestion(embedder, QA / "dev" / "squad-v1.1-dev-13art.json"),
        "search": [bench_search(embedder, int(s), sentences, questions, rng) for s in args.sizes.split(",")],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "retrieval.png")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
