"""`chatqa eval docs`: the metric pieces on hand-made cases, and the whole evaluation on a tiny fake set."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest

import knowledge.base
from chatqa.evaluation import answer_recall, evaluate_docs, gold_rank, percentile
from chatqa.evaluation.docqa import clean, score_turn, summarise, token_f1
from knowledge.errors import ChatQAError
from tests.chatqa.test_engine import EIFFEL, PENGUINS, FakeReader
from tests.conftest import FakeEmbedder


# -- metric pieces -----------------------------------------------------------------------------------------------
def test_answer_recall_counts_the_gold_tokens_found():
    assert answer_recall("Use the -k flag to keep the input.", "-k --keep") == pytest.approx(1.0)
    assert answer_recall("HTTP Basic Auth.", "pass a proxies dictionary") == 0.0
    assert answer_recall("bzip2 -d", "bunzip2 (or bzip2 -d)") == pytest.approx(0.5)  # bzip2, d of bunzip2 or bzip2 d
    assert answer_recall("the the the", "The answer") == 0.0  # articles are dropped before counting
    assert answer_recall("one two", "two two one") == pytest.approx(2 / 3)  # counts, not sets
    with pytest.raises(ValueError, match="no tokens"):
        answer_recall("anything", "the")


def test_ligatures_and_typographic_quotes_score_like_plain_text():
    assert clean("ﬁle") == "file" and clean("don’t") == "don't"
    assert token_f1("Force overwrite of output files", "Force overwrite of output ﬁles") == pytest.approx(1.0)
    assert answer_recall("it doesn't make things faster", "--fast doesn’t make things") == pytest.approx(3 / 4)


def _hit(doc_id: int, start: int, end: int):
    return SimpleNamespace(doc_id=doc_id, start=start, end=end)


def test_gold_rank_needs_half_of_the_answer_in_a_passage_of_its_document():
    passages = [_hit(2, 0, 100), _hit(1, 0, 50), _hit(1, 40, 200)]
    assert gold_rank(passages, 1, 60, 70) == 3  # only the third passage holds it
    assert gold_rank(passages, 1, 10, 20) == 2  # the first passage is of another document
    assert gold_rank(passages, 1, 30, 70) == 2  # 20 of 40 characters in the second passage: half is enough
    assert gold_rank(passages, 1, 300, 310) is None
    assert gold_rank([], 1, 0, 1) is None


def test_percentile_interpolates_like_numpy():
    assert percentile([3.0, 1.0, 2.0], 50) == pytest.approx(2.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([0.5], 95) == pytest.approx(0.5)
    assert percentile([], 50) is None


def test_score_turn_and_summarise():
    span = SimpleNamespace(text="Gustave Eiffel")
    answered = SimpleNamespace(abstained=False, mode="extractive", span=span, answer="It was designed by Gustave Eiffel.",
                               passages=[_hit(7, 0, 100)])
    abstained = SimpleNamespace(abstained=True, mode="extractive", span=None, answer="I could not find …", passages=[])
    item = {"kind": "factoid", "answer": "Gustave Eiffel", "answer_start": 20,
            "reference": "Gustave Eiffel designed it."}
    row = score_turn(answered, item, 7, 0.25)
    assert row["span_f1"] == pytest.approx(100.0) and row["answer_recall"] == pytest.approx(100.0)
    assert row["answer_f1"] == pytest.approx(80.0)  # all 4 reference tokens among the 6 shown: 2·(4/6)·1/(4/6+1)
    assert row["found"] == 1.0 and row["abstained"] == 0.0
    missed = score_turn(abstained, item, 7, 0.75)
    assert (missed["span_f1"], missed["answer_recall"], missed["answer_f1"], missed["found"]) == (0.0, 0.0, 0.0, 0.0)
    refused = score_turn(abstained, {"kind": "unanswerable", "answer": ""}, 7, 0.5)
    assert "span_f1" not in refused and refused["abstained"] == 1.0
    summary = summarise([row, missed, refused], k=5)
    assert summary["answerable"] == 2 and summary["unanswerable"] == 1
    assert summary["span_f1"] == pytest.approx(50.0) and summary["recall@5"] == pytest.approx(0.5)
    assert summary["abstain_answerable"] == pytest.approx(0.5) and summary["abstain_unanswerable"] == 1.0
    assert summary["first_token_p50_s"] == pytest.approx(0.5) and summary["generative_share"] == 0.0


# -- the whole evaluation on a tiny fake set ---------------------------------------------------------------------
def _item(qid: str, question: str, kind: str, document: str, answer: str = "", reference: str = "") -> dict:
    text = EIFFEL if document == "eiffel.txt" else PENGUINS
    return {"id": qid, "question": question, "kind": kind, "document": document, "answer": answer,
            "answer_start": text.find(answer) if answer else None, "reference": reference}


@pytest.fixture
def tiny_set(tmp_path):
    """A doc-QA set over the fake engine's two documents (the fixture writes them into tmp_path)."""
    (tmp_path / "eiffel.txt").write_text(EIFFEL)
    (tmp_path / "penguins.txt").write_text(PENGUINS)
    sha = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("eiffel.txt", "penguins.txt")}
    data = {
        "documents": [{"name": name, "sha256": digest} for name, digest in sha.items()],
        "questions": [
            _item("q1", "Who designed the Eiffel Tower?", "factoid", "eiffel.txt", "Gustave Eiffel",
                  "It was designed by Gustave Eiffel."),
            _item("q2", "When was the tower built?", "factoid", "eiffel.txt", "1887 to 1889",
                  "It was built from 1887 to 1889."),
            _item("q3", "What do penguins eat?", "factoid", "penguins.txt", "krill", "Penguins eat krill."),
            _item("q4", "How tall is the Eiffel Tower?", "unanswerable", "eiffel.txt"),
        ],
        "conversations": [{"id": "c1", "document": "eiffel.txt", "turns": [
            {**_item("", "When was the Eiffel Tower built?", "factoid", "eiffel.txt", "1887 to 1889",
                     "From 1887 to 1889."), "standalone": "When was the Eiffel Tower built?"},
            {**_item("", "Who designed it?", "factoid", "eiffel.txt", "Gustave Eiffel", "Gustave Eiffel."),
             "standalone": "Who designed the Eiffel Tower?"},
        ]}],
    }
    for turn in data["conversations"][0]["turns"]:
        del turn["id"]
    path = tmp_path / "docqa.json"
    path.write_text(json.dumps(data))
    return path


