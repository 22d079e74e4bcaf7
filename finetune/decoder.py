"""Supervised fine-tuning of the generative decoder on the conversation log, promoted only if it is better.

    python -m finetune decoder --from-logs [--data-dir DIR]

The training data is the chat export (:func:`chatqa.export.chat_records`: the decoder's own prompt, and the reply a
person rated 👍 or a template around the span they selected), split by conversation exactly as the reader's retrain
splits it. The active decoder (at first the SmolLM2-135M converted into ``<data_dir>/models/``) is fine-tuned in
full on the training split, the loss on the reply's tokens only. The active and the new decoder are compared on the
held-out split: the reply loss, and the share of drafts that keep the reader's span (the rule the app enforces,
:func:`chatqa.decoder.keeps_span`). The new version is promoted only when its loss is lower and it keeps the span at
least as often. Versions live in ``<data_dir>/models/decoder/`` (:class:`chatqa.registry.ModelRegistry`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from chatqa.decoder import GenerativeDecoder, decoder_registry
from chatqa.export import FeedbackExample, chat_records, feedback_examples
from chatqa.grounding import evidence_sentence
from chatqa.log import ConversationLog
from finetune.from_logs import split_examples
from knowledge.base import default_data_dir
from knowledge.errors import ChatQAError

logger = logging.getLogger(__name__)


@dataclass
class DecoderRetrainConfig:
    data_dir: str | None = None
    heldout_share: float = 0.2
    epochs: float = 1.0
    lr: float = 2e-5
    batch_size: int = 4
    max_tokens: int = 512  # longer prompts are cut from the left (the evidence and question are at the end)
    max_eval_drafts: int = 40  # held-out examples drafted for the span-keeping rate
    seed: int = 0


@dataclass
class DecoderRetrainReport:
    version: str
    parent: str
    promoted: bool
    reason: str
    metrics: dict
    seconds: float


def tokenize_record(tokenizer, messages: list[dict], max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat and labels that score only the assistant's reply (-100 elsewhere)."""
    prompt = _ids(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(messages, tokenize=True))
    if full[: len(prompt)] != prompt:
        raise ChatQAError("the chat template does not extend the prompt with the reply; cannot mask the prompt")
    labels = [-100] * len(prompt) + full[len(prompt) :]
    if len(full) > max_tokens:  # keep the end: the reply and the question, evidence and span just before it
        full, labels = full[-max_tokens:], labels[-max_tokens:]
    return full, labels


