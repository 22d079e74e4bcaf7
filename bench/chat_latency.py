"""Benchmark: answer latency of the chat engine on CPU over the bundled knowledge base.

    python bench/chat_latency.py        # writes bench/results/chat_latency.json and chat_latency.png

Extractive: the whole turn (condense, hybrid search, read 5 passages, template answer, log) per question.
Generative: time to the first streamed token of the decoder's draft, and the draft's tokens per second.
A fresh data directory is used, so the bundled documents are indexed first (cold start is reported too).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = [
    "Which file types can ChatQA read?",
    "Where does ChatQA keep its data?",
    "How large can an uploaded file be?",
    "Can ChatQA read scanned PDFs?",
    "What happens when the documents do not contain an answer?",
    "How do I start ChatQA?",
    "What is the default data directory?",
    "How are documents split into passages?",
    "What does ChatQA do with my feedback?",
    "Does ChatQA need an internet connection?",
    "How can I choose another data directory?",
    "What must I do with password-protected PDFs?",
    "How long does the first start take?",
    "What is shown next to an answer?",
    "When is a retrained model used?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the question list")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    from chatqa.cli import _offline
    from chatqa.engine import EngineSettings, open_engine

    _offline()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="chatqa-bench-") as tmp:
        t = time.perf_counter()
        engine = open_engine(tmp, settings=EngineSettings(mode="extractive"))
        engine.warm_up(decoder=False)
        first = engine.ask(QUESTIONS[0])
        results["cold_start_to_first_extractive_answer_s"] = round(time.perf_counter() - t, 2)
        results["first_answer"] = first.answer

        extractive, abstained = [], 0
        for _ in range(args.rounds):
            for q in QUESTIONS:
                t = time.perf_counter()
                result = engine.ask(q, mode="extractive")
                extractive.append(time.perf_counter() - t)
                abstained += result.abstained
        results["extractive"] = {
            "questions": len(extractive), "p50_s": round(statistics.median(extractive), 3),
            "p95_s": round(percentile(extractive, 95), 3), "abstained": abstained,
        }

        t = time.perf_counter()
        engine.decoder.warm_up()
        results["decoder_warm_up_s"] = round(time.perf_counter() - t, 2)
        first_token, rates, kept = [], [], 0
        for q in QUESTIONS:
            t = time.perf_counter()
            first_at, pieces, final = None, 0, None
            for event in engine.stream(q, mode="generative"):
                if event.kind == "token" and first_at is None:
                    first_at = time.perf_counter() - t
                pieces += event.kind == "token"
                if event.kind == "final":
                    final = event.result
            total = time.perf_counter() - t
            if final is not None and not final.abstained and first_at is not None:
                first_token.append(first_at)
                if final.mode == "generative":
                    kept += 1
                    rates.append(pieces / max(total - first_at, 1e-6))
        results["generative"] = {
            "answered": len(first_token), "first_token_p50_s": round(statistics.median(first_token), 3),
            "first_token_p95_s": round(percentile(first_token, 95), 3),
            "drafts_kept": kept, "tokens_per_second_median": round(statistics.median(rates), 1) if rates else None,
        }
        results["timings_of_last_turn"] = {k: round(v, 3) for k, v in final.timings.items()} if final else {}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chat_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(extractive, first_token, args.out / "chat_latency.png")
    print(json.dumps(results, indent=2))


def plot(extractive: list[float], first_token: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([extractive, first_token], tick_labels=["extractive answer", "generative first token"], vert=False)
    ax.axvline(0.5, color="C0", ls=":", lw=1, label="0.5 s target (extractive p50)")
    ax.axvline(1.5, color="C1", ls=":", lw=1, label="1.5 s target (first token p50)")
    ax.set_xlabel("seconds (2-core CPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
