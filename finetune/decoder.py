"""LoRA fine-tuning of the generative decoder on the conversation log, promoted only if it is better.

    python -m finetune decoder --from-logs [--data-dir DIR] [--squad FILE ...]

1. The training data is the chat export (:func:`chatqa.export.chat_records`: the decoder's own prompt rebuilt from
   the logged passages, and the reply a person rated 👍 or a template around the span they selected), split by
   conversation exactly as the reader's retrain splits it (:func:`finetune.from_logs.split_examples`). ``--squad
   FILE ...`` adds labelled answers of extractive QA files, answered with the sentence that holds them
   (:mod:`finetune.decoder_seed`): what a fresh install, with nothing logged yet, can learn from.
2. The active version's float weights are rebuilt: the packaged transformers folder (``<cache>/decoder-<name>/hf/``)
   with the LoRA adapters of its lineage merged in order (:mod:`finetune.lora`).
3. LoRA adapters (peft; r 8, alpha 16 on every attention and MLP projection) are trained on the training split, the
   loss on the reply's tokens only, under bf16 autocast on CUDA and on CPUs with bf16 instructions (held-out losses
   are measured in float32).
4. The adapter is merged, the dense model saved to a temporary folder, converted to CTranslate2 int8 (the temporary
   folder, 2.5 GB for the 0.5B model, is deleted) and the version folder holds ``ct2/`` (what answers are generated
   with) and ``adapter/`` (a few MB: what a later retrain rebuilds this version from).
5. Parent and new version are compared on the held-out split: the reply loss (one model: peft's adapter disabled is
   the parent), and drafts written by both CTranslate2 folders for up to ``max_eval_drafts`` held-out examples:
   grounding (mean share of a draft's content words found in the passages it was shown, :func:`chatqa.grounding
   .support`) and span keeping (share of drafts containing the gold span, :func:`chatqa.grounding.contains_span`).
   The new version is promoted only when its loss is lower and neither grounding nor span keeping is worse.

The version folder is written completely in ``<data_dir>/models/decoder/runs/`` and only then registered (one atomic
write of ``registry.json``); a failed or interrupted run deletes what it wrote and leaves the registry untouched. A
running app switches to a promoted version before its next answer.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatqa.decoder import DecoderConfig, GenerativeDecoder, decoder_registry
from chatqa.export import FeedbackExample, chat_records, example_passages, feedback_examples
from chatqa.grounding import contains_span, support
from chatqa.log import ConversationLog
from chatqa.models.conversion import TOKENIZER_FILES, hf_to_ct2, is_hf_folder, prepare_decoder
from chatqa.models.sources import DEFAULT_DECODER, DecoderUnavailable, decoder_source
from finetune.decoder_seed import squad_seed_examples
from finetune.from_logs import split_examples
from finetune.lora import (
    ADAPTER,
    QWEN2_TARGETS,
    adapter_chain,
    collate_chat,
    load_version,
    lora_config,
    reply_loss,
    tokenize_record,
)
from knowledge.base import default_data_dir
from knowledge.cache import default_cache_dir
from knowledge.errors import ChatQAError
from knowledge.files import atomic_write

__all__ = ["DecoderRetrainConfig", "DecoderRetrainReport", "decide_decoder", "decoder_registry", "draft_scores",
           "retrain_decoder", "tokenize_record"]
logger = logging.getLogger(__name__)


@dataclass
class DecoderRetrainConfig:
    data_dir: str | None = field(default=None, metadata={"help": "data directory (default: $CHATQA_DATA_DIR or ./chatqa-data)"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "where the packaged decoder is converted (default: $CHATQA_CACHE_DIR or ~/.cache/chatqa)"})
    model: str = field(default=DEFAULT_DECODER, metadata={"help": "the packaged decoder the versions build on"})
    heldout_share: float = field(default=0.2, metadata={"help": "share of conversations held out for the comparison"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the training split"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate of the adapters (linear decay)"})
    batch_size: int = field(default=4, metadata={"help": "chats per step"})
    warmup: float = field(default=0.1, metadata={"help": "share of the steps spent warming the learning rate up"})
    max_tokens: int = field(default=512, metadata={"help": "longer chats are cut from the left (the reply is kept)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the adapters' input"})
    lora_targets: list[str] = field(default_factory=lambda: list(QWEN2_TARGETS),
                                    metadata={"help": "the linear layers that get adapters"})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 autocast while training (default: on CUDA and on CPUs with bf16 "
                                        "instructions); held-out losses are always measured in float32"})
    max_train_examples: int | None = field(default=None, metadata={"help": "train on at most this many examples"})
    squad: list[str] = field(default_factory=list, metadata={
        "help": "SQuAD-format files whose labelled answers are added as answering examples: the paragraph among others "
                "of its document, the reply the sentence holding the answer (finetune/decoder_seed.py)"})
    squad_examples: int = field(default=480, metadata={"help": "how many examples --squad adds, drawn evenly"})
    max_eval_drafts: int = field(default=20, metadata={"help": "held-out examples each version drafts an answer for"})
    draft_tokens: int = field(default=160, metadata={"help": "the longest draft, in tokens"})
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_share < 1 or self.epochs <= 0 or self.lr <= 0 or not 0 <= self.warmup < 1:
            raise ValueError("heldout_share and warmup must be in [0, 1), epochs and lr above 0")
        if self.batch_size < 1 or self.max_tokens < 8 or self.max_eval_drafts < 0 or self.draft_tokens < 1:
            raise ValueError("batch_size and draft_tokens must be >= 1, max_tokens >= 8, max_eval_drafts >= 0")


@dataclass
class DecoderRetrainReport:
    version: str
    parent: str
    promoted: bool
    reason: str
    metrics: dict
    seconds: float


class NothingToLearn(ChatQAError):
    pass


def retrain_decoder(cfg: DecoderRetrainConfig) -> DecoderRetrainReport:
    """Train, compare and record one decoder version (see the module's steps)."""
    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir) if cfg.data_dir is not None else default_data_dir()
    cache = Path(cfg.cache_dir) if cfg.cache_dir is not None else default_cache_dir()
    source = decoder_source(cfg.model)
    registry = decoder_registry(data_dir, cfg.model, cache)
    parent = registry.active()
    chain = adapter_chain(registry, parent, cfg.model)  # before anything is loaded: a broken lineage fails at once
    base = _packaged_hf(source, cache)

    with ConversationLog(data_dir) as log:
        examples, counts = feedback_examples(log)
    seeded = squad_seed_examples(cfg.squad, cfg.squad_examples, cfg.seed)
    examples += seeded
    train, held = split_examples([ex for ex in examples if not ex.is_impossible], cfg.heldout_share)
    if cfg.max_train_examples is not None:
        train = train[: cfg.max_train_examples]
    logger.info("feedback: %s; %d answers to train on, %d held out (with %d from --squad files)", counts.describe(),
                len(train), len(held), len(seeded))
    if not train:
        raise NothingToLearn(f"nothing to learn from yet: {counts.describe()}, no answer in the training split. "
                             "Rate answers (and correct the wrong ones) in the app first.")

    runs = registry.folder / "runs"
    staging = runs / time.strftime("%Y%m%d-%H%M%S")
    shutil.rmtree(runs, ignore_errors=True)  # what an interrupted retrain left behind
    try:
        trained = _train(cfg, base, chain, train, held, staging)
        t_drafts = time.perf_counter()
        parent_drafts = draft_scores(registry.checkpoint(parent), held, cfg, cache)
        new_drafts = draft_scores(staging, held, cfg, cache)
        trained["timings"]["drafts"] = round(time.perf_counter() - t_drafts, 1)
        parent_metrics = {"heldout_loss": trained.pop("parent_loss"), **(parent_drafts or {})}
        new_metrics = {"heldout_loss": trained.pop("new_loss"), **(new_drafts or {})}
        promoted, reason = decide_decoder(parent_metrics, new_metrics)
        seconds = round(time.perf_counter() - t0, 1)
        metrics = {"parent": parent_metrics, "new": new_metrics, "feedback": asdict(counts),
                   "train_examples": len(train), "heldout_examples": len(held)}
        version = registry.add(staging, parent=parent.id, promoted=promoted, reason=reason, metrics=metrics,
                               training={"config": asdict(cfg), "model": cfg.model, "method": "lora",
                                         "parent_chain": [v for v, _ in chain], "seconds": seconds, **trained})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(_dense_folder(staging), ignore_errors=True)
        if runs.is_dir() and not any(runs.iterdir()):
            runs.rmdir()
    atomic_write(registry.folder / "last_retrain.json", json.dumps(
        {"version": version.id, "promoted": promoted, "reason": reason, "seconds": seconds}, indent=2))
    logger.info("decoder %s %s: %s (%.0f s)", version.id, "promoted" if promoted else "not promoted", reason, seconds)
    return DecoderRetrainReport(version.id, parent.id, promoted, reason, metrics, seconds)