def test_evaluate_docs_on_the_fake_engine(fake_engine, tiny_set, tmp_path):
    report = evaluate_docs(tiny_set, tmp_path, fake_engine, modes=("extractive",), k=5)
    questions = report["modes"]["extractive"]["questions"]
    assert (questions["answerable"], questions["unanswerable"]) == (3, 1)
    assert questions["span_f1"] == pytest.approx(100.0) and questions["answer_recall"] == pytest.approx(100.0)
    assert 0 < questions["answer_f1"] < 100  # the template sentence is longer than the reference
    assert questions["abstain_answerable"] == 0.0 and questions["abstain_unanswerable"] == 1.0
    assert questions["recall@5"] == 1.0 and questions["generative_share"] == 0.0
    assert 0 <= questions["first_token_p50_s"] <= questions["first_token_p95_s"] < 5  # rounded to ms: may be 0
    first, follow = report["modes"]["extractive"]["first_turns"], report["modes"]["extractive"]["followups"]
    assert first["answerable"] == 1 and follow["answerable"] == 1
    assert follow["span_f1"] == pytest.approx(100.0)  # "Who designed it?" is resolved from the history
    assert (report["documents"], report["questions"], report["conversations"], report["turns"]) == (2, 4, 1, 2)
    # the documents were already in the knowledge base: nothing was added twice
    assert len(fake_engine.kb.list_documents()) == 2


def test_evaluate_docs_refuses_missing_or_changed_documents(fake_engine, tiny_set, tmp_path):
    with pytest.raises(ChatQAError, match="missing; build the documents"):
        evaluate_docs(tiny_set, tmp_path / "nowhere", fake_engine)
    (tmp_path / "penguins.txt").write_text(PENGUINS + " They swim.")
    with pytest.raises(ChatQAError, match="is not the recorded"):
        evaluate_docs(tiny_set, tmp_path, fake_engine)


def test_cli_eval_docs(tiny_set, tmp_path, monkeypatch, capsys):
    import chatqa.engine
    from chatqa.cli import main
    from chatqa.log import ConversationLog

    monkeypatch.setattr(knowledge.base, "Embedder", FakeEmbedder)

    def fake_open_engine(data_dir, *, settings=None, reader_checkpoint=None, decoder=True, lazy=False,
                         decoder_model=None):
        return chatqa.engine.ChatEngine(knowledge.base.KnowledgeBase(data_dir), FakeReader(),
                                        log=ConversationLog(data_dir), settings=settings)

    monkeypatch.setattr(chatqa.engine, "open_engine", fake_open_engine)
    argv = ["eval", "docs", "--docs", str(tmp_path), "--file", str(tiny_set), "-q"]
    assert main(argv + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["modes"]["extractive"]["questions"]["span_f1"] == pytest.approx(100.0)
    assert (tmp_path / "kb" / "chatqa.db").exists()  # its own data directory, beside the documents
    assert report["modes"]["extractive"]["questions_by_kind"]["unanswerable"]["abstain_unanswerable"] == 1.0
    details = tmp_path / "details.jsonl"
    assert main(argv + ["--mode", "extractive", "--limit", "2", "--details", str(details)]) == 0  # reused
    out = capsys.readouterr().out
    assert "span_f1" in out and "ext:followups" in out and "2 questions, 1 conversations" in out
    with knowledge.base.KnowledgeBase(tmp_path / "kb") as kb:
        assert sorted(d.name for d in kb.list_documents()) == ["eiffel.txt", "penguins.txt"]  # nothing added twice
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2", "c1.1", "c1.2"]
    assert rows[0]["span"] == "Gustave Eiffel" and rows[0]["span_f1"] == 100.0 and rows[3]["group"] == "followups"

    assert main(["eval", "docs", "--docs", str(tmp_path / "none"), "--file", str(tiny_set)]) == 1
    assert "missing; build the documents" in capsys.readouterr().err

    # --rewriter model: follow-ups are rewritten by the model (here a stand-in that records its calls)
    calls = []

    class StandInRewriter:
        def rewrite(self, question, history):
            calls.append((question, list(history)))
            return "Who designed the tower in Paris?"

    import chatqa.rewrite_eval

    monkeypatch.setattr(chatqa.rewrite_eval, "load_rewriter", lambda data_dir, folder: StandInRewriter())
    assert main(argv + ["--rewriter", "model", "--details", str(details), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rewriter"] == "model"
    rows = {r["id"]: r for r in map(json.loads, details.read_text().splitlines())}
    assert calls == [("Who designed it?", ["When was the Eiffel Tower built?"])]  # the follow-up only
    assert rows["c1.2"]["standalone_question"] == "Who designed the tower in Paris?"
    assert rows["c1.1"]["standalone_question"] == "When was the Eiffel Tower built?"
