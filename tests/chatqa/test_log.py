from __future__ import annotations

import logging
import sqlite3
import threading

import numpy as np
import pytest

from chatqa.log import ConversationLog, InvalidFeedback, UnknownConversation, UnknownTurn
from chatqa.turn import AnswerSpan, TurnResult
from knowledge.base import KnowledgeBase
from knowledge.search import Hit

EIFFEL = "The Eiffel Tower was built from 1887 to 1889 by the company of Gustave Eiffel."
PENGUINS = "Penguins are aquatic flightless birds living almost only in the Southern Hemisphere."


def make_hits() -> list[Hit]:
    return [
        Hit(11, 1, "eiffel.txt", EIFFEL, 100, 100 + len(EIFFEL), None, 0.031, dense_score=0.8, bm25_score=4.2),
        Hit(27, 2, "penguins.md", PENGUINS, 0, len(PENGUINS), 3, 0.016, dense_score=0.2, bm25_score=None),
    ]


def make_turn(question: str = "When was the Eiffel Tower built?", *, abstain: bool = False) -> TurnResult:
    hits = make_hits()
    start = EIFFEL.index("1887 to 1889")
    span = None if abstain else AnswerSpan(0, 11, 1, "eiffel.txt", start, start + 12, "1887 to 1889", 7.5, -1.25)
    return TurnResult(
        question=question,
        standalone_question=question + " (standalone)",
        answer="I don't know." if abstain else "From 1887 to 1889.",
        mode="extractive",
        abstained=abstain,
        span=span,
        passages=hits,
        timings={"condense": 0.01, "search": 0.02, "read": 0.25},
        model_versions={"reader": "default", "decoder": "smollm2-135m"},
    )


@pytest.fixture
def log(tmp_path):
    with ConversationLog(tmp_path / "data") as log:
        yield log


def _counts(log: ConversationLog) -> tuple[int, ...]:
    with log._lock:
        return tuple(
            log.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("conversations", "turns", "retrievals", "feedback")
        )


def test_recorded_turn_round_trips_with_its_passages(log):
    cid = log.new_conversation("Paris trip")
    turn = make_turn()
    turn_id = log.record(cid, turn)
    assert isinstance(turn_id, int)
    assert turn.turn_id == turn_id and turn.conversation_id == cid

    [logged] = log.history(cid)
    assert logged == log.turn(turn_id)
    assert (logged.id, logged.conversation_id, logged.turn_index) == (turn_id, cid, 0)
    assert logged.question == "When was the Eiffel Tower built?"
    assert logged.standalone_question == "When was the Eiffel Tower built? (standalone)"
    assert (logged.answer, logged.mode, logged.abstained) == ("From 1887 to 1889.", "extractive", False)
    assert (logged.span_rank, logged.span_chunk_id, logged.span_doc_id) == (0, 11, 1)
    assert EIFFEL[logged.span_start : logged.span_end] == logged.span_text == "1887 to 1889"
    assert (logged.span_score, logged.no_answer_score) == (7.5, -1.25)
    assert logged.latency_seconds == pytest.approx(0.28)
    assert logged.timings == {"condense": 0.01, "search": 0.02, "read": 0.25}
    assert logged.model_versions == {"reader": "default", "decoder": "smollm2-135m"}
    assert logged.created.endswith("+00:00")
    assert logged.feedback is None

    assert [p.rank for p in logged.passages] == [0, 1]
    assert [p.text for p in logged.passages] == [EIFFEL, PENGUINS]  # copies: no chunk 11 or 27 exists anywhere
    first, second = logged.passages
    assert (first.chunk_id, first.doc_id, first.doc_name, first.start, first.end) == (
        11, 1, "eiffel.txt", 100, 100 + len(EIFFEL)
    )
    assert (first.score, first.dense_score, first.bm25_score) == (0.031, 0.8, 4.2)
    assert second.bm25_score is None
    # everything, the page included, survives the trip back to a Hit (the ranks within each retriever are not kept)
    assert second.as_hit() == Hit(27, 2, "penguins.md", PENGUINS, 0, len(PENGUINS), 3, 0.016, 0.2, None)


