"""Benchmark: the HTTP API under concurrent streaming clients (issue #21).

    python bench/api_load.py                          # 8 clients x 5 questions, model "chatqa" (generative)
    python bench/api_load.py --model chatqa-extractive --clients 8 --questions 5
    python bench/api_load.py --replot                 # only redraw the PNG from the saved JSON

Starts the real app (``python run.py`` on a fresh data directory, the bundled guide, a users file with one API key)
and waits until it answers. Then ``--clients`` threads each hold a conversation of ``--questions`` questions about
the guide with the official ``openai`` client, streaming, each sending its history as chat front ends do. Measured
per answer from the request: the first non-empty content chunk (time to first token) and ``[DONE]`` (last token).
The server answers one question at a time (one engine), so a question's wait for the others is part of its times.
Afterwards the conversation log is read from the data directory: every answer must be there once. The load average
is recorded before and after (the machine is shared). Writes ``bench/results/api_load.json`` and ``api_load.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatqa.auth import UserStore  # noqa: E402
from chatqa.log import ConversationLog  # noqa: E402
from tests.ui.browser import App  # noqa: E402

RESULTS = REPO / "bench" / "results"
QUESTIONS = [  # a conversation about the bundled guide; the later ones lean on the earlier
    "Which file types can ChatQA read?",
    "What happens when they are password-protected?",
    "How do I give feedback on an answer?",
    "How do I remove a document?",
    "Where is my data stored?",
]


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
            "max_s": round(ordered[-1], 3), "n": len(ordered)}


def converse(client, model: str, questions: list[str], out: list[dict]) -> None:
    messages: list[dict] = []
    for question in questions:
        messages.append({"role": "user", "content": question})
        t = time.perf_counter()
        first, text, turn_id, error = None, "", None, None
        try:
            for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first if first is not None else time.perf_counter() - t
                    text += chunk.choices[0].delta.content
                if chunk.choices and chunk.choices[0].finish_reason == "stop":
                    turn_id = chunk.model_extra["chatqa"]["turn_id"]
        except Exception as e:  # counted as lost
            error = f"{type(e).__name__}: {e}"
        out.append({"question": question, "first_token_s": first, "last_token_s": time.perf_counter() - t,
                    "turn_id": turn_id, "chars": len(text), "error": error})
        messages.append({"role": "assistant", "content": text})


def run(args) -> dict:
    import openai

    with tempfile.TemporaryDirectory(prefix="chatqa-api-load-") as tmp:
        data, users = Path(tmp) / "data", UserStore(Path(tmp) / "users.json")
        users.add("bench", "bench-password", admin=True)
        key = users.new_key("bench")
        users.save()
        app = App(data, Path(tmp) / "app.log", "--auth", str(users.path))
        try:
            started = app.wait_listening()
            client = openai.OpenAI(base_url=f"{app.url}/v1", api_key=key, timeout=900, max_retries=0)
            t = time.perf_counter()  # warm: the models load, and for "chatqa" the decoder too
            while True:
                first = client.chat.completions.create(model=args.model, messages=[
                    {"role": "user", "content": QUESTIONS[0]}])
                if args.model != "chatqa" or first.model_extra["chatqa"]["mode"] == "generative" or \
                        time.perf_counter() - t > 900:
                    break
                time.sleep(2)
            warm_s = time.perf_counter() - t
            load_before = [round(x, 2) for x in os.getloadavg()]
            answers: list[list[dict]] = [[] for _ in range(args.clients)]
            threads = [threading.Thread(target=converse, args=(client, args.model, QUESTIONS[: args.questions], out))
                       for out in answers]
            t = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - t
            load_after = [round(x, 2) for x in os.getloadavg()]
        finally:
            output = app.stop()
        rows = [a for client_answers in answers for a in client_answers]
        with ConversationLog(data) as log:
            logged = {t.id: t for c in log.conversations(limit=1000) for t in log.history(c.id)}
    answered = [r for r in rows if r["error"] is None and r["turn_id"] is not None]
    modes: dict[str, int] = {}
    for r in answered:
        mode = logged[r["turn_id"]].mode if r["turn_id"] in logged else "missing"
        modes[mode] = modes.get(mode, 0) + 1
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "model": args.model, "clients": args.clients, "questions_per_client": args.questions,
        "asked": len(rows), "answered": len(answered),
        "logged": sum(1 for r in answered if r["turn_id"] in logged),
        "lost": [r for r in rows if r not in answered or r["turn_id"] not in logged],
        "answer_modes": modes, "abstained": sum(1 for r in answered if logged.get(r["turn_id"]) and
                                                logged[r["turn_id"]].abstained),
        "first_token": percentiles([r["first_token_s"] for r in answered if r["first_token_s"] is not None]),
        "last_token": percentiles([r["last_token_s"] for r in answered]),
        "wall_s": round(wall, 1), "answers_per_minute": round(60 * len(answered) / wall, 2),
        "app_listening_s": round(started, 1), "warm_up_s": round(warm_s, 1),
        "load_average_before": load_before, "load_average_after": load_after,
        "traceback_in_app_log": "Traceback" in output, "answers": rows,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["answers"] if r["error"] is None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist([[r["first_token_s"] for r in rows if r["first_token_s"] is not None], [r["last_token_s"] for r in rows]],
            bins=20, label=["first token", "last token"], color=["C0", "C1"])
    for key, color in (("first_token", "C0"), ("last_token", "C1")):
        for q, style in (("p50_s", "-"), ("p95_s", ":")):
            ax.axvline(results[key][q], color=color, ls=style, lw=1,
                       label=f"{key.replace('_', ' ')} {q[:3]} {results[key][q]} s")
    ax.set_xlabel("seconds from request (queueing behind the other clients included)")
    ax.set_ylabel("answers")
    ax.set_title(f"{results['clients']} streaming clients x {results['questions_per_client']} questions, model "
                 f"{results['model']}: {results['logged']}/{results['asked']} answered and logged\n"
                 f"{results['machine']['cpus']}-core CPU, load {results['load_average_before'][0]} → "
                 f"{results['load_average_after'][0]}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="chatqa", choices=["chatqa", "chatqa-extractive", "chatqa-generative"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--questions", type=int, default=5, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--replot", action="store_true")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((args.out / "api_load.json").read_text()), args.out / "api_load.png")
        return
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "api_load.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "api_load.png")
    print(json.dumps({k: v for k, v in results.items() if k != "answers"}, indent=2))


if __name__ == "__main__":
    main()
