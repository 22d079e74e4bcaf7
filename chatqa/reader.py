"""The extractive reader: finds the answer span of a question in retrieved passages, or abstains.

A checkpoint is a folder holding a transformers question-answering model (``config.json``, weights), its
tokenizer files and ``chatqa_reader.json`` (:class:`ReaderSettings`: window sizes, decoding limits and the
calibrated no-answer threshold). ``finetune/`` writes such folders with :func:`save_reader_settings`.

:class:`ExtractiveReader` stores its configuration in ``__init__`` and loads the model in :meth:`warm_up`
(called by the first :meth:`~ExtractiveReader.read`). Windows are prepared and spans decoded by
:mod:`chatqa.features`, the code the training uses too.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatqa.features import Features, Span, best_answer, collate, decode_spans, prepare_features
from knowledge.errors import ChatQAError
from knowledge.files import atomic_write

logger = logging.getLogger(__name__)

READER_CONFIG = "chatqa_reader.json"
DEFAULT_READER_DIR = Path(__file__).resolve().parent / "models" / "reader"

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
_TRAIN_HINT = "train one with `python -m finetune reader ...` or point --checkpoint at a reader checkpoint folder"


class ReaderUnavailable(ChatQAError):
    """The reader checkpoint is missing, incomplete or unreadable."""


@dataclass(frozen=True)
class ReaderSettings:
    """What a checkpoint stores in ``chatqa_reader.json``; every field is optional there."""

    max_length: int = 384  # tokens per window, question and special tokens included
    stride: int = 128  # tokens shared by consecutive windows of a long passage
    max_question_tokens: int = 64  # longer questions are cut
    max_answer_length: int = 30  # tokens
    n_best: int = 20  # candidate start/end positions per window
    no_answer_threshold: float = 0.0  # abstain when null_score - best_span_score > threshold (SQuAD 2.0-calibrated)
    # The chat engine's threshold, for questions read against retrieved passages (None: no_answer_threshold).
    # SQuAD 2.0's adversarial unanswerables need a far stricter threshold than "is it in my documents at all?".
    chat_threshold: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_length", "stride", "max_question_tokens", "max_answer_length", "n_best"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ReaderSettings.{name} must be an int, got {value!r}.")
            if value < (0 if name == "stride" else 1):
                raise ValueError(f"ReaderSettings.{name} must be >= {0 if name == 'stride' else 1}, got {value}.")
        if self.max_question_tokens >= self.max_length:
            raise ValueError(
                f"ReaderSettings.max_question_tokens ({self.max_question_tokens}) must be < max_length "
                f"({self.max_length})."
            )
        threshold = self.no_answer_threshold
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or math.isnan(threshold):
            raise TypeError(f"ReaderSettings.no_answer_threshold must be a number, got {threshold!r}.")
        object.__setattr__(self, "no_answer_threshold", float(threshold))


def save_reader_settings(folder: str | Path, settings: ReaderSettings, **extra: Any) -> Path:
    """Write ``settings`` (and any JSON-serialisable ``extra`` keys, e.g. metrics) to ``folder/chatqa_reader.json``.

    The file is replaced atomically. ``extra`` may not reuse a settings field name. Returns the file's path.
    """
    fields = dataclasses.asdict(settings)
    clash = sorted(set(extra) & set(fields))
    if clash:
        raise ValueError(f"extra keys {clash} clash with ReaderSettings fields; pass them in settings instead.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write(folder / READER_CONFIG, json.dumps({**fields, **extra}, indent=2, ensure_ascii=False) + "\n")


def load_reader_settings(folder: str | Path) -> ReaderSettings:
    """Return the :class:`ReaderSettings` of ``folder/chatqa_reader.json``.

    Missing keys take the defaults and unknown keys are ignored; a folder without the file gives the defaults.
    Raises :class:`ReaderUnavailable` naming the file when it is not valid JSON or holds invalid values.
    """
    path = Path(folder) / READER_CONFIG
    if not path.is_file():
        logger.info("%s not found: default reader settings", path)
        return ReaderSettings()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReaderUnavailable(f"{path}: not a readable JSON file ({e}); {_TRAIN_HINT}") from None
    if not isinstance(raw, dict):
        raise ReaderUnavailable(f"{path}: expected a JSON object of reader settings")
    known = {f.name for f in dataclasses.fields(ReaderSettings)}
    try:
        return ReaderSettings(**{k: v for k, v in raw.items() if k in known})
    except (TypeError, ValueError) as e:
        raise ReaderUnavailable(f"{path}: {e}") from None


@dataclass(frozen=True)
class ReaderAnswer:
    """A span of one passage."""

    passage_index: int  # index into the passages given to read()
    start: int  # character offset into that passage's text
    end: int  # exclusive
    text: str  # passages[passage_index][start:end]
    score: float  # start + end logit
    no_answer_score: float  # that passage's null ([CLS]) score


@dataclass(frozen=True)
class ReaderResult:
    """The reader's answers to one question."""

    answers: list[ReaderAnswer]  # best first, across all passages, at most top_k
    no_answer_score: float  # min over all windows of all passages of the [CLS] score; math.inf without any
    abstained: bool  # no answers, or no_answer_score - answers[0].score > threshold
    seconds: float  # wall time of the read()/read_batch() call that produced it

    @property
    def best(self) -> ReaderAnswer | None:
        """Return the best answer, or ``None`` when the reader abstained."""
        return None if self.abstained or not self.answers else self.answers[0]