def test_numpy_scores_are_stored_as_numbers(log):
    turn = make_turn()
    turn.passages = [
        Hit(np.int64(5), np.int64(1), "a.txt", "some text", np.int64(0), np.int64(9), None, np.float32(0.5),
            dense_score=np.float32(0.25))
    ]
    turn.timings = {"read": np.float32(0.5)}
    assert log.record("c1", turn) is not None
    [p] = log.turn(turn.turn_id).passages
    assert (p.chunk_id, p.score, p.dense_score) == (5, 0.5, 0.25)
    assert log.turn(turn.turn_id).latency_seconds == 0.5


def test_turns_keep_order_and_index(log):
    cid = log.new_conversation()
    questions = ["When was it built?", "By whom?", "How tall is it?"]
    ids = [log.record(cid, make_turn(q)) for q in questions]
    history = log.history(cid)
    assert [t.question for t in history] == questions
    assert [t.turn_index for t in history] == [0, 1, 2]
    assert [t.id for t in history] == ids
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_history_of_unknown_conversation(log):
    with pytest.raises(UnknownConversation, match="no conversation with id 'nope'"):
        log.history("nope")
    assert log.history(log.new_conversation()) == []


def test_unknown_turn(log):
    with pytest.raises(UnknownTurn, match="no turn with id 42"):
        log.turn(42)


def test_record_creates_a_conversation_the_client_named(log):
    turn_id = log.record("client-chosen-id", make_turn("Who designed it?"))
    assert turn_id is not None
    assert [t.id for t in log.history("client-chosen-id")] == [turn_id]
    [summary] = log.conversations()
    assert (summary.id, summary.title, summary.n_turns) == ("client-chosen-id", "Who designed it?", 1)


def test_conversations_newest_first_with_counts_and_titles(log):
    a = log.new_conversation()
    b = log.new_conversation("Penguins")
    c = log.new_conversation()
    log.record(a, make_turn("First question of a?"))
    log.record(a, make_turn("Second question of a?"))
    log.record(b, make_turn("Where do penguins live?"))
    summaries = log.conversations()
    assert [s.id for s in summaries] == [b, a, c]  # b was updated last, c never
    assert [s.title for s in summaries] == ["Penguins", "First question of a?", ""]
    assert [s.n_turns for s in summaries] == [1, 2, 0]
    assert summaries[0].updated > summaries[0].created
    assert summaries[2].updated == summaries[2].created
    assert [s.id for s in log.conversations(limit=2)] == [b, a]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        log.conversations(limit=0)


def test_record_an_abstention(log):
    turn = make_turn("What colour is the moon?", abstain=True)
    turn_id = log.record("c", turn)
    logged = log.turn(turn_id)
    assert logged.abstained is True
    assert logged.answer == "I don't know."
    spans = (logged.span_rank, logged.span_chunk_id, logged.span_start, logged.span_end, logged.span_text)
    assert spans == (None,) * 5
    assert (logged.span_score, logged.no_answer_score) == (None, None)
    assert len(logged.passages) == 2  # rejected passages are kept: they are negatives for training


def test_record_never_raises_on_a_closed_connection(log, caplog):
    cid = log.new_conversation()
    log.db.conn.close()  # the connection dies under the log's feet
    turn = make_turn()
    with caplog.at_level(logging.ERROR, logger="chatqa.log"):
        assert log.record(cid, turn) is None
    assert turn.turn_id is None
    [record] = caplog.records
    assert "could not log a turn" in record.getMessage() and record.exc_info is not None


def test_record_never_raises_and_writes_nothing_when_a_write_fails(log, caplog, monkeypatch):
    cid = log.new_conversation()
    db = log.db
    real_execute = db.execute

    def failing_execute(sql, params=None):
        if sql.startswith("INSERT INTO retrievals"):
            raise sqlite3.OperationalError("disk I/O error")
        return real_execute(sql, params)

    monkeypatch.setattr(db, "execute", failing_execute)
    with caplog.at_level(logging.ERROR, logger="chatqa.log"):
        assert log.record(cid, make_turn()) is None
    assert "disk I/O error" in caplog.text
    monkeypatch.undo()
    assert _counts(log) == (1, 0, 0, 0)  # the turn rolled back with its retrievals
    assert log.record(cid, make_turn()) is not None  # and the log still works afterwards


