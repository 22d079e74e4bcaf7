"""Benchmark: latency of `ExtractiveReader.read` over 5 passages of about 200 words, fp32 and bf16 autocast.

    python bench/reader_latency.py                  # writes bench/results/reader_latency.json and .png
    python bench/reader_latency.py --runs 3         # a quick check

The passages are the 5 paragraphs of the SQuAD v1.1 dev file whose length is closest to 200 words; each timed
call reads them with a different dev question (after 5 untimed warm-up calls). The reader is `--checkpoint`
(default: the shipped reader). When the default checkpoint does not exist yet, an untrained QA head on the
packaged MiniLM encoder stands in ("model": "untrained head"): latency does not depend on the weights' values.
The top-level numbers are those of the mode the reader uses by default on this device (bf16 autocast where
supported); "modes" holds both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from chatqa.features import prepare_features  # noqa: E402
from chatqa.reader import DEFAULT_READER_DIR, ExtractiveReader, ReaderSettings, save_reader_settings  # noqa: E402
from chatqa.squad import load_squad  # noqa: E402

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qa" / "dev" / "squad-v1.1-dev-13art.json"
RESULTS = REPO / "bench" / "results"


def pick_passages(squad_path: Path, n: int = 5, words: int = 200) -> tuple[list[str], list[str]]:
    """Return the ``n`` paragraphs closest to ``words`` words (file order on ties) and all the file's questions."""
    squad = load_squad(squad_path)
    paragraphs = [p.context for a in squad.articles for p in a.paragraphs]
    ranked = sorted(range(len(paragraphs)), key=lambda i: (abs(len(paragraphs[i].split()) - words), i))
    return [paragraphs[i] for i in sorted(ranked[:n])], [ex.question for ex in squad.examples()]


def untrained_head(folder: Path) -> Path:
    """Save the packaged MiniLM encoder with a fresh (random) QA head as a reader checkpoint in ``folder``."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from knowledge.embedder import packaged_minilm_path

    torch.manual_seed(0)
    source = packaged_minilm_path()
    AutoModelForQuestionAnswering.from_pretrained(source, local_files_only=True).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(folder)
    save_reader_settings(folder, ReaderSettings(), note="untrained QA head on the packaged MiniLM, for benchmarks")
    return folder


def percentile(values: list[float], q: float) -> float:
    """Return the ``q``-th percentile (0-100) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_reader(reader: ExtractiveReader, passages: list[str], questions: list[str], warmup: int, runs: int) -> dict:
    """Return latency statistics (seconds) of ``reader.read`` and the raw times."""
    for q in questions[:warmup]:
        reader.read(q, passages)
    times = []
    for q in questions[warmup : warmup + runs]:
        t = time.perf_counter()
        reader.read(q, passages)
        times.append(time.perf_counter() - t)
    return {
        "p50_s": round(percentile(times, 50), 4),
        "p95_s": round(percentile(times, 95), 4),
        "mean_s": round(statistics.fmean(times), 4),
        "times_s": [round(t, 5) for t in times],
    }


def plot(modes: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    all_ms = [1000 * t for m in modes.values() for t in m["times_s"]]
    bins = 20 if len(all_ms) > 10 else 5
    edges = [min(all_ms) + (max(all_ms) - min(all_ms)) * i / bins for i in range(bins + 1)]
    if edges[0] == edges[-1]:
        edges = [edges[0] - 1, edges[0] + 1]
    for (name, m), color in zip(modes.items(), ("tab:blue", "tab:orange"), strict=False):
        ax.hist([1000 * t for t in m["times_s"]], bins=edges, alpha=0.6, color=color,
                label=f"{name}: p50 {1000 * m['p50_s']:.0f} ms, p95 {1000 * m['p95_s']:.0f} ms")
        ax.axvline(1000 * m["p50_s"], color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("ExtractiveReader.read latency (ms)")
    ax.set_ylabel("calls")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"reader checkpoint folder (default {DEFAULT_READER_DIR}, else an untrained head)")
    parser.add_argument("--runs", type=int, default=50, help="timed calls per mode (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--squad", type=Path, default=DEV, help="SQuAD file for passages and questions")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for reader_latency.json/.png")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")

    import torch
    import transformers

    from knowledge.device import cpu_supports_bf16

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        parser.error(f"--checkpoint {args.checkpoint} is not a folder")
    passages, questions = pick_passages(args.squad)
    needed = args.warmup + args.runs
    questions = (questions * (needed // len(questions) + 1))[:needed]

    with tempfile.TemporaryDirectory(prefix="reader-bench-") as tmp:
        checkpoint = args.checkpoint if args.checkpoint is not None else DEFAULT_READER_DIR
        model = str(checkpoint)
        if args.checkpoint is None and not (checkpoint / "config.json").is_file():
            checkpoint, model = untrained_head(Path(tmp)), "untrained head"
        kind = args.device.split(":")[0]
        default_bf16 = kind == "cuda" or (kind == "cpu" and cpu_supports_bf16())
        modes, windows = {}, []
        for name, bf16 in (("fp32", False), ("bf16", True)):
            reader = ExtractiveReader(checkpoint, device=args.device, bf16=bf16)
            reader.warm_up()
            modes[name] = time_reader(reader, passages, questions, args.warmup, args.runs)
        s = reader.settings
        for q in questions[args.warmup :]:
            feats = prepare_features(reader.tokenizer, [q] * len(passages), passages, max_length=s.max_length,
                                     stride=s.stride, max_question_tokens=s.max_question_tokens)
            windows.append(len(feats))

    default = modes["bf16" if default_bf16 else "fp32"]
    report = {
        "p50_s": default["p50_s"],
        "p95_s": default["p95_s"],
        "mean_s": default["mean_s"],
        "windows_per_call": round(statistics.fmean(windows), 2),
        "bf16": default_bf16,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "model": model,
        "passages": len(passages),
        "passage_words": [len(p.split()) for p in passages],
        "max_length": s.max_length,
        "bf16_speedup_p50": round(modes["fp32"]["p50_s"] / modes["bf16"]["p50_s"], 2),
        "modes": {name: {k: v for k, v in m.items() if k != "times_s"} for name, m in modes.items()},
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reader_latency.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(modes, args.out / "reader_latency.png",
         f"reader latency, {len(passages)} passages, {report['windows_per_call']} windows/call, "
         f"{report['threads']} threads ({model if model == 'untrained head' else Path(model).name})")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
