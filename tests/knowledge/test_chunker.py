from __future__ import annotations

import json

import pytest

from knowledge.chunker import Chunker, ChunkerConfig, split_units, tokenizer_offsets
from tests.conftest import WhitespaceTokenizer, shared_file

PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It is named after Gustave Eiffel. "
    "His company designed and built the tower from 1887 to 1889! Was it criticised? Yes, by many artists."
)


def _chunker(**config) -> Chunker:
    return Chunker(tokenizer_offsets(WhitespaceTokenizer()), ChunkerConfig(**config))


def _count(text: str) -> int:
    return len(WhitespaceTokenizer()(text)["offset_mapping"])


def test_split_units_marks_sentences_and_paragraphs():
    text = "First one. Second one!\n\n- item one\n- item two\n# Head\nLast words"
    units = split_units(text)
    assert [text[s:e] for s, e, _ in units] == [
        "First one.", "Second one!", "- item one", "- item two", "# Head\nLast words",
    ]
    assert [p for _, _, p in units] == [True, False, True, True, True]


def test_chunks_map_back_to_the_exact_document_text():
    text = "\n\n".join(f"Paragraph {i}. " + PARAGRAPH for i in range(30))
    chunks = _chunker(max_tokens=60, min_tokens=20, overlap_tokens=12).chunk(text)
    assert len(chunks) > 5
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.n_tokens == _count(c.text)
        assert c.n_tokens <= 60
    # every non-blank character of the document is in some chunk
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_neighbouring_chunks_overlap_by_whole_sentences():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    chunks = _chunker(max_tokens=40, min_tokens=10, overlap_tokens=12).chunk(text)
    assert len(chunks) >= 3
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end, "consecutive chunks should overlap"
        assert text[b.start : b.start + 8] == "Sentence"  # the overlap starts at a sentence start


def test_paragraph_break_preferred_over_mid_paragraph_cut():
    para = " ".join(["Alpha beta gamma delta."] * 6)  # 30 tokens
    text = "\n\n".join([para, para, para])
    # greedy packing would take 30 + 20 tokens; the break comes at the paragraph instead
    chunks = _chunker(max_tokens=50, min_tokens=25, overlap_tokens=0).chunk(text)
    assert [c.text for c in chunks] == [para, para, para]
    # two whole paragraphs that fit together stay together
    chunks = _chunker(max_tokens=70, min_tokens=25, overlap_tokens=0).chunk(text)
    assert [c.text for c in chunks] == [para + "\n\n" + para, para]


def test_sentence_longer_than_limit_is_split_at_spaces():
    text = " ".join(f"word{i}" for i in range(500))
    chunks = _chunker(max_tokens=50, min_tokens=10, overlap_tokens=0).chunk(text)
    assert all(c.n_tokens <= 50 for c in chunks)
    assert " ".join(c.text for c in chunks) == text


def test_empty_and_blank_text_give_no_chunks():
    assert _chunker().chunk("") == []
    assert _chunker().chunk(" \n\n \t") == []


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(max_tokens=8, min_tokens=0, overlap_tokens=0), "max_tokens must be at least 16"),
        (dict(max_tokens=100, min_tokens=200), "min_tokens must be between"),
        (dict(max_tokens=100, min_tokens=10, overlap_tokens=60), "overlap_tokens must be"),
    ],
)
def test_config_validation(config, message):
    with pytest.raises(ValueError, match=message):
        ChunkerConfig(**config)


@pytest.mark.slow
def test_real_tokenizer_on_a_squad_article(real_embedder):
    article = json.loads(shared_file("dev/squad-v1.1-dev-13art.json").read_text())["data"][0]
    text = "\n\n".join(p["context"] for p in article["paragraphs"])
    chunker = Chunker(tokenizer_offsets(real_embedder.tokenizer))
    chunks = chunker.chunk(text)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    # sized for the embedder: never more than it reads, most between 120 and 250 tokens
    assert max(c.n_tokens for c in chunks) <= real_embedder.max_tokens
    in_range = sum(120 <= c.n_tokens <= 250 for c in chunks) / len(chunks)
    assert in_range >= 0.8, in_range