def test_feedback_up_and_down_latest_counts(log):
    turn_id = log.record("c", make_turn())
    first = log.feedback(turn_id, "up")
    second = log.feedback(turn_id, "down", comment="  wrong tower  ", typed_answer="  1887–1889 ")
    assert second > first
    fb = log.turn(turn_id).feedback
    assert (fb.id, fb.turn_id, fb.rating) == (second, turn_id, "down")
    assert (fb.comment, fb.typed_answer) == ("wrong tower", "1887–1889")
    assert (fb.corrected_rank, fb.corrected_start, fb.corrected_end, fb.corrected_text) == (None,) * 4
    assert _counts(log)[3] == 2
    log.feedback(turn_id, "up", comment="   ")
    fb = log.turn(turn_id).feedback
    assert (fb.rating, fb.comment) == ("up", None)


def test_feedback_with_a_span_stores_the_exact_text(log):
    turn_id = log.record("c", make_turn("Where do penguins live?"))
    start = PENGUINS.index("Southern Hemisphere")
    log.feedback(turn_id, "down", passage_rank=1, start=start, end=start + 19)
    fb = log.turn(turn_id).feedback
    assert (fb.corrected_rank, fb.corrected_start, fb.corrected_end) == (1, start, start + 19)
    assert fb.corrected_text == "Southern Hemisphere"
    log.feedback(turn_id, "down", passage_rank=1, start=0, end=len(PENGUINS))  # the whole passage is allowed
    assert log.turn(turn_id).feedback.corrected_text == PENGUINS


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rating": "meh"}, InvalidFeedback, "rating must be 'up' or 'down', got 'meh'"),
        ({"turn_id": 999}, UnknownTurn, "no turn with id 999"),
        ({"passage_rank": 2, "start": 0, "end": 5}, InvalidFeedback, "passage_rank 2 is not a passage of turn .*ranks 0 to 1"),
        ({"passage_rank": -1, "start": 0, "end": 5}, InvalidFeedback, "passage_rank -1 is not a passage"),
        ({"passage_rank": 0, "start": 5, "end": 5}, InvalidFeedback, r"span \[5, 5\) is not a non-empty range"),
        ({"passage_rank": 0, "start": 9, "end": 3}, InvalidFeedback, r"span \[9, 3\)"),
        ({"passage_rank": 0, "start": -1, "end": 3}, InvalidFeedback, r"span \[-1, 3\)"),
        ({"passage_rank": 0, "start": 0, "end": len(EIFFEL) + 1}, InvalidFeedback, f"which has {len(EIFFEL)} characters"),
        ({"passage_rank": 0, "start": 3, "end": 4}, InvalidFeedback, "only whitespace"),
        ({"passage_rank": 0, "start": 3}, InvalidFeedback, "needs passage_rank, start and end together"),
        ({"start": 0, "end": 3}, InvalidFeedback, "needs passage_rank, start and end together"),
        ({"passage_rank": 0, "start": 0.0, "end": 3}, InvalidFeedback, "must be integers"),
        ({"comment": "x" * 2001}, InvalidFeedback, "the comment has 2,001 characters; at most 2,000"),
        ({"typed_answer": "y" * 3000}, InvalidFeedback, "the typed answer has 3,000 characters"),
    ],
)
def test_invalid_feedback_is_refused_and_stores_nothing(log, kwargs, error, message):
    turn_id = log.record("c", make_turn())
    assert EIFFEL[3] == " "
    before = _counts(log)
    args = {"turn_id": turn_id, "rating": "down", **kwargs}
    with pytest.raises(error, match=message):
        log.feedback(args.pop("turn_id"), args.pop("rating"), **args)
    assert _counts(log) == before


def test_feedback_on_a_turn_without_passages(log):
    turn = make_turn(abstain=True)
    turn.passages = []
    turn_id = log.record("c", turn)
    with pytest.raises(InvalidFeedback, match="which has no passages"):
        log.feedback(turn_id, "down", passage_rank=0, start=0, end=1)
    assert log.feedback(turn_id, "up") > 0  # a confirmed abstention


def test_log_and_knowledge_base_share_a_data_dir(tmp_path, fake_embedder):
    data = tmp_path / "data"
    (tmp_path / "eiffel.txt").write_text(EIFFEL)
    (tmp_path / "penguins.txt").write_text(PENGUINS)
    with KnowledgeBase(data, embedder=fake_embedder) as kb, ConversationLog(data) as log:
        kb.add_files([tmp_path / "eiffel.txt"])
        hits = kb.search("When was the Eiffel Tower built?", k=2)
        assert hits and hits[0].doc_name == "eiffel.txt"
        turn = make_turn()
        turn.passages = hits
        turn_id = log.record("c", turn)
        assert turn_id is not None
        kb.add_files([tmp_path / "penguins.txt"])  # the knowledge base writes after the log
        assert sorted(d.name for d in kb.list_documents()) == ["eiffel.txt", "penguins.txt"]
        kb.remove(hits[0].doc_id)  # the chunk leaves the knowledge base; the log keeps its copy
        assert [d.name for d in kb.list_documents()] == ["penguins.txt"]
        assert [p.text for p in log.turn(turn_id).passages] == [h.text for h in hits]
        assert kb.search("penguins", k=1)[0].doc_name == "penguins.txt"
    with ConversationLog(data) as log, KnowledgeBase(data, embedder=fake_embedder) as kb:  # both reopen
        assert log.history("c")[0].passages[0].chunk_id == hits[0].chunk_id
        assert [d.name for d in kb.list_documents()] == ["penguins.txt"]


