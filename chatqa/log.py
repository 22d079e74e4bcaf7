"""The conversation log: every turn, what it retrieved, and what the person said about it.

It lives in the knowledge base's ``chatqa.db`` (its own tables, its own WAL connection) and is the raw material of
"learning from use": ``finetune/`` exports turns and feedback as training data.

Tables: ``conversations`` (uuid4 hex id, title, ISO-8601 UTC created / updated, owner: the signed-in user who had
it, NULL without sign-in), ``turns`` (question, standalone
question, answer, span, scores, timings, model versions), ``retrievals`` (the passages a turn read, with a copy of
their text: a chunk may later leave the knowledge base, its training examples must not) and ``feedback`` (👍 / 👎,
an optional corrected span of one retrieved passage or a typed answer; several rows per turn, the latest counts).

Ranks are 0-based positions in ``TurnResult.passages`` (the reader's ``AnswerSpan.passage_index``); span offsets
are character offsets into the passage text. Writing a turn never raises: :meth:`ConversationLog.record` logs any
error and returns None, so a broken log cannot break answering.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from chatqa.turn import TurnResult
from knowledge.errors import ChatQAError
from knowledge.search import Hit
from knowledge.store import DB_NAME, connect

logger = logging.getLogger(__name__)

RATINGS = ("up", "down")
MAX_TEXT_CHARS = 2_000  # comments and typed answers

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', created TEXT NOT NULL, updated TEXT NOT NULL,
        owner TEXT)""",
    """CREATE TABLE IF NOT EXISTS turns (
        id INTEGER PRIMARY KEY, conversation_id TEXT NOT NULL REFERENCES conversations(id),
        turn_index INTEGER NOT NULL, question TEXT NOT NULL, standalone_question TEXT NOT NULL,
        answer TEXT NOT NULL, mode TEXT, abstained INTEGER NOT NULL, span_rank INTEGER, span_chunk_id INTEGER,
        span_doc_id INTEGER, span_start INTEGER, span_end INTEGER, span_text TEXT, span_score REAL,
        no_answer_score REAL, latency_seconds REAL, timings TEXT, model_versions TEXT, created TEXT NOT NULL,
        details TEXT, UNIQUE (conversation_id, turn_index))""",
    """CREATE TABLE IF NOT EXISTS retrievals (
        turn_id INTEGER NOT NULL REFERENCES turns(id), rank INTEGER NOT NULL, chunk_id INTEGER, doc_id INTEGER,
        doc_name TEXT, chunk_text TEXT NOT NULL, chunk_start INTEGER, chunk_end INTEGER, score REAL,
        dense_score REAL, bm25_score REAL, page INTEGER, PRIMARY KEY (turn_id, rank))""",
    """CREATE TABLE IF NOT EXISTS feedback (
        id INTEGER PRIMARY KEY, turn_id INTEGER NOT NULL REFERENCES turns(id),
        rating TEXT NOT NULL CHECK (rating IN ('up', 'down')), corrected_rank INTEGER, corrected_start INTEGER,
        corrected_end INTEGER, corrected_text TEXT, typed_answer TEXT, comment TEXT, created TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS feedback_turn_id ON feedback (turn_id)",
)
_TURN_COLUMNS = (
    "id, conversation_id, turn_index, question, standalone_question, answer, mode, abstained, span_rank, "
    "span_chunk_id, span_doc_id, span_start, span_end, span_text, span_score, no_answer_score, latency_seconds, "
    "timings, model_versions, created, details"
)
_FEEDBACK_COLUMNS = (
    "id, turn_id, rating, corrected_rank, corrected_start, corrected_end, corrected_text, typed_answer, comment, "
    "created"
)
_PASSAGE_COLUMNS = (
    "rank, chunk_id, doc_id, doc_name, chunk_text, chunk_start, chunk_end, score, dense_score, bm25_score, page"
)


class UnknownConversation(ChatQAError):
    def __init__(self, conversation_id: object):
        self.conversation_id = conversation_id
        super().__init__(f"no conversation with id {conversation_id!r} in the conversation log")


class UnknownTurn(ChatQAError):
    def __init__(self, turn_id: object):
        self.turn_id = turn_id
        super().__init__(f"no turn with id {turn_id!r} in the conversation log")


class InvalidFeedback(ChatQAError):
    pass


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str  # the stored title, or the first question when none was given
    created: str
    updated: str
    n_turns: int
    owner: str | None = None  # the signed-in user who had it; None: had without sign-in


@dataclass(frozen=True)
class LoggedPassage:
    """A retrieved passage as the turn read it (its text is a copy, kept when the chunk leaves the knowledge base)."""

    rank: int
    chunk_id: int
    doc_id: int
    doc_name: str
    text: str
    start: int  # character offsets of the chunk in its document's text
    end: int
    score: float
    dense_score: float | None
    bm25_score: float | None
    page: int | None = None  # 1-based PDF page where the chunk starts

    def as_hit(self) -> Hit:
        return Hit(self.chunk_id, self.doc_id, self.doc_name, self.text, self.start, self.end, self.page, self.score,
                   self.dense_score, self.bm25_score)


@dataclass(frozen=True)
class LoggedFeedback:
    id: int
    turn_id: int
    rating: str
    corrected_rank: int | None
    corrected_start: int | None  # character offsets into the passage text
    corrected_end: int | None
    corrected_text: str | None
    typed_answer: str | None
    comment: str | None
    created: str


@dataclass(frozen=True)
class LoggedTurn:
    id: int
    conversation_id: str
    turn_index: int  # 0-based position in its conversation
    question: str
    standalone_question: str
    answer: str
    mode: str | None
    abstained: bool
    span_rank: int | None  # which passage holds the answer span (None when abstaining)
    span_chunk_id: int | None
    span_doc_id: int | None
    span_start: int | None  # character offsets into that passage's text
    span_end: int | None
    span_text: str | None
    span_score: float | None
    no_answer_score: float | None
    latency_seconds: float
    timings: dict[str, float]
    model_versions: dict[str, str]
    created: str
    passages: list[LoggedPassage]
    feedback: LoggedFeedback | None  # the latest, the one that counts
    details: dict = field(default_factory=dict)  # evidence (rank, start, end), citations, decision signals

    @property
    def evidence(self) -> tuple[int, int, int] | None:
        """The highlighted evidence: ``(rank, start, end)`` in a passage; the reader's span for older turns."""
        if self.details.get("evidence") is not None:
            return tuple(self.details["evidence"])
        return None if self.span_rank is None else (self.span_rank, self.span_start, self.span_end)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _float(value: Any) -> float | None:
    """A numpy scalar as a Python float (sqlite3 cannot bind numpy types); None stays None."""
    return None if value is None else float(value)


