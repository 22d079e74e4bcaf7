"""The reader checkpoint shipped in the repo still scores what its model card says."""

from __future__ import annotations

import json

import pytest

from chatqa.evaluation import evaluate_reader
from chatqa.reader import DEFAULT_READER_DIR
from tests.conftest import shared_file


@pytest.mark.slow
def test_shipped_reader_f1_on_a_fixed_sample_matches_its_model_card():
    metrics = json.loads((DEFAULT_READER_DIR / "metrics.json").read_text())
    recorded = metrics["sample"]
    report = evaluate_reader(shared_file(f"dev/{recorded['file']}"), sample=recorded["questions"])
    assert report["questions"] == recorded["questions"] == 200
    assert abs(report["f1"] - recorded["f1"]) <= 2.0, (report["f1"], recorded["f1"])
    assert abs(report["exact_match"] - recorded["exact_match"]) <= 3.0
    card = (DEFAULT_READER_DIR / "README.md").read_text()
    assert f"{metrics['evaluations']['squad-v1.1-dev-13art.json']['f1']:.2f}" in card


@pytest.mark.slow
def test_shipped_reader_abstains_on_a_passage_without_the_answer():
    from chatqa.reader import ExtractiveReader

    reader = ExtractiveReader()
    passage = (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It is named after the "
        "engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."
    )
    answered = reader.read("Who designed the Eiffel Tower?", [passage])
    assert not answered.abstained and "Eiffel" in answered.best.text
    assert reader.read("What is the boiling point of mercury?", [passage]).abstained
