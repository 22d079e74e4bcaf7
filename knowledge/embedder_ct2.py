"""The embedder on CTranslate2 int8: the packaged sentence-transformers model, converted once into a cache folder.

    <cache>/embedder-<name>-ct2-int8/    CTranslate2 weights (int8) + chatqa-embedder.json (what it was built from)

``<cache>`` is ``$CHATQA_CACHE_DIR``, else ``~/.cache/chatqa`` (as for the decoder, chatqa/models/conversion.py).
The folder is pinned to the source: its manifest records the sha256 of the model's weights and config, the
ctranslate2 version and the format; when any differs from what is installed, the folder is converted again. The
conversion writes beside its target and renames it into place, under a file lock (another process converting the
same model is waited for). Nothing converted is ever committed to the repository.

Only models the conversion reproduces are accepted: a BERT encoder followed by mean pooling and normalisation (what
all-MiniLM-L6-v2 is). Anything else, a missing ctranslate2, or a failed conversion raises `Ct2Unavailable`, and
`Embedder` falls back to sentence-transformers on torch.

On the 13 SQuAD dev articles' 772 passages, int8 vectors have a mean cosine of 0.997 to the fp32 ones (see README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from knowledge.cache import conversion_lock, default_cache_dir

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the conversion changes, so that old folders are converted again
MANIFEST = "chatqa-embedder.json"
QUANTIZATION = "int8"
SOURCE_FILES = ("config.json", "model.safetensors", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json")


class Ct2Unavailable(RuntimeError):
    """The CTranslate2 embedder cannot be used here (no ctranslate2, an unsupported model, a failed conversion)."""


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise Ct2Unavailable(f"cannot read {path} ({e})") from e


def check_supported(model_path: Path) -> None:
    """Raise Ct2Unavailable unless `model_path` is a BERT encoder + mean pooling + normalisation."""
    modules = _read_json(model_path / "modules.json")
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules] if isinstance(modules, list) else []
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        raise Ct2Unavailable(f"{model_path.name}: modules {kinds} are not Transformer, Pooling, Normalize")
    pooling = _read_json(model_path / "1_Pooling" / "config.json")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True)  # type: ignore[union-attr]
    if modes != ["pooling_mode_mean_tokens"]:
        raise Ct2Unavailable(f"{model_path.name}: pooling {modes} is not mean pooling")
    config = _read_json(model_path / "config.json")
    if config.get("architectures") != ["BertModel"]:  # type: ignore[union-attr]
        raise Ct2Unavailable(f"{model_path.name}: architecture {config.get('architectures')} is not BertModel")  # type: ignore[union-attr]


def source_fingerprint(model_path: Path) -> str:
    """sha256 over the model's weights and configuration files (names and contents)."""
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        path = model_path / name
        if not path.is_file():
            raise Ct2Unavailable(f"{model_path.name}: {name} is missing")
        digest.update(name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _manifest(model_path: Path) -> dict:
    import ctranslate2

    return {"format": FORMAT, "source_sha256": source_fingerprint(model_path), "ctranslate2": ctranslate2.__version__,
            "quantization": QUANTIZATION}


def _is_current(folder: Path, manifest: dict) -> bool:
    try:
        saved = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return saved == manifest and (folder / "model.bin").is_file()


def prepare(model_path: Path, cache_dir: Path) -> Path:
    """The converted folder for `model_path` in `cache_dir`, converted first if it is missing or out of date."""
    check_supported(model_path)
    manifest = _manifest(model_path)
    folder = Path(cache_dir) / f"embedder-{model_path.name}-ct2-{QUANTIZATION}"
    if _is_current(folder, manifest):
        return folder
    with conversion_lock(folder):
        if not _is_current(folder, manifest):  # another process may have converted it meanwhile
            _convert(model_path, folder, manifest)
    return folder


def _convert(model_path: Path, folder: Path, manifest: dict) -> None:
    from ctranslate2.converters import TransformersConverter

    logger.info("converting the embedder %s for CTranslate2 (once) into %s", model_path.name, folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        TransformersConverter(str(model_path)).convert(str(tmp), quantization=QUANTIZATION, force=True)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)  # out of date or incomplete
        os.replace(tmp, folder)
    except Exception as e:  # a converter's failure on this model: torch still embeds it
        raise Ct2Unavailable(f"could not convert {model_path.name} for CTranslate2 ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Ct2Embedder:
    """Tokenise with the model's own (fast) tokenizer, run the int8 encoder, mean-pool, L2-normalise."""

    def __init__(self, model_path: Path, cache_dir: Path | None = None, threads: int = 0):
        try:
            import ctranslate2
        except ImportError as e:
            raise Ct2Unavailable("the ctranslate2 package is missing") from e
        from transformers import AutoTokenizer

        folder = prepare(Path(model_path), default_cache_dir() if cache_dir is None else Path(cache_dir))
        # Batches run side by side, one core each (inter_threads), rather than one batch across all cores: on the
        # 2-core CPU the articles' passages embed ~25% faster so (README, ingestion speed).
        self.workers = max(1, threads or os.cpu_count() or 1)
        try:
            self.encoder = ctranslate2.Encoder(str(folder), device="cpu", compute_type=QUANTIZATION,
                                               inter_threads=self.workers, intra_threads=1)
        except (RuntimeError, ValueError) as e:
            raise Ct2Unavailable(f"could not load {folder} ({e})") from e
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        self.max_seq_length = int(_read_json(Path(model_path) / "sentence_bert_config.json")["max_seq_length"])  # type: ignore[index]
        self.dim = int(_read_json(Path(model_path) / "config.json")["hidden_size"])  # type: ignore[index]
        self.folder = folder
        # A fast tokenizer called from two threads at once (ingestion and a search) can raise "Already borrowed".
        self._tokenizer_lock = threading.Lock()
        self._workers_pool: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._workers_pool is None:
            self._workers_pool = ThreadPoolExecutor(self.workers, thread_name_prefix="chatqa-embed")
        return self._workers_pool

    def embed(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """(len(texts), dim) float32, unit length; texts are batched in order of length, so padding stays small."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with self._tokenizer_lock:
            ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length, verbose=False)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

        def pooled(rows: list[int]) -> tuple[list[int], np.ndarray]:
            batch = [ids[i] for i in rows]
            hidden = np.asarray(self.encoder.forward_batch(batch).last_hidden_state, dtype=np.float32)
            lengths = np.array([len(x) for x in batch])
            mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
            return rows, np.einsum("bsd,bs->bd", hidden, mask) / lengths[:, None]

        if len(batches) == 1 or self.workers == 1:
            done = map(pooled, batches)
        else:
            done = self._pool().map(pooled, batches)
        for rows, vectors in done:
            out[rows] = vectors
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)