class ConversationLog:
    """The conversations, turns, retrievals and feedback tables of ``<data_dir>/chatqa.db``.

    The connection opens on first use (and again after :meth:`close`); all calls are thread-safe.
    """

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self._lock = threading.Lock()  # one connection shared by the UI's worker threads: one user at a time
        self._conn: sqlite_utils.Database | None = None

    @property
    def db(self) -> sqlite_utils.Database:
        """The open database (callers hold ``self._lock``)."""
        if self._conn is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            db = connect(self.data_dir / DB_NAME)
            try:
                with db.atomic():
                    for statement in _SCHEMA:
                        db.execute(statement)
                    if "page" not in db["retrievals"].columns_dict:  # a log written before pages were kept
                        db.execute("ALTER TABLE retrievals ADD COLUMN page INTEGER")
                    if "details" not in db["turns"].columns_dict:  # a log written before answers had evidence
                        db.execute("ALTER TABLE turns ADD COLUMN details TEXT")
                    if "owner" not in db["conversations"].columns_dict:  # a log written before sign-in: no owners
                        db.execute("ALTER TABLE conversations ADD COLUMN owner TEXT")
                    db.execute("CREATE INDEX IF NOT EXISTS conversations_owner ON conversations (owner, updated)")
            except BaseException:
                db.close()
                raise
            self._conn = db
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    def __enter__(self) -> ConversationLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- conversations ---------------------------------------------------------------------------------------------
    def new_conversation(self, title: str = "", *, owner: str | None = None) -> str:
        """A new, empty conversation; ``owner``: the signed-in user it belongs to (None without sign-in)."""
        conversation_id = uuid.uuid4().hex
        now = _now()
        with self._lock:
            self.db.execute(
                "INSERT INTO conversations (id, title, created, updated, owner) VALUES (?, ?, ?, ?, ?)",
                [conversation_id, title.strip(), now, now, owner],
            )
        return conversation_id

    def conversations(self, limit: int = 50, *, owner: str | None = None) -> list[ConversationSummary]:
        """The most recently updated conversations first: all of them, or with ``owner`` only that user's."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        sql = (
            "SELECT c.id, c.title, (SELECT question FROM turns t WHERE t.conversation_id = c.id "
            "ORDER BY t.turn_index LIMIT 1), c.created, c.updated, "
            "(SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id), c.owner "
            f"FROM conversations c {'' if owner is None else 'WHERE c.owner = ? '}"
            "ORDER BY c.updated DESC, c.rowid DESC LIMIT ?"
        )
        with self._lock:
            rows = self.db.execute(sql, [limit] if owner is None else [owner, limit]).fetchall()
        return [ConversationSummary(r[0], r[1] or r[2] or "", r[3], r[4], r[5], r[6]) for r in rows]

    def history(self, conversation_id: str, *, owner: str | None = None) -> list[LoggedTurn]:
        """The conversation's turns in order, with their passages and latest feedback.

        With ``owner``, another user's conversation (or one had without sign-in) is :class:`UnknownConversation`
        too, so an id alone tells nobody whether it exists."""
        with self._lock:
            self._check_owner(conversation_id, owner)
            return self._turns("WHERE conversation_id = ? ORDER BY turn_index", [conversation_id])

    def check_owner(self, conversation_id: str, owner: str | None) -> None:
        """:class:`UnknownConversation` unless the conversation exists and (with ``owner``) is theirs; reads no turn."""
        with self._lock:
            self._check_owner(conversation_id, owner)

    def _check_owner(self, conversation_id: str, owner: str | None) -> None:
        row = self.db.execute("SELECT owner FROM conversations WHERE id = ?", [conversation_id]).fetchone()
        if row is None or (owner is not None and row[0] != owner):
            raise UnknownConversation(conversation_id)

    def last_turn_matching(self, question: str, answer: str, *, owner: str | None = None) -> LoggedTurn | None:
        """The most recent turn that asked ``question`` and answered ``answer`` and is the last of its conversation
        (of ``owner``'s conversations when given): where a client that keeps its own history left off."""
        sql = (
            "SELECT t.id FROM turns t JOIN conversations c ON c.id = t.conversation_id "
            "WHERE t.question = ? AND t.answer = ? "
            "AND t.turn_index = (SELECT MAX(turn_index) FROM turns u WHERE u.conversation_id = t.conversation_id) "
            f"{'' if owner is None else 'AND c.owner = ? '}ORDER BY t.id DESC LIMIT 1"
        )
        args = [" ".join(question.split()), answer] + ([] if owner is None else [owner])
        with self._lock:
            row = self.db.execute(sql, args).fetchone()
            return None if row is None else self._turns("WHERE id = ?", [row[0]])[0]

    def turn(self, turn_id: int) -> LoggedTurn:
        with self._lock:
            turns = self._turns("WHERE id = ?", [turn_id])
        if not turns:
            raise UnknownTurn(turn_id)
        return turns[0]

    def turns_with_feedback(self, since: str | None = None) -> list[LoggedTurn]:
        """Turns whose latest feedback was given at or after ``since`` (an ISO-8601 UTC time; None: all), oldest
        turn first."""
        sql = (
            "WHERE id IN (SELECT turn_id FROM feedback f WHERE f.id = "
            "(SELECT MAX(id) FROM feedback g WHERE g.turn_id = f.turn_id) AND f.created >= ?) ORDER BY id"
        )
        with self._lock:
            return self._turns(sql, [since or ""])

    def _turns(self, where: str, args: list) -> list[LoggedTurn]:
        rows = self.db.execute(f"SELECT {_TURN_COLUMNS} FROM turns {where}", args).fetchall()
        turns = []
        for row in rows:
            passages = [
                LoggedPassage(*p) for p in self.db.execute(
                    f"SELECT {_PASSAGE_COLUMNS} FROM retrievals WHERE turn_id = ? ORDER BY rank", [row[0]]
                ).fetchall()
            ]
            latest = self.db.execute(
                f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE turn_id = ? ORDER BY id DESC LIMIT 1", [row[0]]
            ).fetchone()
            turns.append(LoggedTurn(
                *row[:7], bool(row[7]), *row[8:16], row[16] or 0.0, json.loads(row[17] or "{}"),
                json.loads(row[18] or "{}"), row[19], passages, None if latest is None else LoggedFeedback(*latest),
                json.loads(row[20] or "{}"),
            ))
        return turns

    # -- writing ---------------------------------------------------------------------------------------------------
    def record(self, conversation_id: str, turn: TurnResult) -> int | None:
        """Write a turn and its retrievals in one transaction; returns the turn id and sets ``turn.turn_id``.

        Never raises: an error is logged and None returned (writing a turn never blocks or breaks answering). An
        unknown conversation id is created, so a client may choose its own; an empty one gets a fresh id.
        """
        try:
            conversation_id = conversation_id or uuid.uuid4().hex
            span, now = turn.span, _now()
            timings = {k: float(v) for k, v in turn.timings.items()}
            values = [
                conversation_id, turn.question, turn.standalone_question, turn.answer, turn.mode,
                int(bool(turn.abstained)), *(
                    [None] * 8 if span is None else [
                        int(span.passage_index), int(span.chunk_id), int(span.doc_id), int(span.start),
                        int(span.end), span.text, float(span.score), float(span.no_answer_score),
                    ]
                ),
                sum(timings.values()), json.dumps(timings), json.dumps(dict(turn.model_versions), default=str), now,
                json.dumps(turn.details(), default=float),
            ]
            passages = [
                [rank, int(h.chunk_id), int(h.doc_id), h.doc_name, h.text, int(h.start), int(h.end), float(h.score),
                 _float(h.dense_score), _float(h.bm25_score), None if h.page is None else int(h.page)]
                for rank, h in enumerate(turn.passages)
            ]
            with self._lock:
                db = self.db
                with db.atomic():
                    # A write first, so this transaction takes the write lock before it reads the next turn index.
                    db.execute(
                        "INSERT INTO conversations (id, title, created, updated) VALUES (?, '', ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET updated = excluded.updated",
                        [conversation_id, now, now],
                    )
                    cur = db.execute(
                        f"INSERT INTO turns ({_TURN_COLUMNS.removeprefix('id, ')}) VALUES (?, (SELECT "
                        "COALESCE(MAX(turn_index), -1) + 1 FROM turns WHERE conversation_id = ?)"
                        + ", ?" * (len(values) - 1) + ")",
                        [conversation_id, conversation_id, *values[1:]],
                    )
                    turn_id = int(cur.lastrowid)
                    for p in passages:
                        db.execute(
                            f"INSERT INTO retrievals (turn_id, {_PASSAGE_COLUMNS}) VALUES (?{', ?' * len(p)})",
                            [turn_id, *p],
                        )
        except Exception:
            logger.exception("could not log a turn of conversation %r; the answer is unaffected", conversation_id)
            return None
        turn.turn_id, turn.conversation_id = turn_id, conversation_id
        return turn_id

    def feedback(
        self, turn_id: int, rating: str, *, passage_rank: int | None = None, start: int | None = None,
        end: int | None = None, typed_answer: str | None = None, comment: str | None = None,
    ) -> int:
        """Store 👍 / 👎 on a turn, optionally with the right span (``passage_rank``, ``start``, ``end``: character
        offsets into that retrieved passage's text) or a typed answer. Returns the feedback id.

        Raises :class:`UnknownTurn` or :class:`InvalidFeedback` (storing nothing) when the input is wrong.
        """
        if rating not in RATINGS:
            raise InvalidFeedback(f"rating must be 'up' or 'down', got {rating!r}")
        typed_answer = _clean_text("typed answer", typed_answer)
        comment = _clean_text("comment", comment)
        with self._lock:
            if self.db.execute("SELECT 1 FROM turns WHERE id = ?", [turn_id]).fetchone() is None:
                raise UnknownTurn(turn_id)
            corrected_text = None
            if (passage_rank, start, end) != (None, None, None):
                corrected_text = self._corrected_text(turn_id, passage_rank, start, end)
            cur = self.db.execute(
                f"INSERT INTO feedback ({_FEEDBACK_COLUMNS.removeprefix('id, ')}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [turn_id, rating, passage_rank, start, end, corrected_text, typed_answer, comment, _now()],
            )
            return int(cur.lastrowid)

    def _corrected_text(self, turn_id: int, rank: int | None, start: int | None, end: int | None) -> str:
        if any(v is None for v in (rank, start, end)):
            raise InvalidFeedback("a corrected span needs passage_rank, start and end together")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, start, end)):
            raise InvalidFeedback(f"passage_rank, start and end must be integers, got {rank!r}, {start!r}, {end!r}")
        n = self.db.execute("SELECT COUNT(*) FROM retrievals WHERE turn_id = ?", [turn_id]).fetchone()[0]
        row = self.db.execute(
            "SELECT chunk_text FROM retrievals WHERE turn_id = ? AND rank = ?", [turn_id, rank]
        ).fetchone()
        if row is None:
            ranks = f"ranks 0 to {n - 1}" if n else "no passages"
            raise InvalidFeedback(f"passage_rank {rank} is not a passage of turn {turn_id}, which has {ranks}")
        text = row[0]
        if not 0 <= start < end <= len(text):
            raise InvalidFeedback(
                f"span [{start}, {end}) is not a non-empty range of passage {rank}, which has {len(text)} characters "
                "(need 0 <= start < end <= length)"
            )
        if not text[start:end].strip():
            raise InvalidFeedback(f"span [{start}, {end}) of passage {rank} is only whitespace; select the answer text")
        return text[start:end]


def _clean_text(what: str, text: str | None) -> str | None:
    """Stripped text, None when empty; longer than MAX_TEXT_CHARS is refused rather than silently cut."""
    if text is None:
        return None
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidFeedback(f"the {what} has {len(text):,} characters; at most {MAX_TEXT_CHARS:,} are kept")
    return text or None