class ExtractiveReader:
    """Reads passages with a question-answering model and returns ranked character spans.

    ``checkpoint`` is a reader folder (default :data:`DEFAULT_READER_DIR`); ``device`` goes through
    :func:`knowledge.device.pick_device`; ``max_batch_size`` windows go through the model at once;
    ``threshold`` overrides the checkpoint's ``no_answer_threshold``; ``bf16`` forces bf16 autocast on or off
    (``None``: on for CUDA and CPUs with native bf16). Nothing is loaded until :meth:`warm_up`.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        device: str | None = None,
        max_batch_size: int = 16,
        threshold: float | None = None,
        bf16: bool | None = None,
    ):
        if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
        if threshold is not None and (
            not isinstance(threshold, int | float) or isinstance(threshold, bool) or math.isnan(threshold)
        ):
            raise ValueError(f"threshold must be a number (not NaN) or None, got {threshold!r}")
        if bf16 is not None and not isinstance(bf16, bool):
            raise ValueError(f"bf16 must be True, False or None, got {bf16!r}")
        self._checkpoint = Path(checkpoint) if checkpoint is not None else DEFAULT_READER_DIR
        self._device_choice = device
        self.max_batch_size = max_batch_size
        self._threshold = None if threshold is None else float(threshold)
        self.bf16 = bf16
        self._settings: ReaderSettings | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: str | None = None

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, settings: ReaderSettings, *, max_batch_size: int = 32,
        bf16: bool | None = None,
    ) -> ExtractiveReader:
        """A reader over a model already in memory, on the model's device (training evaluates with this)."""
        reader = cls(Path("<in memory>"), max_batch_size=max_batch_size, bf16=bf16)
        reader._model, reader._tokenizer, reader._settings = model, tokenizer, settings
        reader._device = str(next(model.parameters()).device)
        return reader

    def __repr__(self) -> str:
        return f"ExtractiveReader({str(self._checkpoint)!r}, loaded={self._model is not None})"

    # -- configuration ----------------------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        """Return the checkpoint folder."""
        return self._checkpoint

    @property
    def settings(self) -> ReaderSettings:
        """Return the checkpoint's settings (reads ``chatqa_reader.json`` on first use, not the model)."""
        if self._settings is None:
            self._settings = load_reader_settings(self._checkpoint)
        return self._settings

    @property
    def threshold(self) -> float:
        """Return the constructor's threshold if one was given, else the checkpoint's ``no_answer_threshold``."""
        return self._threshold if self._threshold is not None else self.settings.no_answer_threshold

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> str:
        """Return the device the model runs on (loads the model)."""
        self.warm_up()
        assert self._device is not None
        return self._device

    @property
    def tokenizer(self) -> Any:
        """Return the checkpoint's (fast) tokenizer (loads the model)."""
        self.warm_up()
        return self._tokenizer

    # -- loading -------------------------------------------------------------------------------------------
    def _check_folder(self) -> None:
        folder = self._checkpoint
        if not folder.is_dir():
            raise ReaderUnavailable(f"no reader checkpoint at {folder}: {_TRAIN_HINT}")
        missing = []
        if not (folder / "config.json").is_file():
            missing.append("config.json")
        if not any((folder / name).is_file() for name in _WEIGHT_FILES):
            missing.append("model weights (model.safetensors)")
        if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            missing.append("tokenizer files (tokenizer.json)")
        if missing:
            raise ReaderUnavailable(
                f"reader checkpoint {folder} is incomplete: missing {', '.join(missing)}; {_TRAIN_HINT}"
            )

    def warm_up(self) -> None:
        """Load the tokenizer, the model (float32, eval mode, on the device) and the settings. Idempotent.

        Raises :class:`ReaderUnavailable` when the folder is missing, incomplete or not loadable.
        """
        if self._model is not None:
            return
        self._check_folder()
        settings = load_reader_settings(self._checkpoint)
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        from knowledge.device import pick_device

        device = pick_device(self._device_choice)
        folder = str(self._checkpoint)
        logger.info("loading reader from %s on %s", folder, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForQuestionAnswering.from_pretrained(
                folder, local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError, KeyError) as e:
            raise ReaderUnavailable(f"reader checkpoint {folder} could not be loaded ({e}); {_TRAIN_HINT}") from e
        if not getattr(tokenizer, "is_fast", False):
            raise ReaderUnavailable(
                f"reader checkpoint {folder} has no fast tokenizer (tokenizer.json); save it with a fast tokenizer"
            )
        model.eval()
        model.to(device)
        self._tokenizer, self._device, self._settings = tokenizer, device, settings
        self._model = model

    # -- reading ---------------------------------------------------------------------------------------------
    def read(self, question: str, passages: Sequence[str], *, top_k: int = 5) -> ReaderResult:
        """Return the best ``top_k`` spans for ``question`` across ``passages`` and whether to abstain.

        A blank question or no passages gives an empty, abstained result without loading the model.
        """
        return self.read_batch([question], [passages], top_k=top_k)[0]

    def read_batch(
        self, questions: Sequence[str], passages: Sequence[Sequence[str]], *, top_k: int = 5
    ) -> list[ReaderResult]:
        """Return one :class:`ReaderResult` per question; ``passages[i]`` are the passages of ``questions[i]``.

        All (question, passage) pairs are windowed together and go through the model in batches of
        ``max_batch_size`` windows. Empty (or white-space) passages are skipped; ``passage_index`` still refers
        to the caller's lists. Every result's ``seconds`` is the wall time of this whole call.
        """
        t0 = time.perf_counter()
        self._check_inputs(questions, passages, top_k)
        pairs: list[tuple[int, int]] = []  # (question index, passage index) of each pair
        for qi, (question, texts) in enumerate(zip(questions, passages, strict=True)):
            if not question.strip():
                continue
            pairs.extend((qi, pi) for pi, text in enumerate(texts) if text.strip())

        spans: dict[int, list[Span]] = {}
        nulls: dict[int, float] = {}
        if pairs:
            self.warm_up()
            settings = self.settings
            features = prepare_features(
                self._tokenizer,
                [questions[qi] for qi, _ in pairs],
                [passages[qi][pi] for qi, pi in pairs],
                max_length=settings.max_length,
                stride=settings.stride,
                max_question_tokens=settings.max_question_tokens,
            )
            start_logits, end_logits = self._logits(features)
            spans, nulls = decode_spans(
                start_logits,
                end_logits,
                features,
                n_best=settings.n_best,
                max_answer_length=settings.max_answer_length,
            )
            logger.debug("read %d questions, %d pairs, %d windows", len(questions), len(pairs), len(features))

        by_question: list[list[int]] = [[] for _ in questions]
        for pair, (qi, _) in enumerate(pairs):
            by_question[qi].append(pair)
        threshold = self.threshold if pairs else math.inf
        seconds = time.perf_counter() - t0
        results = []
        for qi, pair_ids in enumerate(by_question):
            pooled = sorted(
                (span for pair in pair_ids for span in spans.get(pair, [])),
                key=lambda s: (-s.score, pairs[s.example_index][1], s.start, s.end),
            )
            answers: list[ReaderAnswer] = []
            seen: set[tuple[int, int, int]] = set()
            for span in pooled:
                pi = pairs[span.example_index][1]
                if (pi, span.start, span.end) in seen:
                    continue
                seen.add((pi, span.start, span.end))
                text = passages[qi][pi]
                answers.append(
                    ReaderAnswer(
                        pi, span.start, span.end, text[span.start : span.end], span.score, nulls[span.example_index]
                    )
                )
                if len(answers) == top_k:
                    break
            null = min((nulls[p] for p in pair_ids if p in nulls), default=math.inf)
            abstained = best_answer(pooled, null, threshold) is None
            results.append(ReaderResult(answers, null, abstained, seconds))
        return results

    @staticmethod
    def _check_inputs(questions: Sequence[str], passages: Sequence[Sequence[str]], top_k: int) -> None:
        if isinstance(questions, str) or isinstance(passages, str):
            raise TypeError("read_batch takes a list of questions and a list of passage lists, not a string.")
        if len(questions) != len(passages):
            raise ValueError(
                f"questions and passages must have the same length; got {len(questions)} questions and "
                f"{len(passages)} passage lists."
            )
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
        for qi, (question, texts) in enumerate(zip(questions, passages, strict=True)):
            if not isinstance(question, str):
                raise TypeError(f"questions[{qi}] must be a str, got {type(question).__name__}.")
            if isinstance(texts, str):
                raise TypeError(f"passages[{qi}] must be a list of passages, not a single string.")
            for pi, text in enumerate(texts):
                if not isinstance(text, str):
                    raise TypeError(f"passages[{qi}][{pi}] must be a str, got {type(text).__name__}.")

    def _logits(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        """Return float32 start and end logits of shape ``(len(features), longest window)``.

        Windows are sorted by length so that each batch pads little; rows come back in the features' order.
        Positions past a window's own length hold ``-inf`` (decode_spans ignores them).
        """
        import torch

        from knowledge.device import autocast

        model, device = self._model, self._device
        assert device is not None
        lengths = [len(ids) for ids in features.input_ids]
        width = max(lengths)
        starts = np.full((len(features), width), -np.inf, dtype=np.float32)
        ends = np.full((len(features), width), -np.inf, dtype=np.float32)
        order = sorted(range(len(features)), key=lambda w: lengths[w])
        pad_id = self._tokenizer.pad_token_id
        pad_id = 0 if pad_id is None else int(pad_id)
        accepted = _forward_arguments(model)
        with torch.inference_mode(), autocast(device, self.bf16):
            for first in range(0, len(order), self.max_batch_size):
                rows = order[first : first + self.max_batch_size]
                batch = collate(features, rows, pad_id)
                inputs = {k: v.to(device) for k, v in batch.items() if accepted is None or k in accepted}
                out = model(**inputs)
                start = out.start_logits.float().cpu().numpy()
                end = out.end_logits.float().cpu().numpy()
                if start.shape != (len(rows), batch["input_ids"].shape[1]) or end.shape != start.shape:
                    raise ValueError(
                        f"the model returned logits of shapes {start.shape} and {end.shape} for a batch of "
                        f"{tuple(batch['input_ids'].shape)}; expected one logit per token."
                    )
                for i, w in enumerate(rows):
                    starts[w, : lengths[w]] = start[i, : lengths[w]]
                    ends[w, : lengths[w]] = end[i, : lengths[w]]
        return starts, ends


def _forward_arguments(model: Any) -> set[str] | None:
    """Return the keyword names ``model.forward`` accepts, or ``None`` when it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}
