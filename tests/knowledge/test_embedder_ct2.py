"""The CTranslate2 embedder: converted once into a cache folder pinned to its source, close to the torch vectors,
and the torch fallback wherever it cannot run."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest

import knowledge.embedder_ct2 as ct2_module
from knowledge.embedder import Embedder, packaged_minilm_path
from knowledge.embedder_ct2 import MANIFEST, Ct2Unavailable

pytest.importorskip("ctranslate2")

TEXTS = ["The Eiffel Tower was built from 1887 to 1889.", "Penguins live in the Southern Hemisphere. " * 8, "ok"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised 2-layer, 32-wide BERT in the sentence-transformers layout (mean pooling, normalised),
    with all-MiniLM-L6-v2's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-minilm")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())  # as all-MiniLM-L6-v2's config (the converter reads it)
    (folder / "config.json").write_text(json.dumps(saved | {"position_embedding_type": "absolute"}))
    source = packaged_minilm_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    (folder / "1_Pooling").mkdir()
    for name, content in (
        ("modules.json", json.loads((source / "modules.json").read_text())),
        ("1_Pooling/config.json", {"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                                   "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                   "pooling_mode_mean_sqrt_len_tokens": False}),
        ("sentence_bert_config.json", {"max_seq_length": 64, "do_lower_case": False}),
    ):
        (folder / name).write_text(json.dumps(content))
    return folder


def test_ct2_vectors_are_normalised_and_close_to_torch(tiny_model, tmp_path):
    ct2 = Embedder(tiny_model, backend="ct2", cache_dir=tmp_path)
    torch_fp32 = Embedder(tiny_model, backend="torch", precision="fp32")
    a, b = ct2.embed(TEXTS), torch_fp32.embed(TEXTS)
    assert ct2.runs_on == "ct2-int8" and torch_fp32.runs_on == "torch-fp32"
    assert a.dtype == np.float32 and a.shape == b.shape == (3, 32) and a.flags["C_CONTIGUOUS"]
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.99
    assert ct2.dim == 32 and ct2.max_tokens == 62 and ct2.batch_size == 4 and not ct2.uses_bf16
    assert ct2.embed([]).shape == (0, 32)
    # batching and length sorting do not change a text's vector
    one_by_one = np.concatenate([ct2.embed([t]) for t in TEXTS])
    assert np.allclose(one_by_one, a, atol=1e-5)


def test_the_conversion_is_cached_and_pinned_to_its_source(tiny_model, tmp_path, monkeypatch):
    Embedder(tiny_model, backend="ct2", cache_dir=tmp_path).warm_up()
    folder = tmp_path / f"embedder-{tiny_model.name}-ct2-int8"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source_sha256"] == ct2_module.source_fingerprint(tiny_model) and manifest["quantization"] == "int8"

    calls = []
    real_convert = ct2_module._convert
    monkeypatch.setattr(ct2_module, "_convert", lambda *a: calls.append(a) or real_convert(*a))
    Embedder(tiny_model, backend="ct2", cache_dir=tmp_path).warm_up()
    assert calls == []  # current: used as it is
    (folder / MANIFEST).write_text(json.dumps(manifest | {"ctranslate2": "0.0.0"}))
    Embedder(tiny_model, backend="ct2", cache_dir=tmp_path).warm_up()
    assert len(calls) == 1  # built by another ctranslate2: converted again
    assert json.loads((folder / MANIFEST).read_text()) == manifest
    assert not list(tmp_path.glob("*.tmp"))


def test_auto_falls_back_to_torch_without_ctranslate2(tiny_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 raises ImportError
    embedder = Embedder(tiny_model, backend="auto", precision="auto", device="cpu", cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="knowledge.embedder"):
        vectors = embedder.embed(TEXTS)
    assert embedder.runs_on.startswith("torch-") and "ctranslate2 package is missing" in caplog.text
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.batch_size == 16 and embedder.tokenizer is embedder.model.tokenizer
    with pytest.raises(Ct2Unavailable, match="ctranslate2 package is missing"):
        Embedder(tiny_model, backend="ct2", cache_dir=tmp_path).warm_up()


def test_an_unsupported_model_falls_back_to_torch(tiny_model, tmp_path):
    other = tmp_path / "cls-pooling"
    shutil.copytree(tiny_model, other)
    pooling = json.loads((other / "1_Pooling" / "config.json").read_text())
    (other / "1_Pooling" / "config.json").write_text(json.dumps(
        pooling | {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    with pytest.raises(Ct2Unavailable, match="not mean pooling"):
        ct2_module.check_supported(other)
    embedder = Embedder(other, device="cpu", cache_dir=tmp_path / "cache")
    assert embedder.runs_on.startswith("torch-")
    assert not (tmp_path / "cache").exists()


def test_backend_choice(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of auto, torch, ct2, got 'onnx'"):
        Embedder(backend="onnx")
    monkeypatch.setenv("CHATQA_EMBEDDER_BACKEND", "torch")
    assert Embedder().backend == "torch" and Embedder(backend="ct2").backend == "ct2"
    monkeypatch.delenv("CHATQA_EMBEDDER_BACKEND")
    assert Embedder().backend == "auto"
    assert Embedder(device="cpu")._wants_ct2()
    assert not Embedder(device="cpu", precision="fp32")._wants_ct2()  # an explicit precision means torch
    assert not Embedder(device="cuda")._wants_ct2()
    assert Embedder(device="cuda", backend="ct2")._wants_ct2()
    assert Embedder(batch_size=3).batch_size == 3
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Embedder(batch_size=0)


@pytest.mark.slow
def test_real_model_ct2_matches_fp32(real_embedder, tmp_path):
    ct2 = Embedder(backend="ct2", cache_dir=tmp_path)
    fp32 = Embedder(backend="torch", precision="fp32")
    fp32._model = real_embedder.model
    a, b = ct2.embed(TEXTS), fp32.embed(TEXTS)
    assert a.shape == b.shape == (3, 384) and np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cosine = (a * b).sum(axis=1)
    # int8 costs little on sentences and passages (0.997 on the articles' 772 passages, README); a one-word text
    # such as "ok" moves most (0.983 when measured)
    assert cosine[:2].min() > 0.99 and cosine.min() > 0.97
    assert ct2.tokenizer(TEXTS[0])["input_ids"] == real_embedder.model.tokenizer(TEXTS[0])["input_ids"]
