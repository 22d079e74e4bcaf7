"""The follow-up rewriter: CANARD histories and filtering, the prompt, the dialog manager's use of the model (never on
first turns, the rules when it is missing or fails) and `chatqa eval rewrites`."""

from __future__ import annotations

import json
import logging

import pytest

from chatqa.canard import RewriteExample, filter_supported, read_canard, unsupported_words, with_history
from chatqa.dialog import DialogManager, Exchange, choose_rewrite
from chatqa.models.rewrite_prompt import build_prompt, clean_rewrite, select_history
from chatqa.models.rewriter import Rewriter, RewriterUnavailable
from chatqa.rewrite_eval import corpus_bleu, evaluate_rewrites

DIALOG = [  # (dialog, turn, question, rewrite), turns deliberately out of order
    ("d1", 1, "how many games did the colts win", "how many games did the Colts win?"),
    ("d1", 0, "what team did unitas play for", "what team did Johnny Unitas play for?"),
    ("d2", 0, "What group disbanded?", "What group disbanded?"),
    ("d1", 2, "who did they play in the playoffs", "who did the Colts play in the playoffs?"),
]


def test_a_turns_history_is_the_earlier_rewrites_of_its_dialog():
    examples = with_history(DIALOG)
    by_key = {(ex.dialog, ex.turn): ex for ex in examples}
    assert by_key[("d1", 0)].history == []
    assert by_key[("d1", 1)].history == ["what team did Johnny Unitas play for?"]
    assert by_key[("d1", 2)].history == ["what team did Johnny Unitas play for?", "how many games did the Colts win?"]
    assert by_key[("d2", 0)].history == []  # another dialog's turns never leak in
    assert [(ex.dialog, ex.turn) for ex in examples] == [("d1", 0), ("d1", 1), ("d1", 2), ("d2", 0)]


def test_rewrites_that_add_unknown_words_are_dropped():
    examples = with_history(DIALOG)
    assert unsupported_words(examples[0]) == ["johnny"]  # turn 0 adds the page title, which this copy lacks
    assert unsupported_words(examples[2]) == []  # "the Colts" comes from the history
    invented = RewriteExample("d3", 1, "What did he say?", "What did Kissinger say to the consul?", ["Who was he?"])
    assert unsupported_words(invented) == ["kissinger", "consul"]
    kept, dropped = filter_supported([*examples, invented])
    assert dropped == 2 and [ex.turn for ex in kept] == [1, 2, 0]


