"""The embedder's precision setting: bf16 autocast where the device supports it, fp32 otherwise or on request."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import knowledge.embedder as embedder_module
from knowledge.embedder import Embedder


def test_precision_is_validated_and_read_from_the_environment(monkeypatch):
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        Embedder(precision="fp16")
    monkeypatch.setenv("CHATQA_EMBEDDER_PRECISION", "fp32")
    assert Embedder().precision == "fp32" and Embedder(precision="bf16").precision == "bf16"
    monkeypatch.delenv("CHATQA_EMBEDDER_PRECISION")
    assert Embedder().precision == "auto"


@pytest.mark.parametrize("device, native_bf16, expected", [
    ("cpu", True, True), ("cpu", False, False), ("cuda:0", False, True), ("mps", True, False),
])
def test_auto_uses_bf16_where_the_device_supports_it(monkeypatch, device, native_bf16, expected):
    monkeypatch.setattr(embedder_module, "cpu_supports_bf16", lambda: native_bf16)
    embedder = Embedder(precision="auto")
    embedder._model = SimpleNamespace(device=device)  # no model is loaded
    assert embedder.uses_bf16 is expected
    forced = Embedder(precision="fp32")
    forced._model = embedder._model
    assert forced.uses_bf16 is False


@pytest.mark.slow
def test_bf16_vectors_match_fp32(real_embedder):
    texts = ["The Eiffel Tower was built from 1887 to 1889.", "Penguins live in the Southern Hemisphere. " * 20]
    bf16 = Embedder(precision="bf16")
    bf16._model = real_embedder.model
    fp32 = Embedder(precision="fp32")
    fp32._model = real_embedder.model
    a, b = fp32.embed(texts), bf16.embed(texts)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (2, 384)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.999
