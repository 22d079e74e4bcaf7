from __future__ import annotations

import json
import random

import pytest

import finetune.reader
from finetune.__main__ import main as finetune_main
from finetune.data import (
    TrainExample,
    antonym_negative,
    article_mentions,
    article_nouns,
    negated_negative,
    neighbour_negatives,
    removed_sentence_negative,
    replaced_negative,
    swapped_negative,
    with_negatives,
)
from finetune.reader import ReaderTrainer, ReaderTrainingConfig, length_bucketed_batches

PARAGRAPHS = [
    ("Paris", "The Eiffel Tower stands in Paris. Gustave Eiffel's company built it. It opened in 1889.",
     [("Who built the Eiffel Tower?", "Gustave Eiffel"), ("When did the tower open?", "1889")]),
    ("Paris", "The Louvre is the world's most visited museum. It holds the Mona Lisa. It is in Paris.",
     [("What painting does the Louvre hold?", "the Mona Lisa"), ("Which museum is the most visited?", "The Louvre")]),
    ("Birds", "Penguins are flightless birds. They live in the Southern Hemisphere. They eat krill.",
     [("Where do penguins live?", "Southern Hemisphere"), ("What do penguins eat?", "krill")]),
    ("Birds", "Ostriches are the largest living birds. They run at 70 km/h. They live in Africa.",
     [("How fast do ostriches run?", "70 km/h"), ("Where do ostriches live?", "Africa")]),
]


def squad_json() -> dict:
    articles: dict[str, list] = {}
    for n, (title, context, qas) in enumerate(PARAGRAPHS):
        articles.setdefault(title, []).append(
            {
                "context": context,
                "qas": [
                    {"id": f"p{n}q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
                    for i, (q, a) in enumerate(qas)
                ],
            }
        )
    return {"version": "1.1", "data": [{"title": t, "paragraphs": ps} for t, ps in articles.items()]}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    from knowledge.embedder import packaged_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny-base")
    BertForQuestionAnswering(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(squad_json()))
    return path


def _config(train_file, base, out, **overrides) -> ReaderTrainingConfig:
    values = dict(
        train=[str(train_file)], base=str(base), out=str(out), epochs=40, lr=3e-3, batch_size=4, max_length=64,
        stride=16, max_question_tokens=16, negatives=0.0, warmup=0.0, save_every=1000, log_every=1000, bf16=False,
        freeze_embeddings=False,
    )
    values.update(overrides)
    return ReaderTrainingConfig(**values)


def test_tiny_model_loss_falls_and_a_loadable_fp16_reader_is_written(tiny_base, train_file, tmp_path):
    from safetensors import safe_open

    from chatqa.reader import ExtractiveReader

    trainer = ReaderTrainer(_config(train_file, tiny_base, tmp_path / "run"))
    folder = trainer.run()
    losses = trainer.state["losses"]
    assert len(losses) == 80  # 8 windows / batch 4 × 40 epochs
    assert sum(losses[-8:]) / 8 < 0.5 * sum(losses[:8]) / 8, losses
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}  # noqa: SIM118 (not a dict)
    settings = json.loads((folder / "chatqa_reader.json").read_text())
    assert settings["max_length"] == 64 and settings["stride"] == 16
    reader = ExtractiveReader(folder, threshold=1e9)
    title, context, qas = PARAGRAPHS[2]
    answer = reader.read(qas[0][0], [context]).best
    assert answer is not None and context[answer.start : answer.end] == answer.text


def test_interrupted_run_keeps_the_old_model_and_resumes(tiny_base, train_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "marker.txt").write_text("the model the app uses")
    calls = {"n": 0}
    real_collate = finetune.reader.collate

    def interrupting_collate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated Ctrl-C at step 8")
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(finetune.reader, "collate", interrupting_collate)
    cfg = _config(train_file, tiny_base, out, epochs=5, save_every=3)
    with pytest.raises(KeyboardInterrupt):
        ReaderTrainer(cfg).run()
    assert (out / "model" / "marker.txt").read_text() == "the model the app uses"  # untouched
    state = json.loads((out / "state" / "trainer_state.json").read_text())
    assert state["step"] == 6  # the last checkpoint before the interruption
    assert not (out / "state.tmp").exists() or not (out / "state.tmp" / "trainer_state.json").exists()

    monkeypatch.setattr(finetune.reader, "collate", real_collate)
    trainer = ReaderTrainer(cfg)
    folder = trainer.run()
    assert trainer.state["step"] == 10 and len(trainer.state["losses"]) == 10  # 6 restored + 4 new
    assert (folder / "model.safetensors").exists() and not (folder / "marker.txt").exists()