def test_read_canard_keeps_the_dev_answers(tmp_path):
    path = tmp_path / "dev.jsonl"
    rows = [{"id": "a", "dialog": "d", "turn": 0, "question": "What group disbanded?", "rewrite": "What group disbanded?",
             "history": []},
            {"id": "b", "dialog": "d", "turn": 1, "question": "When did they disband?",
             "rewrite": "When did the Mothers disband?", "history": ["What group disbanded?", "the Mothers"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    first, second = read_canard(path)
    assert second.history == ["What group disbanded?"] and second.answers == ["the Mothers"]
    assert first.answers == []
    (tmp_path / "bad.jsonl").write_text('{"dialog": "d"}\n', encoding="utf-8")
    with pytest.raises(Exception, match=r"bad.jsonl:1: not a CANARD record"):
        read_canard(tmp_path / "bad.jsonl")


def test_the_prompt_shows_the_first_and_the_latest_questions():
    history = ["Q1?", "Q2?", "Q3?", "Q4?", "Q5?"]
    assert select_history(history, 3) == ["Q1?", "Q4?", "Q5?"]
    assert select_history(["Q1?", " "], 3) == ["Q1?"]
    prompt = build_prompt("  who did they   play? ", history, 3)
    assert prompt.splitlines()[1:] == ["Earlier: Q1?", "Earlier: Q4?", "Earlier: Q5?", "Question: who did they play?",
                                       "Rewrite:"]
    assert clean_rewrite(" Who did the Colts play?\nQuestion: more", "q") == "Who did the Colts play?"
    assert clean_rewrite("  \n", "who did they play?") == "who did they play?"


class CountingRewriter:
    def __init__(self, answer: str = "What happens when PDF files are password-protected?", fail: bool = False):
        self.calls: list[tuple[str, list[str]]] = []
        self.answer, self.fail = answer, fail

    def rewrite(self, question, history):
        self.calls.append((question, list(history)))
        if self.fail:
            raise RewriterUnavailable("no model here")
        return self.answer


HISTORY = [Exchange("Which file types can I upload?", "PDF, Word and HTML files")]
FOLLOW_UP = "What happens when they are password-protected?"


def test_first_turns_never_call_the_model():
    model = CountingRewriter()
    dialog = DialogManager(rewriter=model)
    assert dialog.condense("  Which file types can I upload? ", []) == "Which file types can I upload?"
    assert model.calls == []
    assert dialog.condense(FOLLOW_UP, HISTORY) == "What happens when PDF files are password-protected?"
    assert model.calls == [(FOLLOW_UP, ["Which file types can I upload?"])]  # the standalone questions, oldest first


def test_the_rules_rewrite_when_the_model_fails(caplog):
    rules = DialogManager().condense(FOLLOW_UP, HISTORY)
    assert rules != FOLLOW_UP  # the rules resolve "they" themselves
    model = CountingRewriter(fail=True)
    dialog = DialogManager(rewriter=model)
    with caplog.at_level(logging.WARNING, logger="chatqa.dialog"):
        assert dialog.condense(FOLLOW_UP, HISTORY) == rules
        assert dialog.condense(FOLLOW_UP, HISTORY) == rules
    assert len(model.calls) == 2
    warnings = [r for r in caplog.records if "rules rewrite follow-ups instead" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not on every turn
    assert DialogManager(rewriter=CountingRewriter(answer="  ")).condense(FOLLOW_UP, HISTORY) == rules  # empty output


def test_the_rules_rewrite_when_the_model_is_missing(tmp_path):
    missing = Rewriter(tmp_path / "models", adapter_dir=tmp_path / "no-adapter")
    assert missing.rewrite("Which file types can I upload?", []) == "Which file types can I upload?"  # no load
    assert not missing.is_loaded
    with pytest.raises(RewriterUnavailable, match="no rewriter adapter"):
        missing.rewrite(FOLLOW_UP, ["Which file types can I upload?"])
    dialog = DialogManager(rewriter=missing)
    assert dialog.condense(FOLLOW_UP, HISTORY) == DialogManager().condense(FOLLOW_UP, HISTORY)
    assert not (tmp_path / "models").exists()  # nothing half-converted left behind


class LookupRewriter:
    """Returns the human rewrite: a perfect model."""

    def __init__(self, examples):
        self.table = {(ex.question, tuple(ex.history)): ex.rewrite for ex in examples}

    def rewrite(self, question, history):
        return self.table[(question, tuple(history))]

    def rewrite_batch(self, items):
        return [self.rewrite(q, h) for q, h in items]


def test_eval_rewrites_scores_model_rules_and_copy(tmp_path):
    path = tmp_path / "canard.jsonl"
    path.write_text("\n".join(json.dumps({"dialog": d, "turn": t, "question": q, "rewrite": r})
                              for d, t, q, r in DIALOG) + "\n", encoding="utf-8")
    report = evaluate_rewrites(path, rewriter=LookupRewriter(read_canard(path)), latency_samples=2)
    assert report["examples"] == 4 and report["followups"] == 2
    assert report["bleu_model_followups"] == 1.0
    assert report["bleu_copy"] < report["bleu_model"] < 1.0  # first turns are left as asked, by every system
    assert 0 < report["bleu_rules"] <= 1 and report["latency_samples"] == 2 and report["latency_p50_s"] >= 0
    without = evaluate_rewrites(path, limit=3)
    assert "bleu_model" not in without and without["examples"] == 3


def test_corpus_bleu_is_on_a_zero_to_one_scale():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    assert corpus_bleu(["a dog"], ["the cat sat on the mat"]) == 0.0
    with pytest.raises(ValueError, match="Got 1 hypotheses and 2 references"):
        corpus_bleu(["a"], ["a", "b"])


def test_the_rules_step_in_where_the_model_kept_a_pronoun():
    rules_calls = []

    def rules():
        rules_calls.append(1)
        return "What happens when the file types are password-protected?"

    assert choose_rewrite(FOLLOW_UP, "What happens when PDFs are password-protected?", rules) == \
        "What happens when PDFs are password-protected?"
    assert rules_calls == []  # a resolved rewrite never asks the rules
    assert choose_rewrite(FOLLOW_UP, FOLLOW_UP, rules) == "What happens when the file types are password-protected?"
    assert choose_rewrite("When was it built?", "When was it built?", lambda: "When was it built?") == \
        "When was it built?"  # the rules cannot resolve it either: the model's rewrite stays
    model = CountingRewriter(answer=FOLLOW_UP)
    assert DialogManager(rewriter=model).condense(FOLLOW_UP, HISTORY) == DialogManager().condense(FOLLOW_UP, HISTORY)
