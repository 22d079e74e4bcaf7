from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_QA = REPO.parent / "shared" / "data" / "qa"


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


def shared_file(relative: str) -> Path:
    """A file of ../shared/data/qa, or skip the test when the shared data is not beside the repo."""
    path = SHARED_QA / relative
    if not path.exists():
        pytest.skip(f"shared QA data not found at {path}")
    return path


class WhitespaceTokenizer:
    """Mimics the part of a fast tokenizer's API the chunker uses: one token per word or punctuation mark."""

    _token = re.compile(r"\w+|[^\w\s]")

    def __call__(self, text, **_):
        return {"offset_mapping": [(m.start(), m.end()) for m in self._token.finditer(text)]}


class FakeEmbedder:
    """Hashed bag of words, normalised: texts sharing words are close. No model, microseconds per text."""

    name = "fake-bow"
    dim = 64
    max_tokens = 254

    def __init__(self):
        self.tokenizer = WhitespaceTokenizer()
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def embed(self, texts, *, show_progress: bool = False) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
                out[i, h % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture(scope="session")
def real_embedder():
    from knowledge.embedder import Embedder

    embedder = Embedder()
    embedder.warm_up()
    return embedder


@pytest.fixture
def fake_engine(tmp_path, fake_embedder):
    """A ChatEngine over `tmp_path / "data"`: a knowledge base of two small documents (Eiffel Tower, penguins), the
    fake reader of the engine tests, and a conversation log."""
    from chatqa.engine import ChatEngine
    from chatqa.log import ConversationLog
    from knowledge.base import KnowledgeBase
    from tests.chatqa.test_engine import EIFFEL, PENGUINS, FakeReader

    (tmp_path / "eiffel.txt").write_text(EIFFEL)
    (tmp_path / "penguins.txt").write_text(PENGUINS)
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder) as kb, ConversationLog(tmp_path / "data") as log:
        kb.add_files([tmp_path / "eiffel.txt", tmp_path / "penguins.txt"])
        yield ChatEngine(kb, FakeReader(), log=log)