def test_removed_sentence_negative_drops_the_answer():
    context = "Alpha is first. Gustave Eiffel built the tower. Omega comes last. Nothing else here."
    start = context.index("Gustave Eiffel")
    ex = TrainExample("Who built it?", context, (start, start + len("Gustave Eiffel")), "positive", "t")
    neg = removed_sentence_negative(ex)
    assert neg is not None and neg.answer is None and neg.kind == "removed"
    assert neg.context == "Alpha is first. Omega comes last. Nothing else here."
    # the answer text still elsewhere in the paragraph: no negative
    twice = context + " Gustave Eiffel again."
    assert removed_sentence_negative(TrainExample("q", twice, ex.answer, "positive", "t")) is None


def _span(context: str, answer: str) -> tuple[int, int]:
    return context.index(answer), context.index(answer) + len(answer)


def test_neighbour_negative_is_the_most_similar_paragraph_without_the_answer():
    penguins, ostriches = PARAGRAPHS[2][1], PARAGRAPHS[3][1]
    examples = [
        TrainExample("Where do penguins live?", penguins, _span(penguins, "Southern Hemisphere"), "positive", "Birds"),
        TrainExample("Where do ostriches live?", ostriches, _span(ostriches, "Africa"), "positive", "Birds"),
        TrainExample("Who built it?", PARAGRAPHS[0][1], _span(PARAGRAPHS[0][1], "Gustave Eiffel"), "positive", "Paris"),
    ]
    negatives = neighbour_negatives(examples, [0, 2])
    assert list(negatives) == [0]  # the Paris article has one paragraph here: no neighbour
    assert negatives[0].context == ostriches and negatives[0].answer is None and negatives[0].kind == "neighbour"


TESLA = ("Nikola Tesla moved to Paris in 1882 to work for Continental Edison. In 1884 he sailed to New York, "
         "where Thomas Edison hired him.")


def _tesla(question: str, answer: str) -> TrainExample:
    return TrainExample(question, TESLA, _span(TESLA, answer), "positive", "Tesla")


def test_swapped_negative_replaces_a_name_or_number_of_the_paragraph_with_another_of_its_kind():
    ex = _tesla("When did Nikola Tesla sail to New York?", "1884")
    mentions = article_mentions([ex])
    assert mentions["Tesla"]["number"] == ["1882", "1884"]
    assert "Thomas Edison" in mentions["Tesla"]["name"] and "Paris" in mentions["Tesla"]["name"]
    seen = set()
    for seed in range(20):
        neg = swapped_negative(ex, mentions["Tesla"], random.Random(seed))
        assert neg is not None and neg.answer is None and neg.kind == "swapped" and neg.context == TESLA
        seen.add(neg.question)
    # one of the question's two names replaced by another name of the paragraph, never by the answer or the
    # name itself, and the question word kept
    assert "When did Thomas Edison sail to New York?" in seen and "When did Nikola Tesla sail to Paris?" in seen
    assert all(q.startswith("When did ") and "1884" not in q for q in seen)
    assert not any("Nikola Tesla" in q and "New York" in q for q in seen)


def test_swapped_negative_needs_a_mention_of_the_paragraph_and_a_replacement():
    assert swapped_negative(_tesla("When did he sail?", "1884"), {}, random.Random(0)) is None
    # the paragraph's only other name is the answer itself
    alone = TrainExample("Where does Anna live?", "Anna lives in Oslo.", _span("Anna lives in Oslo.", "Oslo"), "positive", "g")
    assert swapped_negative(alone, article_mentions([alone])["g"], random.Random(0)) is None


def test_antonym_and_negated_negatives_change_the_question_and_keep_the_paragraph():
    neg = antonym_negative(_tesla("In what year did Tesla first sail to New York?", "1884"))
    assert neg is not None and neg.question == "In what year did Tesla last sail to New York?"
    assert neg.context == TESLA and neg.answer is None and neg.kind == "antonym"
    assert antonym_negative(_tesla("Where did Tesla sail?", "New York")) is None
    assert antonym_negative(_tesla("Who hired Tesla in New York?", "Thomas Edison")) is None  # names stay names

    assert negated_negative(_tesla("When did Tesla sail to New York?", "1884")).question == (
        "When didn't Tesla sail to New York?"
    )
    assert negated_negative(_tesla("Who was Tesla's employer in Paris?", "Continental Edison")).question == (
        "Who was not Tesla's employer in Paris?"
    )
    assert negated_negative(_tesla("Who never hired Tesla?", "Thomas Edison")) is None  # already negative
    assert negated_negative(_tesla("Where to in 1884?", "New York")) is None  # no auxiliary


