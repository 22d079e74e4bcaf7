"""The generative decoder: configuration, loading, streaming with CTranslate2, the sentence limit, and the real
packaged model on a bundled-guide question (slow)."""

from __future__ import annotations

import time

import pytest

from chatqa.decoder import DecoderConfig, DraftPiece, GenerativeDecoder
from chatqa.models import conversion
from chatqa.models.sources import DecoderUnavailable
from chatqa.prompt import PromptPassage


def test_config_is_validated_and_nothing_loads_at_construction(tmp_path):
    with pytest.raises(ValueError, match="max_new_tokens"):
        DecoderConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="passage_chars"):
        DecoderConfig(passage_chars=())
    decoder = GenerativeDecoder(tmp_path)
    assert decoder.folder == tmp_path / "decoder-qwen2.5-0.5b" and "loaded=False" in repr(decoder)
    assert not decoder.folder.exists() and not decoder.is_loaded


def test_an_unknown_decoder_name_is_a_clear_error(tmp_path):
    with pytest.raises(DecoderUnavailable, match="unknown decoder 'gpt-9'"):
        GenerativeDecoder(tmp_path, model="gpt-9")


def test_a_version_folder_without_a_model_is_reported(tmp_path):
    decoder = GenerativeDecoder(tmp_path / "models", model_folder=tmp_path / "empty")
    with pytest.raises(DecoderUnavailable, match="no decoder model"):
        decoder.warm_up()


def test_a_tiny_qwen2_converted_for_ctranslate2_streams(tiny_qwen, tmp_path):
    conversion.hf_to_ct2(tiny_qwen, tmp_path / "version" / "ct2")
    decoder = GenerativeDecoder(tmp_path / "cache", model_folder=tmp_path / "version", threads=1,
                                config=DecoderConfig(max_new_tokens=6))
    messages = [{"role": "system", "content": "answer"}, {"role": "user", "content": "the question :"}]
    ids = decoder.prompt_ids(messages)
    assert decoder.is_loaded and ids[0] == 1  # <|im_start|>
    steps = list(decoder.generate(ids))
    assert 1 <= len(steps) <= 6 and all(lp <= 0.0 for _, lp in steps)
    pieces = list(decoder.stream(messages))
    assert "".join(p.text for p in pieces).strip()  # random weights: some of the vocabulary, decoded
    assert sum(len(p.logprobs) for p in pieces) <= 6


class FakeDecoder(GenerativeDecoder):
    """Streams a fixed draft, counting how much of it was pulled."""

    def __init__(self, draft: list[str], **config):
        super().__init__("unused", config=DecoderConfig(**config))
        self.draft, self.pulled, self.messages = draft, 0, None

    def stream(self, messages):
        self.messages = messages
        for piece in self.draft:
            self.pulled += 1
            yield DraftPiece(piece, (-0.5,))


PASSAGES = [PromptPassage(1, 0, "guide.md", "Use the timeout parameter.", 0, 26)]


def test_the_answer_stops_after_the_sentence_limit():
    decoder = FakeDecoder(["One", " is", " here.", " Two", " too.", " Three", " more. Four", " is", " cut."],
                          max_sentences=3)
    pieces = list(decoder.answer("q?", PASSAGES))
    assert "".join(p.text for p in pieces) == "One is here. Two too. Three more."
    assert decoder.pulled == 7  # generation stopped with the piece that finished the third sentence
    assert "[1] (guide.md) Use the timeout parameter." in decoder.messages[1]["content"]


# -- the real packaged model (converted into the user's cache once: about two minutes) --------------------------
@pytest.fixture(scope="module")
def real_decoder():
    decoder = GenerativeDecoder(config=DecoderConfig(max_new_tokens=60))
    try:
        t0 = time.perf_counter()
        decoder.warm_up()
    except DecoderUnavailable as e:
        pytest.skip(str(e))
    print(f"\ndecoder conversion (first time only) + load: {time.perf_counter() - t0:.1f} s")
    return decoder


@pytest.mark.slow
def test_the_real_decoder_answers_a_guide_question_with_the_right_words(real_decoder):
    from knowledge.bundle import BUNDLED_DIR

    guide = (BUNDLED_DIR / "chatqa-user-guide.md").read_text(encoding="utf-8")
    start = guide.index("ChatQA reads PDF")
    passage = PromptPassage(1, 0, "chatqa-user-guide.md", guide[start : start + 400], start, start + 400)
    t0 = time.perf_counter()
    pieces, first = [], None
    for piece in real_decoder.answer("Which file types can I upload?", [passage]):
        first = first if first is not None else time.perf_counter() - t0
        pieces.append(piece)
    answer = "".join(p.text for p in pieces)
    print(f"\nfirst token {first:.2f} s: {answer!r}")
    assert len(pieces) >= 3  # streamed
    found = [w for w in ("PDF", "Word", "HTML", "Markdown", "plain-text") if w.casefold() in answer.casefold()]
    assert len(found) >= 4, answer


def test_each_packaged_decoder_keeps_its_own_versions(tmp_path):
    from chatqa.decoder import decoder_registry

    small, large = decoder_registry(tmp_path, cache_dir=tmp_path / "c"), decoder_registry(
        tmp_path, "qwen2.5-1.5b", cache_dir=tmp_path / "c")
    assert small.folder == tmp_path / "models" / "decoder"
    assert large.folder == tmp_path / "models" / "decoder-qwen2.5-1.5b"
    assert large.shipped == tmp_path / "c" / "decoder-qwen2.5-1.5b"