def _packaged_hf(source: Any, cache: Path) -> Path:
    """The packaged decoder's transformers folder (converted from its packages first when the cache has nothing)."""
    folder = prepare_decoder(source, cache)
    if not is_hf_folder(folder / "hf"):
        raise DecoderUnavailable(
            f"retraining starts from the transformers folder {folder / 'hf'}, which is missing; move {folder} away "
            "and start the app once to convert the decoder again")
    return folder / "hf"


def _dense_folder(staging: Path) -> Path:
    return staging.parent / f".{staging.name}.dense"


def _train(cfg: DecoderRetrainConfig, base: Path, chain: list[tuple[str, Path]], train: list[FeedbackExample],
           held: list[FeedbackExample], staging: Path) -> dict:
    """Train the adapters, write ``staging/adapter`` and ``staging/ct2``; the held-out losses and training facts."""
    import torch
    from peft import get_peft_model
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    from knowledge.device import autocast, pick_device

    device = pick_device()
    device = device if device.split(":")[0] in ("cuda", "cpu") else "cpu"  # bf16 autocast: CUDA and CPU only
    # the tokenizer answers are generated with, loaded as GenerativeDecoder loads it (the packaged CTranslate2
    # folder's copy: without the model's config beside it, it is exactly the saved tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(base.parent / "ct2", local_files_only=True, fix_mistral_regex=False)
    train_rows = [tokenize_record(tokenizer, r["messages"], cfg.max_tokens) for r in chat_records(train)]
    held_rows = [tokenize_record(tokenizer, r["messages"], cfg.max_tokens) for r in chat_records(held)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def batches(rows: list) -> list[dict]:
        return [collate_chat(rows[i : i + cfg.batch_size], pad) for i in range(0, len(rows), cfg.batch_size)]

    timings: dict[str, float] = {}
    t_phase = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = get_peft_model(load_version(base, chain, device),
                           lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("LoRA r %d alpha %d on %s: %.1fM trainable parameters", cfg.lora_r, cfg.lora_alpha,
                ", ".join(cfg.lora_targets), trainable / 1e6)
    timings["load"] = round(time.perf_counter() - t_phase, 1)
    parent_loss = None
    t_phase = time.perf_counter()
    if held_rows:
        with model.disable_adapter():
            parent_loss = reply_loss(model, batches(held_rows), device, bf16=False)
    timings["heldout_loss"] = round(time.perf_counter() - t_phase, 1)

    steps = max(1, math.ceil(len(train_rows) / cfg.batch_size * cfg.epochs))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(steps * cfg.warmup), steps)
    rng = random.Random(cfg.seed)
    done, t_train = 0, time.perf_counter()
    while done < steps:
        order = list(range(len(train_rows)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            model.train()
            inputs = {k: v.to(device) for k, v in
                      collate_chat([train_rows[j] for j in order[i : i + cfg.batch_size]], pad).items()}
            with autocast(device, cfg.bf16):
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            rate = done * cfg.batch_size / (time.perf_counter() - t_train)
            logger.info("step %d/%d loss %.3f lr %.1e %.2f ex/s", done, steps, loss.item(),
                        scheduler.get_last_lr()[0], rate)
            if done >= steps:
                break
    timings["train"] = round(time.perf_counter() - t_train, 1)
    t_phase = time.perf_counter()
    # both losses in float32, the precision the conversion starts from: under bf16 autocast the unmerged adapter's
    # held-out loss was 0.916 where the merged float32 model's is 0.859 (the real 0.5B model, 2 held-out chats)
    new_loss = reply_loss(model, batches(held_rows), device, bf16=False) if held_rows else None
    timings["heldout_loss"] = round(timings["heldout_loss"] + time.perf_counter() - t_phase, 1)  # both models

    t_phase = time.perf_counter()
    staging.mkdir(parents=True)
    model.save_pretrained(staging / ADAPTER)  # the adapter alone: adapter_config.json + adapter_model.safetensors
    dense = _dense_folder(staging)
    merged = model.merge_and_unload()
    merged.save_pretrained(dense)
    del model, merged, optimizer
    gc.collect()
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy(base / name, dense / name)
    logger.info("converting the merged decoder for CTranslate2")
    hf_to_ct2(dense, staging / "ct2")
    shutil.rmtree(dense, ignore_errors=True)
    timings["merge_and_convert"] = round(time.perf_counter() - t_phase, 1)
    logger.info("phases (s): %s", timings)
    return {"parent_loss": parent_loss, "new_loss": new_loss, "steps": steps, "timings": timings,
            "trainable_parameters": trainable, "device": device}


def draft_scores(folder: Path, examples: list[FeedbackExample], cfg: DecoderRetrainConfig,
                 cache: Path | None = None) -> dict | None:
    """Grounding and span keeping of the drafts the decoder in ``folder`` (holding ``ct2/``) writes for the first
    ``cfg.max_eval_drafts`` answerable ``examples``, prompted as at answer time; None when there is none."""
    chosen = [ex for ex in examples if not ex.is_impossible][: cfg.max_eval_drafts]
    if not chosen:
        return None
    decoder = GenerativeDecoder(cache, model=cfg.model, model_folder=folder,
                                config=DecoderConfig(max_new_tokens=cfg.draft_tokens, seed=cfg.seed))
    grounding, kept = 0.0, 0
    for ex in chosen:
        _, shown = example_passages(ex)
        draft = "".join(piece.text for piece in decoder.answer(ex.question, shown, ex.history)).strip()
        grounding += support(draft, [p.text for p in shown])
        kept += contains_span(draft, ex.answer_text)
    logger.info("%s: %d drafts, grounding %.3f, span kept %d", folder.name, len(chosen), grounding / len(chosen), kept)
    return {"grounding": round(grounding / len(chosen), 4), "span_kept": round(kept / len(chosen), 4),
            "drafts": len(chosen)}


def decide_decoder(parent: dict, new: dict) -> tuple[bool, str]:
    """Promote when the held-out reply loss is lower and grounding and span keeping are not worse; the reason says
    the numbers. ``parent`` and ``new`` hold ``heldout_loss``, ``grounding`` and ``span_kept`` (None: not measured)."""
    p_loss, n_loss = parent.get("heldout_loss"), new.get("heldout_loss")
    if p_loss is None or n_loss is None:
        return False, "no held-out examples to compare on yet"
    numbers = [f"held-out reply loss {p_loss:.3f} → {n_loss:.3f}"]
    worse = [] if n_loss < p_loss else ["the loss is not lower"]
    for key, label, fmt in (("grounding", "grounding", "{:.2f}"), ("span_kept", "span kept", "{:.0%}")):
        p, n = parent.get(key), new.get(key)
        if p is None or n is None:
            continue
        numbers.append(f"{label} {fmt.format(p)} → {fmt.format(n)}")
        if n < p:
            worse.append(f"{label} is worse")
    if worse:
        return False, f"{'; '.join(worse)}: " + ", ".join(numbers)
    return True, ", ".join(numbers)
