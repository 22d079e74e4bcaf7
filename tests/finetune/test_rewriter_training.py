"""Training the rewriter (finetune/rewriter.py) on a tiny random Llama: the loss mask, a few steps whose loss falls,
resuming, and the adapter merged and converted into a CTranslate2 rewriter that the app can load."""

from __future__ import annotations

import json
import shutil

import pytest

from chatqa.canard import with_history
from chatqa.models.rewrite_prompt import build_prompt
from chatqa.models.rewriter import Rewriter, adapter_version, prepare_rewriter
from finetune.rewriter import RewriterTrainer, RewriterTrainingConfig, encode

WORDS = ["who", "what", "did", "they", "play", "the", "colts", "team", "unitas", "johnny", "for", "?", "win",
         "games", "how", "many", "in", "playoffs", "Rewrite", "Earlier", "Question", "rewrite", "to", "stand",
         "alone.", "Rewrite:", "Earlier:", "Question:"]
ROWS = [
    ("d1", 0, "what team did unitas play for ?", "what team did johnny unitas play for ?"),
    ("d1", 1, "how many games did they win ?", "how many games did the colts win ?"),
    ("d1", 2, "who did they play in the playoffs ?", "who did the colts play in the playoffs ?"),
    ("d2", 0, "who did the colts play ?", "who did the colts play ?"),
    ("d2", 1, "what team did they play for ?", "what team did the colts play for ?"),
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A 2-layer random Llama (SmolLM2's architecture) with a word-level tokenizer, as a transformers folder."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate([*specials, "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token="<|im_start|>", unk_token="<unk>", additional_special_tokens=specials)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, eos_token_id=vocab["<|im_end|>"], bos_token_id=1)
    folder = tmp_path_factory.mktemp("tiny-llama") / "hf"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def canard_file(tmp_path):
    path = tmp_path / "canard.jsonl"
    path.write_text("\n".join(json.dumps({"dialog": d, "turn": t, "question": q, "rewrite": r}) for d, t, q, r in ROWS)
                    + "\n", encoding="utf-8")
    return path


def test_only_the_rewrite_is_scored(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    example = with_history(ROWS)[1]
    ids, labels = encode(tokenizer, example, 3, 192)
    scored = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert tokenizer.decode(scored[:-1]) == "how many games did the colts win ?"
    assert scored[-1] == tokenizer.eos_token_id
    prompt_len = len(tokenizer(build_prompt(example.question, example.history, 3))["input_ids"])
    assert labels[:prompt_len] == [-100] * prompt_len
    short_ids, short_labels = encode(tokenizer, example, 3, 12)
    assert len(short_ids) == 12 and short_labels[-len(scored):] == scored  # the prompt is cut, never the rewrite


def test_a_tiny_rewriter_trains_resumes_and_converts(tiny_llama, canard_file, tmp_path):
    out = tmp_path / "run"
    cfg = RewriterTrainingConfig(train=str(canard_file), dev=str(canard_file), base=str(tiny_llama), out=str(out),
                                 epochs=12, lr=3e-2, batch_size=3, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                                 lora_layers=None, eval_every=4, save_every=4, log_every=2, bf16=False,
                                 device="cpu")
    trainer = RewriterTrainer(cfg)
    adapter = trainer.run()
    losses = trainer.state["losses"]
    # 3 follow-ups (first turns are never rewritten), one dropped ("the colts" is nowhere before it): 1 step per epoch
    assert trainer.state["data"] == {"records": 5, "first_turns_skipped": 2, "unsupported_dropped": 1, "used": 2}
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < 0.95 * sum(losses[:3]) / 3
    assert [p["step"] for p in trainer.state["curve"]] == [4, 8, 12]
    info = json.loads((adapter / "training.json").read_text())
    assert info["steps"] == 12 and info["training"]["lora_r"] == 4
    assert (adapter / "adapter_model.safetensors").stat().st_size < 200_000

    again = RewriterTrainer(cfg)
    assert again.run() == adapter and again.state["step"] == 12 and len(again.state["losses"]) == 12  # resumed

    models = tmp_path / "models"
    shutil.copytree(tiny_llama, models / "rewriter-base" / "hf")  # as if converted from the packaged GGUF already
    ct2 = prepare_rewriter(models, adapter)
    assert ct2 == models / f"rewriter-{adapter_version(adapter)}" / "ct2" and (ct2 / "model.bin").is_file()
    assert not (ct2.parent / "hf").exists()  # the merged transformers folder is only an intermediate
    rewriter = Rewriter(models, adapter_dir=adapter, max_new_tokens=12)
    out_text = rewriter.rewrite("who did they play in the playoffs ?", ["what team did johnny unitas play for ?"])
    assert rewriter.is_loaded and isinstance(out_text, str) and 0 < len(out_text.split()) <= 12


def test_training_can_start_from_an_adapter(tiny_llama, canard_file, tmp_path):
    common = dict(train=str(canard_file), dev=None, base=str(tiny_llama), lr=3e-2, batch_size=3, lora_r=4,
                  lora_alpha=8, lora_dropout=0.0, lora_layers=None, log_every=1, bf16=False, device="cpu")
    first = RewriterTrainer(RewriterTrainingConfig(out=str(tmp_path / "a"), epochs=8, **common))
    adapter = first.run()
    second = RewriterTrainer(RewriterTrainingConfig(out=str(tmp_path / "b"), epochs=1, init_adapter=str(adapter),
                                                    **common))
    second.run()
    assert second.state["losses"][0] < first.state["losses"][0] - 0.05  # it did not start from scratch
