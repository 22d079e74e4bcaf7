"""Fixtures of the chatqa tests: a tiny random Qwen2 with a ChatML template, as a transformers folder."""

from __future__ import annotations

import pytest

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
