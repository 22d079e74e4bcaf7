"""Tests of chatqa.metrics against hand-computed values of the official SQuAD v1.1/v2.0 scripts."""

from __future__ import annotations

import pytest

from chatqa.metrics import exact_match, f1, normalize_answer, squad_v1, squad_v2


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The  Eiffel-Tower!", "eiffeltower"),  # punctuation is deleted, not replaced by a space
        ("An apple, a day.", "apple day"),
        ("The theory of THE atom", "theory of atom"),  # only whole-word articles go
        ("  Hello\tWorld \n", "hello world"),
        ("«Paris»", "«paris»"),  # only ASCII punctuation is removed, as in the official script
        ("the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match():
    assert exact_match("the Eiffel Tower", ["Eiffel tower."]) == 1.0
    assert exact_match("Eiffel Tower in Paris", ["Eiffel Tower"]) == 0.0
    assert exact_match("car", ["the bike", "A car"]) == 1.0


def test_f1_partial_overlap():
    # pred {eiffel, tower, in, paris}, gold {eiffel, tower}: P = 2/4, R = 2/2, F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert f1("the Eiffel Tower in Paris", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    # pred {big, red, car}, gold {red, car, parked, outside}: P = 2/3, R = 2/4, F1 = (2/3) / (7/6) = 4/7
    assert f1("big red car", ["red car parked outside"]) == pytest.approx(4 / 7)
    # repeated tokens count once per match: pred {new:2, york:2} vs gold {new, york}: P = 2/4, R = 1, F1 = 2/3
    assert f1("New York New York", ["new york"]) == pytest.approx(2 / 3)
    assert f1("nothing shared", ["red car"]) == 0.0


def test_max_over_references():
    # against "car" alone: P = 1/3, R = 1, F1 = 0.5; against the first reference 4/7 wins
    assert f1("big red car", ["red car parked outside", "car"]) == pytest.approx(4 / 7)
    assert f1("red car", ["blue bike", "the red car", "car"]) == 1.0
    assert exact_match("red car", ["blue bike", "the red car"]) == 1.0


def test_empty_answers_follow_the_v2_rule():
    assert f1("", [""]) == 1.0 and exact_match("", [""]) == 1.0
    assert f1("Paris", [""]) == 0.0 and exact_match("Paris", [""]) == 0.0
    assert f1("", ["Paris"]) == 0.0 and exact_match("", ["Paris"]) == 0.0
    assert f1("The", [""]) == 1.0  # normalises to nothing: counts as empty, as in the official script
    with pytest.raises(ValueError, match="unanswerable"):
        f1("x", [])
    with pytest.raises(TypeError, match="single string"):
        exact_match("x", "x")


def test_squad_v1():
    predictions = {"q1": "Eiffel Tower", "q2": "big red car", "q3": "nope", "extra": "ignored"}
    references = {"q1": ["the Eiffel Tower", "Paris"], "q2": ["red car parked outside"], "q3": ["yes"]}
    result = squad_v1(predictions, references)
    assert result["questions"] == 3
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 4 / 7 + 0) / 3)
    with pytest.raises(ValueError, match=r"1 of 3 questions have no prediction \('q3'\)"):
        squad_v1({"q1": "a", "q2": "b"}, references)
    with pytest.raises(ValueError, match="no questions"):
        squad_v1({}, {})


# Four questions: two answerable, two not. Predictions "" mean "abstain".
TOY_PREDICTIONS = {"q1": "Paris", "q2": "1990", "q3": "London", "q4": ""}
TOY_REFERENCES = {"q1": ["Paris", "in Paris"], "q2": ["in 1990"], "q3": [], "q4": []}
TOY_NO_ANSWER = {"q1": 0.1, "q2": 0.6, "q3": 0.8, "q4": 0.3}


def test_squad_v2_scores():
    result = squad_v2(TOY_PREDICTIONS, TOY_REFERENCES)
    # exact: q1 1, q2 0, q3 0 (answered an unanswerable), q4 1 (abstained correctly)
    # f1:    q1 1, q2 2/3 (P = 1/1, R = 1/2), q3 0, q4 1
    assert result["exact"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0 + 1) / 4)
    assert result["has_ans_exact"] == pytest.approx(50.0)
    assert result["has_ans_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert result["no_ans_exact"] == pytest.approx(50.0)
    assert result["no_ans_f1"] == pytest.approx(50.0)
    assert (result["has_ans_total"], result["no_ans_total"], result["total"]) == (2, 2, 4)
    assert "best_exact" not in result


def test_squad_v2_best_threshold():
    result = squad_v2(TOY_PREDICTIONS, TOY_REFERENCES, no_answer_scores=TOY_NO_ANSWER)
    # Start from "abstain on all": 2 (the two unanswerable). Walk by no-answer score:
    #   q1 (0.1) answerable, exact 1 -> 3 (best, thresh 0.1); q4 (0.3) unanswerable, pred "" -> +0 = 3;
    #   q2 (0.6) answerable, exact 0 -> 3;                    q3 (0.8) unanswerable, pred "London" -> -1 = 2.
    assert result["best_exact"] == pytest.approx(75.0)
    assert result["best_exact_thresh"] == pytest.approx(0.1)
    # F1: 2 -> q1 +1 = 3 (0.1) -> q4 +0 = 3 -> q2 +2/3 = 3.667 (best, thresh 0.6) -> q3 -1 = 2.667
    assert result["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    assert result["best_f1_thresh"] == pytest.approx(0.6)
    # exact/f1 still score the predictions as given
    assert result["exact"] == pytest.approx(50.0)


def test_squad_v2_best_threshold_when_abstaining_on_all_is_best():
    predictions = {"a": "wrong", "b": "also wrong"}
    references: dict[str, list[str]] = {"a": [], "b": []}
    # Probabilities (positive): the official script's 0.0 means "abstain on all" (every score > 0.0).
    probs = squad_v2(predictions, references, no_answer_scores={"a": 0.2, "b": 0.7})
    assert (probs["best_exact"], probs["best_exact_thresh"]) == (100.0, 0.0)
    # Logit differences can be negative: the threshold must lie below all of them to abstain on all.
    logits = squad_v2(predictions, references, no_answer_scores={"a": -1.0, "b": -2.0})
    assert logits["best_exact"] == 100.0
    assert logits["best_exact_thresh"] == -3.0
    assert all(score > logits["best_exact_thresh"] for score in (-1.0, -2.0))


def test_squad_v2_reference_that_normalises_to_nothing():
    # Official rule: such references are dropped; with none left the reference is "" (question stays "has answer").
    result = squad_v2({"q": ""}, {"q": ["The", "."]})
    assert result["exact"] == 100.0 and result["has_ans_total"] == 1 and result["no_ans_total"] == 0
    assert result["no_ans_exact"] == 0.0  # empty group


def test_squad_v2_argument_errors():
    with pytest.raises(ValueError, match="no prediction"):
        squad_v2({"q1": "x"}, TOY_REFERENCES)
    with pytest.raises(ValueError, match="no-answer score"):
        squad_v2(TOY_PREDICTIONS, TOY_REFERENCES, no_answer_scores={"q1": 0.0})
