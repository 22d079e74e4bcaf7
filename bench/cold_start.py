"""Benchmark: cold start of the browser app to its first answer, as a person sees it.

    python bench/cold_start.py [--runs 3]     # writes bench/results/cold_start.json and cold_start.png

Each run starts `python run.py` on a fresh data directory (nothing indexed, the decoder not yet converted), opens the
page in Chromium (Playwright) as soon as the server listens, asks "Which file types can ChatQA read?" at once and
waits for the final answer. Reported from process start: the server listening, the first answer shown, and the
decoder loaded (the status line says "Ready."; checked after the first answer, so never less than it). A restart on
the same data directory is timed the same way. The first answer on a fresh data directory is extractive (the decoder
is still being converted); after a restart the decoder is usually loaded by then and phrases it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.ui.browser import CHROMIUM, App, ask, launch_browser, wait_status  # noqa: E402

QUESTION = "Which file types can ChatQA read?"


def one_start(playwright, data_dir: Path, log_path: Path) -> dict[str, float]:
    app = App(data_dir, log_path)
    try:
        listening = app.wait_listening()
        browser = launch_browser(playwright)
        try:
            page = browser.new_page()
            page.goto(app.url)
            answer = ask(page, QUESTION, timeout=300)
            first_answer = time.perf_counter() - app.started
            if "PDF" not in answer:
                raise RuntimeError(f"unexpected first answer: {answer!r}")
            wait_status(page, "Ready.", timeout=300)
            all_loaded = time.perf_counter() - app.started
        finally:
            browser.close()
    finally:
        output = app.stop()
    if "Traceback" in output:
        raise RuntimeError(output)
    return {"listening_s": round(listening, 2), "first_answer_s": round(first_answer, 2),
            "decoder_ready_s": round(all_loaded, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fresh data directories to start on")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("no Chromium found: install Debian's chromium (make test does)")
    from playwright.sync_api import sync_playwright

    cold, restart = [], []
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="chatqa-cold-") as tmp:
        for i in range(args.runs):
            data = Path(tmp) / f"data-{i}"
            cold.append(one_start(p, data, Path(tmp) / f"cold-{i}.log"))
            print("cold   ", cold[-1], flush=True)
            restart.append(one_start(p, data, Path(tmp) / f"restart-{i}.log"))
            print("restart", restart[-1], flush=True)

    def summary(runs):
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    result = {
        "question": QUESTION,
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "fresh_data_dir": {"median": summary(cold), "runs": cold},
        "restart_same_data_dir": {"median": summary(restart), "runs": restart},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.json").write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["server listening", "first answer shown", "decoder loaded"]
    keys = ["listening_s", "first_answer_s", "decoder_ready_s"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for row, (name, runs) in enumerate([("fresh data dir", cold), ("restart", restart)]):
        med = summary(runs)
        ax.barh([f"{name}: {lab}" for lab in labels], [med[k] for k in keys], color=f"C{row}")
    ax.set_xlabel("seconds from `python run.py` (median)")
    ax.set_title("ChatQA cold start (2-core CPU)")
    fig.tight_layout()
    fig.savefig(args.out / "cold_start.png", dpi=120)
    print(json.dumps(result["fresh_data_dir"]["median"]), json.dumps(result["restart_same_data_dir"]["median"]))


if __name__ == "__main__":
    main()