def test_concurrent_records(tmp_path):
    data = tmp_path / "data"
    with ConversationLog(data) as log, ConversationLog(data) as other:  # one shared connection, and a second one
        errors: list[BaseException] = []
        ids: list[int | None] = []

        def work(target: ConversationLog, name: str) -> None:
            try:
                for i in range(15):
                    ids.append(target.record("shared", make_turn(f"{name} {i}?")))
                    ids.append(target.record(f"own-{name}", make_turn(f"{name} {i}?")))
            except BaseException as e:  # pragma: no cover - record must not raise
                errors.append(e)

        threads = [
            threading.Thread(target=work, args=(target, name))
            for target, name in ((log, "a"), (log, "b"), (other, "c"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert None not in ids and len(set(ids)) == 90
        shared = log.history("shared")
        assert [t.turn_index for t in shared] == list(range(45))
        for name in "abc":
            assert [t.question for t in shared if t.question.startswith(name)] == [f"{name} {i}?" for i in range(15)]
            assert len(log.history(f"own-{name}")) == 15
        assert all(len(t.passages) == 2 for t in shared)


def test_a_log_written_before_pages_were_kept_gains_the_column(tmp_path):
    conn = sqlite3.connect(tmp_path / "chatqa.db")
    conn.execute(
        "CREATE TABLE retrievals (turn_id INTEGER NOT NULL, rank INTEGER NOT NULL, chunk_id INTEGER, doc_id INTEGER, "
        "doc_name TEXT, chunk_text TEXT NOT NULL, chunk_start INTEGER, chunk_end INTEGER, score REAL, "
        "dense_score REAL, bm25_score REAL, PRIMARY KEY (turn_id, rank))"
    )
    conn.commit()
    conn.close()
    with ConversationLog(tmp_path) as log:
        turn_id = log.record("c1", make_turn())
        assert [p.page for p in log.turn(turn_id).passages] == [None, 3]


def test_conversations_belong_to_their_owner(log):
    alice = log.new_conversation(owner="alice")
    log.record(alice, make_turn("What did Alice ask?"))
    bob = log.new_conversation(owner="bob")
    log.record(bob, make_turn("What did Bob ask?"))
    anonymous = log.new_conversation()
    assert [c.id for c in log.conversations(owner="alice")] == [alice]
    assert [(c.id, c.owner, c.title) for c in log.conversations(owner="bob")] == [(bob, "bob", "What did Bob ask?")]
    assert {c.id for c in log.conversations()} == {alice, bob, anonymous}  # no sign-in: everything, as before
    assert [t.question for t in log.history(alice, owner="alice")] == ["What did Alice ask?"]
    for conversation, owner in ((alice, "bob"), (anonymous, "bob"), ("no-such-id", "bob")):
        with pytest.raises(UnknownConversation) as error:  # the same error whether or not it exists
            log.history(conversation, owner=owner)
        assert str(error.value) == f"no conversation with id {conversation!r} in the conversation log"


def test_a_log_written_before_sign_in_gains_an_owner_column(tmp_path):
    conn = sqlite3.connect(tmp_path / "chatqa.db")
    conn.execute("CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', "
                 "created TEXT NOT NULL, updated TEXT NOT NULL)")
    conn.execute("INSERT INTO conversations VALUES ('old', 'before sign-in', '2026-01-01', '2026-01-01')")
    conn.commit()
    conn.close()
    with ConversationLog(tmp_path) as log:
        assert [(c.id, c.owner) for c in log.conversations()] == [("old", None)]
        assert log.conversations(owner="alice") == []
        assert log.history("old") == []
        with pytest.raises(UnknownConversation):
            log.history("old", owner="alice")
