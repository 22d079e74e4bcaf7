"""Benchmark: answer latency and memory of the chat engine on CPU over the bundled knowledge base.

    python bench/chat_latency.py [--convert]   # writes bench/results/chat_latency.json and chat_latency.png

Extractive: the whole turn (condense, hybrid search, read 5 passages, template answer, log) per question.
Generative: from the question to the first answer token on the screen (search and reading included), the
decoder's tokens per second after that, and the prompt's length; every question is answered (the abstention
policy is set to always answer, so that all 15 are timed). Peak RSS of the process with all models loaded.
``--convert``: also time the one-time conversion of the packaged decoder (GGUF → transformers → CTranslate2) in a
fresh cache, in a child process, with its peak RSS. A fresh data directory is used, so the bundled documents are
indexed first (cold start is reported too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
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
    parser.add_argument("--convert", action="store_true", help="also time the decoder's conversion in a fresh cache")
    args = parser.parse_args()

    from chatqa.cli import _offline
    from chatqa.decide import AbstentionPolicy
    from chatqa.engine import EngineSettings, open_engine

    _offline()
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}}
    if args.convert:
        results["conversion"] = time_conversion()
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
        engine.policy = AbstentionPolicy(weights={"reader": 0.0, "coverage": 0.0}, bias=1.0)  # time every answer
        tokens = count_tokens(engine.decoder)
        first_token, rates, prompts = [], [], []
        for q in QUESTIONS:
            t = time.perf_counter()
            first_at, final = None, None
            for event in engine.stream(q, mode="generative"):
                if event.kind == "token" and first_at is None:
                    first_at = time.perf_counter() - t
                if event.kind == "final":
                    final = event.result
            if final is not None and final.mode == "generative" and first_at is not None:
                first_token.append(first_at)
                n, prompt_len, seconds = tokens[-1]
                prompts.append(prompt_len)
                if n > 1:
                    rates.append((n - 1) / seconds)
        results["generative"] = {
            "decoder": engine.decoder.source.title, "answered": len(first_token),
            "passages_shown": len(engine.decoder.config.passage_chars),
            "prompt_tokens_median": statistics.median(prompts) if prompts else None,
            "first_token_p50_s": round(statistics.median(first_token), 3),
            "first_token_p95_s": round(percentile(first_token, 95), 3),
            "tokens_per_second_median": round(statistics.median(rates), 1) if rates else None,
        }
        results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        results["timings_of_last_turn"] = {k: round(v, 3) for k, v in final.timings.items()} if final else {}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chat_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(extractive, first_token, args.out / "chat_latency.png")
    print(json.dumps(results, indent=2))


def count_tokens(decoder) -> list[tuple[int, int, float]]:
    """Wrap ``decoder.generate`` so that each generation appends (tokens, prompt tokens, seconds from the first
    token to the last) to the returned list."""
    runs: list[tuple[int, int, float]] = []
    generate = decoder.generate

    def counting(prompt_ids):
        n, first = 0, None
        try:
            for step in generate(prompt_ids):
                n += 1
                first = first if first is not None else time.perf_counter()
                yield step
        finally:  # also when the answer stops early (the sentence limit closes the generator)
            runs.append((n, len(prompt_ids), time.perf_counter() - first if first is not None else 0.0))

    decoder.generate = counting
    return runs


def time_conversion() -> dict:
    """The packaged decoder converted from scratch in a fresh cache (a child process), with its peak RSS."""
    with tempfile.TemporaryDirectory(prefix="chatqa-cache-") as cache:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from chatqa.decoder import GenerativeDecoder; GenerativeDecoder().warm_up()"],
                       check=True, env={**os.environ, "CHATQA_CACHE_DIR": cache}, cwd=REPO)
        seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def plot(extractive: list[float], first_token: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([extractive, first_token], tick_labels=["extractive answer", "generative first token"],
               orientation="horizontal")
    ax.axvline(0.3, color="C0", ls=":", lw=1, label="0.3 s target (extractive p50)")
    ax.axvline(1.2, color="C1", ls=":", lw=1, label="1.2 s target (first token p50)")
    ax.set_xlabel("seconds (2-core CPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
