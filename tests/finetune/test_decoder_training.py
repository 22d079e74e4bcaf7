"""Fine-tuning the decoder from the conversation log (finetune/decoder.py) with the real SmolLM2, on a handful of
logged answers: the reply-only loss mask, and one whole retrain recorded in the decoder's registry."""

from __future__ import annotations

import pytest

from chatqa import decoder as decoder_module
from chatqa.decoder import DecoderUnavailable, GenerativeDecoder
from chatqa.registry import SHIPPED
from finetune.decoder import (
    DecoderRetrainConfig,
    decide_decoder,
    decoder_registry,
    retrain_decoder,
    tokenize_record,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def converted(data_dir):
    try:
        decoder_module.find_smollm2_gguf()
    except DecoderUnavailable as e:
        pytest.skip(str(e))
    GenerativeDecoder(data_dir / "models").warm_up()  # converts the packaged GGUF into the data directory
    return data_dir


def test_only_the_reply_is_scored(converted):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted / "models" / DECODER_FOLDER)
    messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "When was it built?"},
                {"role": "assistant", "content": "It was built from 1887 to 1889."}]
    ids, labels = tokenize_record(tokenizer, messages, 512)
    scored = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
    assert scored.startswith("It was built from 1887 to 1889.") and "When was it built" not in scored
    short_ids, short_labels = tokenize_record(tokenizer, messages, 12)
    assert len(short_ids) == 12 and short_labels[-1] == labels[-1]  # cut from the left, the reply kept


def test_a_decoder_retrain_is_compared_and_recorded(converted):
    report = retrain_decoder(DecoderRetrainConfig(data_dir=str(converted), epochs=1.0, max_eval_drafts=2))
    registry = decoder_registry(converted)
    assert [v.id for v in registry.versions()] == [SHIPPED, report.version]
    assert registry.active().id == (report.version if report.promoted else SHIPPED)
    new, parent = report.metrics["new"], report.metrics["parent"]
    assert new["heldout_loss"] > 0 and parent["heldout_loss"] > 0 and 0 <= new["span_kept"] <= 1
    assert (registry.checkpoint(report.version) / "model.safetensors").exists()
    assert not (registry.folder / "runs").exists()


def test_decoder_promotion_rule():
    assert decide_decoder(2.0, 1.5, 0.5, 0.5)[0]
    assert not decide_decoder(2.0, 2.1, 0.5, 0.9)[0]  # loss not lower
    assert not decide_decoder(2.0, 1.5, 0.5, 0.4)[0]  # drops the span more often
    assert not decide_decoder(None, None, None, None)[0]