def _ids(out) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def reply_loss(model, batches) -> float:
    """Mean token loss of the replies."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for inputs in batches:
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            shift, labels = logits[:, :-1].float(), inputs["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shift.reshape(-1, shift.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += float(loss)
            count += int((labels != -100).sum())
    return total / max(count, 1)


def collate_chat(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def span_keeping_rate(folder: Path, examples: list[FeedbackExample], limit: int) -> float | None:
    """Share of held-out answers for which the decoder's draft keeps the span (the app's rule)."""
    chosen = [ex for ex in examples if not ex.is_impossible][:limit]
    if not chosen:
        return None
    decoder = GenerativeDecoder(folder.parent, model_folder=folder)
    kept = 0
    for ex in chosen:
        end = ex.answer_start + len(ex.answer_text)
        evidence = evidence_sentence(ex.context, ex.answer_start, end)
        final = list(decoder.compose(ex.question, ex.answer_text, evidence, ex.history))[-1]
        kept += bool(final.kept)
    return round(kept / len(chosen), 4)


def retrain_decoder(cfg: DecoderRetrainConfig) -> DecoderRetrainReport:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    from knowledge.device import autocast

    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    registry = decoder_registry(data_dir)
    parent = registry.active()
    parent_dir = registry.checkpoint(parent)
    if not parent_dir.is_dir():  # the shipped decoder is converted on first use
        GenerativeDecoder(data_dir / "models").warm_up()
    with ConversationLog(data_dir) as log:
        examples, counts = feedback_examples(log)
    train, held = split_examples([ex for ex in examples if not ex.is_impossible], cfg.heldout_share)
    if not train:
        raise ChatQAError(f"nothing to learn from yet: {counts.describe()}. Rate answers in the app first.")
    tokenizer = AutoTokenizer.from_pretrained(parent_dir, local_files_only=True)
    train_rows = [tokenize_record(tokenizer, r["messages"], cfg.max_tokens) for r in chat_records(train)]
    held_rows = [tokenize_record(tokenizer, r["messages"], cfg.max_tokens) for r in chat_records(held)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def batches(rows):
        return [collate_chat(rows[i : i + cfg.batch_size], pad) for i in range(0, len(rows), cfg.batch_size)]

    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(parent_dir, local_files_only=True, dtype=torch.float32)
    parent_loss = reply_loss(model, batches(held_rows)) if held_rows else None
    steps = max(1, math.ceil(len(train_rows) / cfg.batch_size * cfg.epochs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    rng = random.Random(cfg.seed)
    model.train()
    done = 0
    while done < steps:
        order = list(range(len(train_rows)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            inputs = collate_chat([train_rows[j] for j in order[i : i + cfg.batch_size]], pad)
            with autocast("cpu" if not torch.cuda.is_available() else "cuda", None):
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            if done % 10 == 0:
                logger.info("decoder step %d/%d loss %.3f", done, steps, float(loss))
            if done >= steps:
                break
    new_loss = reply_loss(model, batches(held_rows)) if held_rows else None

    run = registry.folder / "runs" / time.strftime("%Y%m%d-%H%M%S")
    shutil.rmtree(run.parent, ignore_errors=True)
    model.save_pretrained(run, safe_serialization=True)
    tokenizer.save_pretrained(run)
    generation = parent_dir / "generation_config.json"
    if generation.exists() and not (run / generation.name).exists():
        shutil.copy(generation, run / generation.name)

    parent_keep = span_keeping_rate(parent_dir, held, cfg.max_eval_drafts)
    new_keep = span_keeping_rate(run, held, cfg.max_eval_drafts)
    promoted, reason = decide_decoder(parent_loss, new_loss, parent_keep, new_keep)
    seconds = round(time.perf_counter() - t0, 1)
    metrics = {"parent": {"heldout_loss": parent_loss, "span_kept": parent_keep},
               "new": {"heldout_loss": new_loss, "span_kept": new_keep},
               "train_examples": len(train_rows), "heldout_examples": len(held_rows)}
    version = registry.add(run, parent=parent.id, promoted=promoted, reason=reason, metrics=metrics,
                           training={"config": asdict(cfg), "steps": steps, "seconds": seconds})
    shutil.rmtree(run.parent, ignore_errors=True)
    (registry.folder / "last_retrain.json").write_text(json.dumps({"version": version.id, "promoted": promoted}))
    logger.info("decoder %s %s: %s", version.id, "promoted" if promoted else "not promoted", reason)
    return DecoderRetrainReport(version.id, parent.id, promoted, reason, metrics, seconds)


def decide_decoder(parent_loss, new_loss, parent_keep, new_keep) -> tuple[bool, str]:
    """Promote when the held-out reply loss is lower and the span is kept at least as often."""
    if parent_loss is None or new_loss is None:
        return False, "no held-out examples to compare on yet"
    if new_loss >= parent_loss:
        return False, f"held-out loss {new_loss:.3f} is not below the active decoder's {parent_loss:.3f}"
    if parent_keep is not None and new_keep is not None and new_keep < parent_keep:
        return False, f"keeps the span in {new_keep:.0%} of drafts, the active decoder in {parent_keep:.0%}"
    return True, (f"held-out loss {parent_loss:.3f} → {new_loss:.3f}; span kept {parent_keep:.0%} → {new_keep:.0%}"
                  if parent_keep is not None and new_keep is not None else
                  f"held-out loss {parent_loss:.3f} → {new_loss:.3f}")
