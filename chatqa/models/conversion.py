"""Converting a packaged GGUF decoder once: GGUF → dense transformers folder → CTranslate2 int8.

    <cache>/decoder-<name>/hf/    float32 safetensors + tokenizer: what LoRA fine-tuning starts from
    <cache>/decoder-<name>/ct2/   CTranslate2 int8 weights + tokenizer: what answers are generated with

``<cache>`` is ``$CHATQA_CACHE_DIR``, else ``~/.cache/chatqa``: shared by every data directory of the user, since
the conversion takes minutes and 3 GB. Retrained versions live in each data directory's own ``models/decoder/``.

Each step writes beside its target and renames into place, so an interrupted conversion resumes from the last
finished step and never leaves a folder that looks complete but is not. The joined GGUF file is deleted once the
transformers folder exists (it is only an intermediate; the packages still hold the parts).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatqa.models.sources import DecoderUnavailable, PackagedGguf, join_parts
from knowledge.cache import conversion_lock

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]  # receives a short line for the app's status, e.g. "joining the weights: 40%"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")


def is_hf_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file() and any(
        (folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")
    )


def is_ct2_folder(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("model.bin", "config.json", "tokenizer.json"))


def _clear_quantizer(model: Any) -> None:
    """Forget that ``model`` came from a GGUF file (its weights are dense), so that ``save_pretrained`` works."""
    for attr in ("hf_quantizer", "quantization_method"):
        vars(model).pop(attr, None)
    model.is_quantized = False
    for config in {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values():
        vars(config).pop("quantization_config", None)
        config._is_quantized = False


def _into_place(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)  # an incomplete folder (complete ones are never converted again)
    os.replace(tmp, target)


def gguf_to_hf(gguf: Path, target: Path) -> Path:
    """Dequantise ``gguf`` into a transformers folder at ``target`` (float32 safetensors + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        kwargs = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        # dequantize=True: dense weights (packed GGUF layers can neither be fine-tuned nor saved); transformers 5
        # still marks the model as quantised, so save_pretrained refuses until _clear_quantizer forgets it
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        _clear_quantizer(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _into_place(tmp, target)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
        raise DecoderUnavailable(f"could not convert {gguf.name} into a transformers model ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def hf_to_ct2(hf_folder: Path, target: Path, quantization: str = "int8") -> Path:
    """Convert a transformers causal LM folder into a CTranslate2 folder (with its tokenizer files) at ``target``."""
    try:
        from ctranslate2.converters import TransformersConverter
    except ImportError as e:
        raise DecoderUnavailable("the ctranslate2 package is missing: run `make setup`") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        files = [name for name in TOKENIZER_FILES if (hf_folder / name).is_file()]
        TransformersConverter(str(hf_folder), copy_files=files, low_cpu_mem_usage=True).convert(
            str(tmp), quantization=quantization, force=True
        )
        _into_place(tmp, target)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise DecoderUnavailable(f"could not convert {hf_folder} for CTranslate2 ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def prepare_decoder(source: PackagedGguf, cache_dir: Path, progress: Progress | None = None) -> Path:
    """The decoder's folder in ``cache_dir``, converted from its packages first if needed (each step once; another
    process converting the same model at the same time is waited for)."""
    folder = Path(cache_dir) / source.folder_name
    if is_ct2_folder(folder / "ct2"):
        return folder
    with conversion_lock(folder):
        _convert(source, folder, progress if progress is not None else (lambda line: logger.info("%s", line)))
    return folder


def _convert(source: PackagedGguf, folder: Path, say: Progress) -> None:
    hf, ct2 = folder / "hf", folder / "ct2"
    if is_ct2_folder(ct2):
        return
    if not is_hf_folder(hf):
        parts = source.part_paths()
        gguf = folder / f"{source.name}.gguf"
        last = [-1]

        def joined(share: float) -> None:
            if int(share * 10) != last[0]:
                last[0] = int(share * 10)
                say(f"Preparing the decoder (once): checking its weights… {share:.0%}")

        join_parts(parts, gguf, source.sha256, progress=joined)
        say("Preparing the decoder (once): unpacking the weights… (about a minute)")
        try:
            gguf_to_hf(gguf, hf)
        finally:
            gguf.unlink(missing_ok=True)
    say("Preparing the decoder (once): converting it for fast generation… (about 30 s)")
    hf_to_ct2(hf, ct2)
