"""LoRA on the decoder: the adapter settings, the reply-only training data, and rebuilding a version's weights.

A retrained decoder version keeps its LoRA adapter (``adapter/``, peft's format) beside the CTranslate2 folder it
answers with (``ct2/``). CTranslate2 weights are int8 and cannot be trained further, so a retrain from a retrained
version starts again from the packaged transformers folder (``<cache>/decoder-<name>/hf/``) and merges the adapters of
the version's lineage in order, oldest first (:func:`adapter_chain`, :func:`load_version`): the exact float weights
the parent was converted from, without storing a 2.5 GB dense copy per version.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatqa.registry import SHIPPED, ModelRegistry, ModelVersion
from knowledge.errors import ChatQAError

logger = logging.getLogger(__name__)

ADAPTER = "adapter"  # the adapter's folder inside a version folder
# Every linear projection of a Qwen2 block: attention (q, k, v, o) and MLP (gate, up, down). Adapting the MLP as well
# as attention is what makes low ranks work (QLoRA, Dettmers et al. 2023: all linear layers matter more than r).
QWEN2_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdapterChainBroken(ChatQAError):
    """A version's lineage cannot be rebuilt from the packaged model and LoRA adapters."""


def lora_config(r: int, alpha: int, dropout: float, targets: Sequence[str]) -> Any:
    """peft's LoraConfig for a causal LM (biases untouched)."""
    from peft import LoraConfig, TaskType

    if r < 1 or alpha < 1 or not 0 <= dropout < 1 or not targets:
        raise ValueError(f"LoRA needs r >= 1, alpha >= 1, 0 <= dropout < 1 and target modules: {r}, {alpha}, "
                         f"{dropout}, {list(targets)}")
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha, lora_dropout=dropout,
                      target_modules=list(targets), bias="none")


def is_adapter_folder(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() and any(
        (folder / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin"))


def adapter_chain(registry: ModelRegistry, version: ModelVersion | str, model: str) -> list[tuple[str, Path]]:
    """``(version id, adapter folder)`` of every retrain between the packaged model and ``version``, oldest first
    (empty for ``shipped``). Each must be a LoRA version of ``model``, else :class:`AdapterChainBroken`."""
    current = registry.get(version) if isinstance(version, str) else version
    chain: list[tuple[str, Path]] = []
    seen: set[str] = set()
    while current.id != SHIPPED:
        if current.id in seen:
            raise AdapterChainBroken(f"decoder version {current.id} is its own ancestor in {registry.path}")
        seen.add(current.id)
        folder = registry.checkpoint(current) / ADAPTER
        trained_on = current.training.get("model")
        if not is_adapter_folder(folder) or trained_on not in (None, model):
            why = f"was trained from {trained_on}" if trained_on not in (None, model) else f"has no LoRA adapter in {folder}"
            raise AdapterChainBroken(
                f"decoder version {current.id} {why}, so it cannot be retrained as {model}; make a LoRA version of "
                f"{model} (or shipped) active in the Models tab first")
        chain.append((current.id, folder))
        if current.parent is None:
            break
        current = registry.get(current.parent)
    return chain[::-1]


def load_version(base_hf: Path, chain: Sequence[tuple[str, Path]], device: str = "cpu") -> Any:
    """The float32 transformers model of a version: the packaged weights with each adapter of ``chain`` merged in
    order."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_hf, local_files_only=True, dtype=torch.float32).to(device)
    for version, folder in chain:
        logger.info("merging the adapter of %s", version)
        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    return model


def tokenize_record(tokenizer: Any, messages: list[dict], max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat and labels that score only the assistant's reply (-100 elsewhere). A chat longer
    than ``max_tokens`` is cut from the left: the reply and the passages and question just before it are kept."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ChatQAError("a training chat must end with the assistant's reply")
    prompt = _ids(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(messages, tokenize=True))
    if full[: len(prompt)] != prompt:
        raise ChatQAError("the chat template does not extend the prompt with the reply; cannot mask the prompt")
    labels = [-100] * len(prompt) + full[len(prompt) :]
    if len(full) > max_tokens:
        full, labels = full[-max_tokens:], labels[-max_tokens:]
    return full, labels


def _ids(out: Any) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def collate_chat(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Right-padded tensors of tokenized chats: input_ids, attention_mask, labels (-100 on padding)."""
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


def reply_loss(model: Any, batches: Sequence[dict], device: str = "cpu", bf16: bool | None = None) -> float:
    """Mean token loss of the replies (the labelled tokens) over ``batches``."""
    import torch

    from knowledge.device import autocast

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for inputs in batches:
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with autocast(device, bf16):
                logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            shift, labels = logits[:, :-1].float(), inputs["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shift.reshape(-1, shift.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += float(loss)
            count += int((labels != -100).sum())
    return total / max(count, 1)
