"""Fine-tune the extractive reader (a BERT-style encoder with a start/end span head).

    python -m finetune reader --train ../shared/data/qa/train/squad-v1.1-train.json \\
        --eval ../shared/data/qa/dev/squad-v1.1-dev-13art.json --out runs/reader

The run directory holds `train.log`, `state/` (the latest resumable checkpoint: model, optimizer, scheduler, RNG,
step), `best/` (the best weights by eval F1) and, at the end, `model/`: fp16 safetensors, tokenizer,
`chatqa_reader.json` (window settings and the calibrated no-answer threshold) and a model card. Every folder is
written under a temporary name and renamed when complete, so an interrupted run never leaves a half-written model
where the app would load it; running the same command again resumes from `state/`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from chatqa.features import Features, collate, prepare_features
from finetune.data import NEGATIVE_KINDS, TrainExample, load_examples, with_negatives
from knowledge.device import cpu_supports_bf16
from knowledge.embedder import packaged_minilm_path

logger = logging.getLogger(__name__)


@dataclass
class ReaderTrainingConfig:
    train: list[str] = field(default_factory=list, metadata={"help": "SQuAD-format training files"})
    eval: str | None = field(default=None, metadata={"help": "SQuAD v1.1-format file for periodic evaluation"})
    calibrate: str | None = field(
        default=None, metadata={"help": "SQuAD 2.0 file whose questions calibrate the no-answer threshold"}
    )
    base: str | None = field(default=None, metadata={"help": "model folder to start from (default: packaged MiniLM)"})
    out: str = field(default="runs/reader", metadata={"help": "run directory"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the training windows"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate (AdamW)"})
    batch_size: int = field(default=32, metadata={"help": "windows per optimizer step (after accumulation)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    warmup: float = field(default=0.06, metadata={"help": "share of steps with linear warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/LayerNorm)"})
    max_length: int = field(default=256, metadata={"help": "tokens per window (question + context)"})
    stride: int = field(default=96, metadata={"help": "tokens shared by consecutive windows of a long context"})
    max_question_tokens: int = field(default=64, metadata={"help": "questions are cut to this many tokens"})
    negatives: float = field(default=0.3, metadata={"help": "built no-answer examples per positive example"})
    negative_kinds: list[str] = field(
        default_factory=lambda: list(NEGATIVE_KINDS), metadata={"help": "which no-answer examples to build"}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N examples (smoke runs)"})
    eval_samples: int = field(default=600, metadata={"help": "questions of --eval scored at each evaluation"})
    eval_every: int = field(default=500, metadata={"help": "optimizer steps between evaluations"})
    save_every: int = field(default=100, metadata={"help": "optimizer steps between resumable checkpoints"})
    patience: int = field(default=4, metadata={"help": "evaluations without improvement before stopping early"})
    log_every: int = field(default=20, metadata={"help": "optimizer steps between progress lines"})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: when the device supports it)"})
    freeze_embeddings: bool = field(default=True, metadata={"help": "keep the word-embedding matrix fixed"})
    seed: int = field(default=42, metadata={"help": "random seed"})


# -- batching ------------------------------------------------------------------------------------------------------
def length_bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of windows of similar length: shuffle, sort within pools of 50 batches, cut, shuffle."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool], key=lambda j: lengths[j])
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def build_features(examples: list[TrainExample], tokenizer, cfg: ReaderTrainingConfig) -> Features:
    return prepare_features(
        tokenizer,
        [ex.question for ex in examples],
        [ex.context for ex in examples],
        answers=[ex.answer for ex in examples],
        max_length=cfg.max_length,
        stride=cfg.stride,
        max_question_tokens=cfg.max_question_tokens,
    )


# -- checkpoints ---------------------------------------------------------------------------------------------------
@contextmanager
def training_log(folder: Path) -> Iterator[None]:
    """Meanwhile, the ``finetune`` loggers also write to ``folder/train.log`` (timestamped lines)."""
    handler = logging.FileHandler(folder / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("finetune")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a completely written folder into place (the old one is removed only after the new one exists)."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def save_model(model, tokenizer, folder: Path, *, fp16: bool, extra_files: dict[str, str] | None = None) -> None:
    """Write a loadable model folder atomically (temp folder + rename)."""
    import torch

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    if fp16:
        import copy

        to_save = copy.deepcopy(model).to(torch.float16)
    to_save.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text, encoding="utf-8")
    replace_dir(tmp, folder)


# -- training ------------------------------------------------------------------------------------------------------
class ReaderTrainer:
    """Trains on ``cfg.train``'s files, or on ``examples`` when given (retraining from the conversation log)."""

    def __init__(self, cfg: ReaderTrainingConfig, examples: list[TrainExample] | None = None):
        if not cfg.train and examples is None:
            raise ValueError("at least one --train file is needed")
        if cfg.batch_size % cfg.grad_accum:
            raise ValueError("batch_size must be a multiple of grad_accum")
        self.cfg = cfg
        self.examples = examples
        self.out = Path(cfg.out)
        self.state: dict = {}

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        with training_log(self.out):
            try:
                return self._run()
            finally:
                _reset_accelerate()

    def _run(self) -> Path:
        import torch
        from accelerate import Accelerator
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer, get_linear_schedule_with_warmup

        cfg = self.cfg
        (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        bf16 = cfg.bf16 if cfg.bf16 is not None else (torch.cuda.is_available() or cpu_supports_bf16())
        accelerator = Accelerator(
            mixed_precision="bf16" if bf16 else "no", gradient_accumulation_steps=cfg.grad_accum
        )
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        base = Path(cfg.base) if cfg.base else packaged_minilm_path()
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        # float32 weights whatever the checkpoint stores (transformers 5 would keep a shipped fp16 model in fp16)
        model = AutoModelForQuestionAnswering.from_pretrained(base, local_files_only=True, dtype=torch.float32)
        if cfg.freeze_embeddings:
            model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)

        t0 = time.perf_counter()
        if self.examples is not None:
            examples = list(self.examples)
        else:
            examples = load_examples(cfg.train)
            if cfg.max_train_samples is not None:
                examples = examples[: cfg.max_train_samples]
            examples = with_negatives(examples, cfg.negatives, seed=cfg.seed, kinds=cfg.negative_kinds)
        features = build_features(examples, tokenizer, cfg)
        lengths = [len(ids) for ids in features.input_ids]
        logger.info(
            "%d examples → %d windows (mean %.0f tokens) in %.0fs",
            len(examples), len(features), np.mean(lengths), time.perf_counter() - t0,
        )

        micro = cfg.batch_size // cfg.grad_accum
        steps_per_epoch = math.ceil(math.ceil(len(features) / cfg.batch_size) / accelerator.num_processes)
        total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
        decay = [p for n, p in model.named_parameters() if p.requires_grad and not _no_decay(n)]
        no_decay = [p for n, p in model.named_parameters() if p.requires_grad and _no_decay(n)]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * total_steps), total_steps)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

        state = {"step": 0, "best_f1": -1.0, "bad_evals": 0, "curve": [], "train_seconds": 0.0}
        state_dir = self.out / "state"
        if (state_dir / "trainer_state.json").exists():
            accelerator.load_state(str(state_dir))
            state = json.loads((state_dir / "trainer_state.json").read_text())
            logger.info("resumed from %s at step %d", state_dir, state["step"])
        self.state = state

        model.train()
        step_t0, window_count = time.perf_counter(), 0
        stop = state["step"] >= total_steps
        while not stop:
            epoch = state["step"] // steps_per_epoch
            batches = length_bucketed_batches(lengths, cfg.batch_size, random.Random(cfg.seed + epoch))
            batches = batches[accelerator.process_index :: accelerator.num_processes]
            for batch in batches[state["step"] - epoch * steps_per_epoch :]:
                loss_sum = 0.0
                for k in range(0, len(batch), micro):
                    inputs = {
                        key: t.to(accelerator.device)
                        for key, t in collate(features, batch[k : k + micro], tokenizer.pad_token_id).items()
                    }
                    with accelerator.accumulate(model):
                        loss = model(**inputs).loss
                        accelerator.backward(loss)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                    loss_sum += loss.item() / cfg.grad_accum
                state["step"] += 1
                state.setdefault("losses", []).append(round(loss_sum, 4))
                window_count += len(batch)
                step = state["step"]
                if step % cfg.log_every == 0 or step == 1:
                    elapsed = time.perf_counter() - step_t0
                    state["train_seconds"] += elapsed
                    rate = window_count / elapsed
                    logger.info(
                        "step %d/%d epoch %.2f loss %.3f lr %.2e %.1f windows/s eta %.0f min",
                        step, total_steps, step / steps_per_epoch, loss_sum, scheduler.get_last_lr()[0], rate,
                        (total_steps - step) * cfg.batch_size / rate / 60,
                    )
                    step_t0, window_count = time.perf_counter(), 0
                due = cfg.eval and (step % cfg.eval_every == 0 or step == total_steps)
                if due and self._evaluate(accelerator, model, tokenizer, state):
                    stop = True  # no improvement for `patience` evaluations
                if step % cfg.save_every == 0 or step == total_steps or stop:
                    self._save_state(accelerator, state)
                if step >= total_steps or stop:
                    stop = True
                    break

        best = self.out / "best"
        final_model = accelerator.unwrap_model(model)
        if best.exists():
            final_model = AutoModelForQuestionAnswering.from_pretrained(best, local_files_only=True, dtype=torch.float32)
        return self._finish(final_model, tokenizer, state)

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _save_state(self, accelerator, state: dict) -> None:
        tmp = self.out / "state.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.save_state(str(tmp))
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        replace_dir(tmp, self.out / "state")

    def _reader(self, model, tokenizer, threshold: float = 0.0):
        from chatqa.reader import ExtractiveReader, ReaderSettings

        settings = ReaderSettings(
            max_length=self.cfg.max_length, stride=self.cfg.stride,
            max_question_tokens=self.cfg.max_question_tokens, no_answer_threshold=threshold,
        )
        return ExtractiveReader.from_model(model, tokenizer, settings)

    def _evaluate(self, accelerator, model, tokenizer, state: dict) -> bool:
        """Score the eval sample, keep the best weights; True when patience has run out."""
        from chatqa.evaluation import evaluate_reader

        unwrapped = accelerator.unwrap_model(model)
        unwrapped.eval()
        report = evaluate_reader(self.cfg.eval, reader=self._reader(unwrapped, tokenizer), limit=self.cfg.eval_samples)
        unwrapped.train()
        f1 = report["f1"]
        state["curve"].append(
            {"step": state["step"], "windows_seen": state["step"] * self.cfg.batch_size,
             "exact_match": report["exact_match"], "f1": f1}
        )
        logger.info("eval step %d: EM %.2f F1 %.2f (best %.2f)", state["step"], report["exact_match"], f1, state["best_f1"])
        if f1 > state["best_f1"]:
            state["best_f1"], state["bad_evals"] = f1, 0
            save_model(unwrapped, tokenizer, self.out / "best", fp16=False)
            return False
        state["bad_evals"] += 1
        return state["bad_evals"] >= self.cfg.patience

    def _finish(self, model, tokenizer, state: dict) -> Path:
        from chatqa.evaluation import calibrate_threshold

        model.eval()
        threshold, calibration = 0.0, {}
        if self.cfg.calibrate:
            threshold, calibration = calibrate_threshold(self.cfg.calibrate, self._reader(model, tokenizer))
            logger.info("no-answer threshold %.3f (%s)", threshold, calibration)
        from chatqa.reader import READER_CONFIG

        settings = {
            "max_length": self.cfg.max_length, "stride": self.cfg.stride,
            "max_question_tokens": self.cfg.max_question_tokens, "no_answer_threshold": threshold,
        }
        info = {"training": asdict(self.cfg), "steps": state["step"], "train_seconds": round(state["train_seconds"]),
                "curve": state["curve"], "calibration": calibration, "parent": parent_training(self.cfg.base)}
        save_model(
            model, tokenizer, self.out / "model", fp16=True,
            extra_files={READER_CONFIG: json.dumps(settings, indent=2), "training.json": json.dumps(info, indent=2)},
        )
        logger.info("model written to %s", self.out / "model")
        return self.out / "model"


def parent_training(base: str | Path | None) -> dict | None:
    """The training record (training.json) of the checkpoint a run starts from, its own parent inside; None for the
    packaged MiniLM or a checkpoint without one."""
    path = Path(base) / "training.json" if base else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name


def _reset_accelerate() -> None:
    """accelerate keeps one process-wide state; forget it so the next run in this process may choose another
    mixed precision (a retrain after a test run, the learning-loop benchmark's successive retrains)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
