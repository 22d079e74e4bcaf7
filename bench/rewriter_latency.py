"""Benchmark: how long a follow-up rewrite takes (CTranslate2 int8 on CPU), and that first turns pay nothing.

    python bench/rewriter_latency.py                       # the shipped rewriter, converted once into --data-dir
    python bench/rewriter_latency.py --model-folder DIR    # a converted rewriter (CTranslate2 folder)
    python bench/rewriter_latency.py --compare DIR ...     # also other CT2 causal LMs on a fixed-length prompt

Timed: one ``Rewriter.rewrite`` per call (as the app calls it) on the first ``--samples`` follow-ups of CANARD dev,
after 3 untimed calls; and ``DialogManager.condense`` on first turns with a rewriter that counts its calls. With
``--compare``, every folder (the rewriter too) also generates exactly 20 tokens after a ~150-token prompt, the check
that chose the model. The load average is recorded before and after: on a shared 2-core machine it moves the numbers.
Writes ``bench/results/rewriter_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from chatqa.canard import read_canard  # noqa: E402
from chatqa.dialog import DialogManager  # noqa: E402
from chatqa.models.rewrite_prompt import build_prompt  # noqa: E402
from chatqa.models.rewriter import Rewriter  # noqa: E402

DEV = REPO.parent / "shared" / "data" / "dialog" / "canard-dev.jsonl"
RESULTS = REPO / "bench" / "results"


def summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "mean_s": round(statistics.fmean(ordered), 3), "n": len(ordered)}


def fixed_length(folder: Path, prompt: str, runs: int) -> dict:
    """~150 prompt tokens, exactly 20 generated: the same work for every model."""
    import ctranslate2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    generator = ctranslate2.Generator(str(folder), device="cpu", compute_type="int8", intra_threads=2)
    tokens = tokenizer.encode(prompt).tokens
    times = []
    for i in range(runs + 2):
        t = time.perf_counter()
        generator.generate_batch([tokens], max_length=20, min_length=20, sampling_topk=1,
                                 include_prompt_in_result=False)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return {"folder": str(folder), "prompt_tokens": len(tokens), "new_tokens": 20, **summary(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-folder", type=Path, default=None, help="converted rewriter (CTranslate2 folder)")
    parser.add_argument("--data-dir", type=Path, default=REPO / "chatqa-data", help="where the shipped one is converted")
    parser.add_argument("--samples", type=int, default=50, help="follow-ups timed")
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="other CT2 folders for the fixed check")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per folder in the fixed check")
    parser.add_argument("--out", type=Path, default=RESULTS / "rewriter_latency.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    rewriter = Rewriter(args.data_dir / "models", model_folder=args.model_folder)
    rewriter.warm_up()
    examples = read_canard(DEV)
    follow = [ex for ex in examples if ex.history][: args.samples + 3]
    times, rewrites = [], []
    for i, ex in enumerate(follow):
        t = time.perf_counter()
        out = rewriter.rewrite(ex.question, ex.history)
        if i >= 3:
            times.append(time.perf_counter() - t)
            rewrites.append({"question": ex.question, "rewrite": out, "human": ex.rewrite})

    class Counting:
        calls = 0

        def rewrite(self, question, history):
            Counting.calls += 1
            return rewriter.rewrite(question, history)

    dialog = DialogManager(rewriter=Counting())
    first = [ex for ex in examples if not ex.history][: args.samples]
    first_times = []
    for ex in first:
        t = time.perf_counter()
        dialog.condense(ex.question, [])
        first_times.append(time.perf_counter() - t)

    report = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_before": [round(x, 2) for x in load_before]},
        "rewrite": {**summary(times), "intra_threads": rewriter.threads},
        "first_turn_condense": {**summary(first_times), "model_calls": Counting.calls},
        "examples": rewrites[:10],
    }
    if args.compare:
        prompt = build_prompt(follow[0].question, [ex.rewrite for ex in examples[:12]], 12)
        folders = ([args.model_folder] if args.model_folder else []) + list(args.compare)
        report["fixed_150_prompt_20_new"] = [fixed_length(folder, prompt, args.runs) for folder in folders]
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