def test_replaced_negative_swaps_a_noun_the_paragraph_uses_for_one_it_does_not():
    office = "The company moved its office to Paris. The office of the company was small."
    ship = "The ship of the navy was fast. The crew of the ship sailed to Oslo."
    ex = TrainExample("Where was the office of the company?", office, _span(office, "Paris"), "positive", "g")
    other = TrainExample("Where did the ship sail?", ship, _span(ship, "Oslo"), "positive", "g")
    nouns = article_nouns([ex, other])
    assert nouns["g"] == ["office", "company", "ship", "navy", "crew"]  # between a determiner and "of", "to", "."...
    seen = set()
    for seed in range(20):
        neg = replaced_negative(ex, nouns["g"], random.Random(seed))
        assert neg is not None and neg.answer is None and neg.kind == "replaced" and neg.context == office
        seen.add(neg.question)
    # one of the question's nouns that the paragraph uses, replaced by one it does not use
    allowed = {q for new in ("ship", "navy", "crew")
               for q in (f"Where was the {new} of the company?", f"Where was the office of the {new}?")}
    assert seen <= allowed and len(seen) > 2
    assert replaced_negative(ex, ["office", "company"], random.Random(0)) is None  # nothing to put in
    assert replaced_negative(_tesla("When did Tesla sail?", "1884"), nouns["g"], random.Random(0)) is None
    built = [n for n in with_negatives([ex, other], ratio=1.0, kinds=["replaced"]) if n.answer is None]
    assert [n.kind for n in built] == ["replaced", "replaced"]  # with_negatives finds the article's nouns


def test_with_negatives_adds_about_the_ratio():
    examples = [
        TrainExample(q, c, (c.index(a), c.index(a) + len(a)), "positive", t)
        for t, c, qas in PARAGRAPHS for q, a in qas
    ]
    mixed = with_negatives(examples, ratio=0.5, seed=1)
    negatives = [ex for ex in mixed if ex.answer is None]
    assert len(mixed) == len(examples) + len(negatives) and 1 <= len(negatives) <= 4
    assert mixed == with_negatives(examples, ratio=0.5, seed=1)  # deterministic
    with pytest.raises(ValueError, match="negative ratio must be >= 0"):
        with_negatives(examples, ratio=-1)
    only = with_negatives(examples, ratio=1.0, seed=1, kinds=["negated"])
    assert {ex.kind for ex in only if ex.answer is None} == {"negated"}
    with pytest.raises(ValueError, match="negative kinds must be among"):
        with_negatives(examples, ratio=0.5, kinds=["invented"])


def test_length_bucketed_batches_cover_every_window_once():
    lengths = [random.Random(i).randint(10, 300) for i in range(1000)]
    batches = length_bucketed_batches(lengths, 32, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) <= 32 for b in batches)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 40  # windows of similar length share a batch: little padding
    assert batches == length_bucketed_batches(lengths, 32, random.Random(0))


def test_cli_help_and_bad_arguments(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        finetune_main(["reader", "--help"])
    assert exit_info.value.code == 0 and "--max-train-samples" in capsys.readouterr().out
    code = finetune_main(["reader", "--train", str(tmp_path / "x.json"), "--batch-size", "10", "--grad-accum", "3"])
    assert code == 1 and "batch_size must be a multiple of grad_accum" in capsys.readouterr().err


def test_a_continued_run_records_its_parent_and_the_card_shows_every_stage(tmp_path):
    from dataclasses import asdict

    from finetune.model_card import reader_model_card
    from finetune.reader import ReaderTrainingConfig, parent_training

    first = {"training": asdict(ReaderTrainingConfig(train=["squad.json"], epochs=0.4, eval="dev.json")), "steps": 10,
             "train_seconds": 600, "curve": [{"step": 5, "windows_seen": 160, "exact_match": 50.0, "f1": 60.0}],
             "calibration": {}, "parent": None}
    base = tmp_path / "base"
    base.mkdir()
    (base / "training.json").write_text(json.dumps(first))
    assert parent_training(base) == first
    assert parent_training(None) is None and parent_training(tmp_path / "no-record") is None

    second = {"training": asdict(ReaderTrainingConfig(train=["squad.json"], base=str(base), lr=5e-5, eval=None)),
              "steps": 20, "train_seconds": 1200, "curve": [], "parent": parent_training(base),
              "calibration": {"file": "v2.json", "articles": "even", "questions": 9, "best_f1": 61.0}}
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "training.json").write_text(json.dumps(second))
    (folder / "chatqa_reader.json").write_text(json.dumps({"no_answer_threshold": -1.5}))
    report = {"questions": 9, "exact_match": 55.0, "f1": 61.0, "has_ans_f1": 50.0, "no_ans_f1": 70.0}
    card = reader_model_card(folder, evaluation={"v2.json": report}, hardware="a test")
    assert card.index("### Stage 1: from the packaged MiniLM") < card.index("### Stage 2: from the stage 1 checkpoint")
    assert "0.4 epochs" in card and "lr 5e-05" in card and "| 5 | 160 | 50.0 | 60.0 |" in card
    assert "No evaluation during this stage." in card and "HasAns F1 50.0, NoAns F1 70.0" in card
    assert "(removed, neighbour, swapped, antonym, negated, replaced)" in card
