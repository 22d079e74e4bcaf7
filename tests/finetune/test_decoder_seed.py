"""Answering examples for the decoder from SQuAD-format files (finetune/decoder_seed.py): the labelled paragraph shown
among others of its document, the reply the sentence holding the answer, citing the right passage number; and a
retrain from a data directory with nothing logged that learns from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatqa.export import chat_records
from finetune.decoder_seed import MAX_REPLY_CHARS, squad_seed_examples
from knowledge.errors import ChatQAError


def _squad(path: Path, title: str, paragraphs: list[tuple[str, str, str]]) -> str:
    """A SQuAD file of one article; ``paragraphs`` are (context, question, answer) with the answer in the context."""
    data = {"version": "1.1", "data": [{"title": title, "paragraphs": [
        {"context": c, "qas": [{"id": f"{title}-{i}", "question": q,
                                "answers": [{"text": a, "answer_start": c.index(a)}]}]}
        for i, (c, q, a) in enumerate(paragraphs)]}]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


MANUAL = [
    ("Install the tool with pip. Then run it with --verbose to see every step.", "How do I see every step?",
     "--verbose"),
    ("Set the timeout parameter to stop waiting. The default is no timeout at all.", "How do I stop waiting?",
     "timeout parameter"),
    ("Proxies are read from HTTPS_PROXY. They can also be passed per request.", "Where are proxies read from?",
     "HTTPS_PROXY"),
    ("The cache lives in ~/.cache. Delete it to start again.", "Where is the cache?", "~/.cache"),
]


def test_the_reply_is_the_answer_sentence_citing_the_passage_that_holds_it(tmp_path):
    path = _squad(tmp_path / "manual.json", "docs/manual.html", MANUAL)
    examples = squad_seed_examples([path], 20, seed=3)
    assert len(examples) == len(MANUAL)  # fewer labelled answers than asked for: all of them, once
    for ex, record in zip(examples, chat_records(examples), strict=True):
        assert ex.source == "seed" and ex.conversation_id == "seed:docs/manual.html"  # held out by document
        assert len(ex.passages) == 3 and ex.passages[ex.rank].text == ex.context
        assert {p.doc_name for p in ex.passages} == {"manual.html"}
        prompt, reply = record["messages"][1]["content"], record["messages"][2]["content"]
        sentence = next(s for s in ex.context.split(". ") if ex.answer_text in s)
        assert reply.startswith(sentence) and ex.answer_text in reply
        number = int(reply.rsplit("[", 1)[1].rstrip("]"))
        cited = next(line for line in prompt.splitlines() if line.startswith(f"[{number}] "))
        assert ex.answer_text in cited and cited.endswith(ex.context)
    assert len({ex.rank for ex in examples}) > 1  # the answer's passage is not always the first


def test_examples_are_drawn_evenly_from_the_files_and_seeded(tmp_path):
    a = _squad(tmp_path / "a.json", "a", MANUAL)
    b = _squad(tmp_path / "b.json", "b", [(c.replace("tool", "app"), q, x) for c, q, x in MANUAL])
    examples = squad_seed_examples([a, b], 5, seed=1)
    assert sorted(ex.conversation_id for ex in examples) == ["seed:a"] * 3 + ["seed:b"] * 2
    assert [ex.id for ex in squad_seed_examples([a, b], 5, seed=1)] == [ex.id for ex in examples]
    assert squad_seed_examples([a, b], 0) == [] and squad_seed_examples([], 5) == []


def test_answers_in_overlong_sentences_and_misplaced_offsets_are_left_out(tmp_path):
    long = "word " * (MAX_REPLY_CHARS // 5) + "the answer is here."
    path = tmp_path / "odd.json"
    _squad(path, "odd", [(long, "Where?", "the answer"), *MANUAL[:2]])
    data = json.loads(path.read_text())
    data["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] += 1  # no longer the answer's text
    path.write_text(json.dumps(data))
    assert [ex.question for ex in squad_seed_examples([path], 10)] == [MANUAL[1][1]]


def test_an_unreadable_file_is_named_in_the_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ChatQAError, match="bad.json"):
        squad_seed_examples([bad], 3)


def test_a_retrain_with_nothing_logged_learns_from_the_squad_files(tmp_path, tiny_cache):
    pytest.importorskip("peft")
    from chatqa.decoder import decoder_registry
    from finetune.decoder import DecoderRetrainConfig, retrain_decoder
    from tests.finetune.test_decoder_training import FAST

    files = [_squad(tmp_path / f"{name}.json", name, MANUAL) for name in "abcdef"]
    data_dir = tmp_path / "data"
    report = retrain_decoder(DecoderRetrainConfig(data_dir=str(data_dir), cache_dir=str(tiny_cache), squad=files,
                                                  squad_examples=12, heldout_share=0.5, **FAST))
    assert report.metrics["train_examples"] + report.metrics["heldout_examples"] == 12
    assert report.metrics["feedback"]["positives"] == 0
    registry = decoder_registry(data_dir, cache_dir=tiny_cache)
    assert registry.get(report.version).training["config"]["squad"] == files
