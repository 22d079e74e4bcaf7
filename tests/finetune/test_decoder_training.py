"""LoRA retraining of the decoder from the conversation log (finetune/decoder.py, finetune/lora.py): the reply-only
loss mask, a retrain on a handful of logged answers recorded in the decoder's registry and followed by the app, the
adapter chain a retrain from a retrained version is rebuilt through, and the promotion rule. The fast tests use a
tiny random Qwen2 as the packaged model; one slow test retrains the real Qwen2.5-0.5B."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from chatqa.decoder import GenerativeDecoder, decoder_registry
from chatqa.engine import ChatEngine
from chatqa.models.conversion import is_ct2_folder, is_hf_folder
from chatqa.registry import SHIPPED
from finetune.__main__ import main
from finetune.decoder import DecoderRetrainConfig, NothingToLearn, decide_decoder, retrain_decoder
from finetune.lora import AdapterChainBroken, adapter_chain, is_adapter_folder, load_version, tokenize_record
from knowledge.cache import default_cache_dir
from tests.finetune.conftest import log_rated_answers

pytest.importorskip("peft")

FAST = {"epochs": 2.0, "batch_size": 2, "lr": 5e-3, "max_tokens": 200, "max_eval_drafts": 2, "draft_tokens": 8,
        "lora_r": 4, "lora_alpha": 8}  # bf16 autocast as the retrain decides (on where the CPU supports it)


def _retrain(data_dir: Path, cache: Path, **overrides):
    return retrain_decoder(DecoderRetrainConfig(data_dir=str(data_dir), cache_dir=str(cache), **{**FAST, **overrides}))


@pytest.fixture
def logged(fake_engine):
    """A data directory with 5 rated answers on the training side of the split and 2 held out."""
    log_rated_answers(fake_engine, train=5, held=2)
    return fake_engine.kb.data_dir


def test_only_the_reply_is_scored(tiny_cache):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_cache / "decoder-qwen2.5-0.5b" / "ct2")
    messages = [{"role": "system", "content": "answer the question"},
                {"role": "user", "content": "passage : the timeout parameter question : use what"},
                {"role": "assistant", "content": "use the timeout parameter [1] ."}]
    ids, labels = tokenize_record(tokenizer, messages, 512)
    scored = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
    assert scored.split()[:6] == ["use", "the", "timeout", "parameter", "[1]", "."]
    assert scored.split()[6] == "<|im_end|>" and "question" not in scored
    assert labels.count(-100) == len(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True,
                                                                  tokenize=True)["input_ids"])
    short_ids, short_labels = tokenize_record(tokenizer, messages, 12)
    assert len(short_ids) == 12 and short_ids == ids[-12:] and short_labels == labels[-12:]  # cut from the left


def test_a_lora_retrain_records_a_version_the_app_follows(fake_engine, logged, tiny_cache):
    report = _retrain(logged, tiny_cache)
    registry = decoder_registry(logged, cache_dir=tiny_cache)
    assert [v.id for v in registry.versions()] == [SHIPPED, "r1"] and report.version == "r1"
    assert registry.active().id == ("r1" if report.promoted else SHIPPED)
    new, parent = report.metrics["new"], report.metrics["parent"]
    assert (report.promoted, report.reason) == decide_decoder(parent, new)
    assert report.metrics["train_examples"] == 5 and report.metrics["heldout_examples"] == 2
    assert new["heldout_loss"] > 0 and parent["heldout_loss"] > 0 and new["heldout_loss"] != parent["heldout_loss"]
    assert new["drafts"] == parent["drafts"] == 2
    assert 0 <= new["grounding"] <= 1 and 0 <= new["span_kept"] <= 1
    assert f"held-out reply loss {parent['heldout_loss']:.3f} → {new['heldout_loss']:.3f}" in report.reason

    folder = registry.checkpoint("r1")
    assert is_adapter_folder(folder / "adapter") and is_ct2_folder(folder / "ct2")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter", "ct2"]  # no dense weights kept
    adapter = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (4, 8)
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}
    assert not (registry.folder / "runs").exists()
    training = registry.get("r1").training
    assert training["model"] == "qwen2.5-0.5b" and training["parent_chain"] == [] and training["steps"] == 5
    assert set(training["timings"]) == {"load", "heldout_loss", "train", "merge_and_convert", "drafts"}
    assert json.loads((registry.folder / "last_retrain.json").read_text())["version"] == "r1"

    # the running app follows the registry's active version, with the retrained CTranslate2 folder
    registry.activate(SHIPPED)  # an app started on the packaged decoder
    engine = ChatEngine(fake_engine.kb, fake_engine.reader, log=fake_engine.log, decoder_registry=registry,
                        decoder=GenerativeDecoder(tiny_cache, threads=1))
    assert engine.decoder_version == SHIPPED
    registry.activate("r1")
    result = engine.ask("When was the Eiffel Tower built?", engine.log.new_conversation(), mode="generative")
    assert engine.decoder_version == "r1" and engine.decoder.folder == folder and engine.decoder.is_loaded
    assert result.answer.strip()


def test_a_retrain_from_a_retrained_version_rebuilds_it_through_the_adapter_chain(logged, tiny_cache):
    import torch

    first = _retrain(logged, tiny_cache)
    registry = decoder_registry(logged, cache_dir=tiny_cache)
    registry.activate("r1")  # as the Models tab would, whatever the first decision was
    second = _retrain(logged, tiny_cache)
    assert second.parent == "r1" and registry.get("r2").training["parent_chain"] == ["r1"]
    # the parent the second retrain measured is exactly the model the first one trained (same held-out split)
    assert second.metrics["parent"]["heldout_loss"] == pytest.approx(first.metrics["new"]["heldout_loss"], rel=1e-5)

    chain = adapter_chain(registry, "r2", "qwen2.5-0.5b")
    assert [v for v, _ in chain] == ["r1", "r2"]
    base = tiny_cache / "decoder-qwen2.5-0.5b" / "hf"
    packaged = load_version(base, []).state_dict()
    r1, r2 = load_version(base, chain[:1]).state_dict(), load_version(base, chain).state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert set(r2) == set(packaged)
    assert not torch.equal(r1[name], packaged[name]) and not torch.equal(r2[name], r1[name])
    # r1's merge is the packaged weight plus its adapter's scaled product B @ A
    from safetensors.torch import load_file

    weights = load_file(str(chain[0][1] / "adapter_model.safetensors"))
    a = next(v for k, v in weights.items() if "layers.0.self_attn.q_proj.lora_A" in k)
    b = next(v for k, v in weights.items() if "layers.0.self_attn.q_proj.lora_B" in k)
    torch.testing.assert_close(r1[name], packaged[name] + (8 / 4) * b @ a)


def test_a_failed_retrain_leaves_the_registry_and_the_data_directory_as_they_were(logged, tiny_cache, monkeypatch):
    from chatqa.models.sources import DecoderUnavailable
    from finetune import decoder as decoder_module

    def broken(hf, target, quantization="int8"):
        target.mkdir(parents=True)
        raise DecoderUnavailable("conversion failed")

    monkeypatch.setattr(decoder_module, "hf_to_ct2", broken)
    with pytest.raises(DecoderUnavailable, match="conversion failed"):
        _retrain(logged, tiny_cache)
    registry = decoder_registry(logged, cache_dir=tiny_cache)
    assert not registry.path.exists() and [v.id for v in registry.versions()] == [SHIPPED]
    assert not (registry.folder / "runs").exists()  # neither the version folder nor the temporary dense model


def test_a_version_without_an_adapter_cannot_be_retrained(logged, tiny_cache, tmp_path):
    registry = decoder_registry(logged, cache_dir=tiny_cache)
    old = tmp_path / "full-fine-tune"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"")
    registry.add(old, parent=SHIPPED, promoted=True, reason="an earlier full fine-tune", metrics={})
    with pytest.raises(AdapterChainBroken, match="r1 has no LoRA adapter"):
        _retrain(logged, tiny_cache)
    assert [v.id for v in registry.versions()] == [SHIPPED, "r1"]


def test_the_command_says_in_one_line_when_there_is_nothing_to_learn(fake_engine, tiny_cache, capsys):
    data_dir = fake_engine.kb.data_dir
    with pytest.raises(NothingToLearn, match="nothing to learn from yet: 0 rated turns"):
        _retrain(data_dir, tiny_cache)
    assert main(["decoder", "--from-logs", "--data-dir", str(data_dir), "--cache-dir", str(tiny_cache)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: nothing to learn from yet") and err.count("\n") == 1 and "Traceback" not in err


def test_decoder_promotion_rule():
    parent = {"heldout_loss": 2.0, "grounding": 0.8, "span_kept": 0.5}
    promoted, reason = decide_decoder(parent, {"heldout_loss": 1.5, "grounding": 0.8, "span_kept": 0.6})
    assert promoted and reason == "held-out reply loss 2.000 → 1.500, grounding 0.80 → 0.80, span kept 50% → 60%"
    promoted, reason = decide_decoder(parent, {"heldout_loss": 2.1, "grounding": 0.9, "span_kept": 0.9})
    assert not promoted and reason.startswith("the loss is not lower: held-out reply loss 2.000 → 2.100")
    promoted, reason = decide_decoder(parent, {"heldout_loss": 1.5, "grounding": 0.7, "span_kept": 0.5})
    assert not promoted and reason.startswith("grounding is worse: ") and "grounding 0.80 → 0.70" in reason
    promoted, reason = decide_decoder(parent, {"heldout_loss": 1.5, "grounding": 0.9, "span_kept": 0.4})
    assert not promoted and reason.startswith("span kept is worse: ") and "span kept 50% → 40%" in reason
    assert decide_decoder({"heldout_loss": None}, {"heldout_loss": None}) == (
        False, "no held-out examples to compare on yet")
    # without drafts (max_eval_drafts 0) the loss decides alone
    assert decide_decoder({"heldout_loss": 2.0}, {"heldout_loss": 1.9}) == (True, "held-out reply loss 2.000 → 1.900")


# -- the real packaged decoder -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_lora_retrain_of_the_real_decoder_on_six_examples_records_a_version(fake_engine):
    cache = default_cache_dir()
    folder = cache / "decoder-qwen2.5-0.5b"
    if not (is_hf_folder(folder / "hf") and is_ct2_folder(folder / "ct2")):
        pytest.skip(f"the converted Qwen2.5-0.5B decoder is not in {folder} (start the app once to convert it)")
    log_rated_answers(fake_engine, train=6, held=2)
    data_dir = fake_engine.kb.data_dir
    t0 = time.perf_counter()
    report = retrain_decoder(DecoderRetrainConfig(
        data_dir=str(data_dir), cache_dir=str(cache), epochs=1.0, batch_size=2, max_tokens=384, max_eval_drafts=2,
        draft_tokens=48))
    seconds = time.perf_counter() - t0
    print(f"LoRA retrain of the real decoder on 6 examples: {seconds:.0f} s; {report.reason}")
    registry = decoder_registry(data_dir, cache_dir=cache)
    assert [v.id for v in registry.versions()] == [SHIPPED, "r1"]
    assert registry.active().id == ("r1" if report.promoted else SHIPPED)
    version = registry.checkpoint("r1")
    assert is_ct2_folder(version / "ct2") and is_adapter_folder(version / "adapter")
    adapter_bytes = sum(p.stat().st_size for p in (version / "adapter").iterdir())
    assert 15e6 < adapter_bytes < 20e6  # r 8 on 7 projections × 24 layers: 4.4M float32 parameters
    new, parent = report.metrics["new"], report.metrics["parent"]
    assert 0 < new["heldout_loss"] < 10 and 0 < parent["heldout_loss"] < 10
    assert new["drafts"] == 2 and 0.5 <= parent["grounding"] <= 1  # the real model answers from the passages
    assert registry.get("r1").training["steps"] == 3
