"""Benchmark: answer quality of the extractive path, the old SmolLM2 decoder and the Qwen decoder, side by side, on
the doc-QA dev set of real documentation and on the SQuAD conversation set.

    python finetune/data/docqa/build_docs.py                     # once: the dev set's documents → docqa-docs/
    python bench/answer_quality.py [--baseline-rev e9ae1aa]      # → bench/results/answer_quality.json and .png

Each configuration is the project's own evaluation command (`chatqa eval docs`, `chatqa eval conversations`) run in
a child process. The SmolLM2 path no longer exists in the code: ``--baseline-rev`` names the last commit that had it
and `eval docs` (e9ae1aa), which is checked out into a temporary git worktree and run there, so its numbers come
from its own code, measured on the same machine and documents.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = ("answer_recall", "answer_f1", "span_f1")


def eval_docs(repo: Path, docs: Path, modes: list[str], data_dir: Path) -> dict:
    """`chatqa eval docs` of the checkout at ``repo`` (its own code), as JSON."""
    argv = [sys.executable, "-m", "chatqa.cli", "eval", "docs", "--docs", str(docs), "--data-dir", str(data_dir),
            "--file", str(repo / "finetune" / "data" / "docqa" / "docqa-dev.json"), "--json", "-q"]
    for mode in modes:
        argv += ["--mode", mode]
    out = subprocess.run(argv, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def eval_conversations(squad: Path, mode: str) -> dict:
    argv = [sys.executable, "-m", "chatqa.cli", "eval", "conversations", "--file",
            str(REPO / "finetune" / "data" / "conversations-dev.json"), "--squad", str(squad), "--mode", mode, "--json"]
    out = subprocess.run(argv, cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline(rev: str, docs: Path) -> dict:
    """The SmolLM2 path: `eval docs --mode generative` of commit ``rev`` in a temporary worktree."""
    with tempfile.TemporaryDirectory(prefix="chatqa-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True,
                       capture_output=True)
        try:
            return eval_docs(tree, docs.resolve(), ["generative"], Path(tmp) / "kb")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=REPO / "docqa-docs", help="the dev set's documents")
    parser.add_argument("--squad", type=Path, default=REPO.parent / "shared/data/qa/dev/squad-v1.1-dev-13art.json")
    parser.add_argument("--baseline-rev", default="e9ae1aa", help="a commit with the SmolLM2 decoder ('' to skip)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    results: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}, "docqa": {}}
    with tempfile.TemporaryDirectory(prefix="chatqa-quality-") as tmp:
        now = eval_docs(REPO, args.docs, ["extractive", "generative"], Path(tmp) / "kb")
    results["docqa"]["extractive"] = now["modes"]["extractive"]
    results["docqa"]["qwen2.5-0.5b"] = now["modes"]["generative"]
    if args.baseline_rev:
        results["docqa"]["smollm2-135m"] = baseline(args.baseline_rev, args.docs)["modes"]["generative"]
    if args.squad.exists():
        results["conversations"] = {mode: eval_conversations(args.squad, mode) for mode in ("extractive", "generative")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "answer_quality.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results["docqa"], args.out / "answer_quality.png")
    print(json.dumps({path: {m: modes["questions"].get(m) for m in METRICS} for path, modes in results["docqa"].items()},
                     indent=1))


def plot(docqa: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(docqa)
    for i, (name, modes) in enumerate(docqa.items()):
        values = [modes["questions"].get(m) or 0 for m in METRICS]
        ax.bar([j + i * width for j in range(len(METRICS))], values, width, label=name)
    ax.set_xticks([j + width * (len(docqa) - 1) / 2 for j in range(len(METRICS))], [m.replace("_", " ") for m in METRICS])
    ax.set_ylabel("% (doc-QA dev set, single questions)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
