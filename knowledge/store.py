"""Storage: SQLite (via sqlite-utils, WAL) is the source of truth; FAISS is a rebuildable copy of its embeddings.

Tables: `documents` (one row per distinct file, keyed by id, unique by sha256, with the loaded text), `chunks`
(text, character offsets into the document text, page, embedding as float32 bytes), `chunks_fts` (FTS5 over
chunk text, kept in step by triggers) and `meta`.

`index.faiss` is an `IndexIDMap2` keyed by chunk id, written atomically (temp file + rename). When it is missing,
unreadable, or its ids differ from the database's chunk ids (a crash between the two writes), it is rebuilt from
the stored embeddings.

Several processes may share one data directory (the app and a terminal command). Two things let each keep its
in-memory index in step with the others' changes: `meta.generation`, bumped in the same transaction as every change
to the chunks, says cheaply *that* something changed; and chunk ids are never reused (`meta.last_chunk_id`), so the
ids alone say *what* changed: an index holding exactly the database's ids holds exactly its passages.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlite_utils

from knowledge.errors import ChatQAError
from knowledge.search import fts5_match

logger = logging.getLogger(__name__)

DB_NAME = "chatqa.db"
INDEX_NAME = "index.faiss"
MAX_ROWID = 2**63 - 1  # SQLite's largest integer: a larger id names no row (and cannot even be bound)


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    name: str
    sha256: str
    size: int
    mime: str
    title: str
    added: str
    n_chunks: int


@dataclass(frozen=True)
class ChunkRecord:
    id: int
    doc_id: int
    doc_name: str
    ord: int
    start: int
    end: int
    text: str
    page: int | None


@dataclass(frozen=True)
class NewChunk:
    text: str
    start: int
    end: int
    n_tokens: int
    page: int | None
    embedding: np.ndarray


@dataclass(frozen=True)
class NewDocument:
    """A document ready to store: its loaded text and structure, and its embedded chunks."""

    name: str
    sha256: str
    size: int
    mime: str
    title: str
    text: str
    pages: Sequence[dict]
    sections: Sequence[dict]
    chunks: Sequence[NewChunk]


def connect(path: Path) -> sqlite_utils.Database:
    """A sqlite-utils database in WAL mode, usable from the UI's worker threads (callers serialise writes)."""
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    db = sqlite_utils.Database(conn)
    db.enable_wal()
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


class Store:
    """The documents and chunks tables and their full-text index."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.lock = threading.RLock()
        self._term_counts: dict[str, int] = {}  # FTS5 document frequencies, cleared on every write
        self._create_schema()

    def _create_schema(self) -> None:
        db = self.db
        with self.lock:
            if "documents" not in db.table_names():
                db["documents"].create(
                    {
                        "id": int, "name": str, "sha256": str, "size": int, "mime": str, "title": str,
                        "added": str, "text": str, "pages": str, "sections": str,
                    },
                    pk="id", not_null={"name", "sha256", "text"},
                )
                db["documents"].create_index(["sha256"], unique=True)
            if "chunks" not in db.table_names():
                db["chunks"].create(
                    {
                        "id": int, "doc_id": int, "ord": int, "start": int, "end": int, "text": str,
                        "n_tokens": int, "page": int, "embedding": bytes,
                    },
                    pk="id", foreign_keys=[("doc_id", "documents", "id")], not_null={"doc_id", "text"},
                )
                db["chunks"].create_index(["doc_id"])
                db["chunks"].enable_fts(["text"], create_triggers=True, tokenize="porter")
            if "meta" not in db.table_names():
                db["meta"].create({"key": str, "value": str}, pk="key")

    # -- meta ------------------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.lock, self.db.atomic():
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])

    # -- documents -------------------------------------------------------------------------------------------------
    def find_by_sha(self, sha256: str) -> DocumentInfo | None:
        rows = self._documents("WHERE d.sha256 = ?", [sha256])
        return rows[0] if rows else None

    def get_document(self, doc_id: int) -> DocumentInfo | None:
        if not -MAX_ROWID - 1 <= doc_id <= MAX_ROWID:
            return None
        rows = self._documents("WHERE d.id = ?", [doc_id])
        return rows[0] if rows else None

    def list_documents(self) -> list[DocumentInfo]:
        return self._documents("", [])

    def document_hashes(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT sha256 FROM documents").fetchall()}

    def _documents(self, where: str, args: list) -> list[DocumentInfo]:
        sql = (
            "SELECT d.id, d.name, d.sha256, d.size, d.mime, d.title, d.added, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.id) "
            f"FROM documents d {where} ORDER BY d.id"
        )
        return [DocumentInfo(*row) for row in self.db.execute(sql, args).fetchall()]

    def document_text(self, doc_id: int) -> str | None:
        row = self.db.execute("SELECT text FROM documents WHERE id = ?", [doc_id]).fetchone()
        return None if row is None else row[0]

    def document_structure(self, doc_id: int) -> tuple[list, list]:
        row = self.db.execute("SELECT pages, sections FROM documents WHERE id = ?", [doc_id]).fetchone()
        if row is None:
            return [], []
        return json.loads(row[0] or "[]"), json.loads(row[1] or "[]")

    def insert_document(
        self, *, name: str, sha256: str, size: int, mime: str, title: str, text: str,
        pages: Sequence[dict], sections: Sequence[dict], chunks: Sequence[NewChunk],
    ) -> tuple[int, list[int]]:
        """Insert a document and its chunks in one transaction. Returns (doc id, chunk ids)."""
        doc = NewDocument(name, sha256, size, mime, title, text, pages, sections, chunks)
        return self.insert_documents([doc])[0]

    def insert_documents(self, docs: Sequence[NewDocument]) -> list[tuple[int, list[int]]]:
        """Insert several documents and their chunks in one transaction: all of them or none. Returns (doc id,
        chunk ids) for each, in order."""
        added = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out = []
        with self.lock, self.db.atomic():
            for d in docs:
                cur = self.db.execute(
                    "INSERT INTO documents (name, sha256, size, mime, title, added, text, pages, sections) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [d.name, d.sha256, d.size, d.mime, d.title, added, d.text, json.dumps(list(d.pages)),
                     json.dumps(list(d.sections))],
                )
                out.append((cur.lastrowid, self._insert_chunks(cur.lastrowid, d.chunks)))
            self._changed()
        return out

    def replace_chunks(self, doc_id: int, chunks: Sequence[NewChunk]) -> list[int] | None:
        """Swap a document's chunks for new ones in one transaction (re-indexing). None, changing nothing, when the
        document is no longer there (another process removed it meanwhile)."""
        with self.lock, self.db.atomic():
            # A write first, so the transaction holds the write lock before it checks that the document exists.
            self.db.execute("DELETE FROM chunks WHERE doc_id = ?", [doc_id])
            if self.db.execute("SELECT 1 FROM documents WHERE id = ?", [doc_id]).fetchone() is None:
                return None
            ids = self._insert_chunks(doc_id, chunks)
            self._changed()
            return ids

    def _insert_chunks(self, doc_id: int, chunks: Sequence[NewChunk]) -> list[int]:
        """Insert with ids above every id ever used (inside the caller's write transaction): never reused."""
        top = self.db.execute("SELECT MAX(id) FROM chunks").fetchone()[0] or 0
        last = max(int(self.get_meta("last_chunk_id") or 0), top)
        ids = list(range(last + 1, last + 1 + len(chunks)))
        for i, (chunk_id, c) in enumerate(zip(ids, chunks, strict=True)):
            self.db.execute(
                'INSERT INTO chunks (id, doc_id, ord, start, "end", text, n_tokens, page, embedding) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [chunk_id, doc_id, i, c.start, c.end, c.text, c.n_tokens, c.page, _to_blob(c.embedding)],
            )
        if ids:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_chunk_id', ?)", [str(ids[-1])])
        return ids

    def _changed(self) -> None:
        """Inside a write transaction that changed the chunks: bump the generation, drop cached counts."""
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('generation', '1') "
            "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )
        self._term_counts.clear()

    def generation(self) -> int:
        """How many changes to the chunks this database has seen, by any process."""
        return int(self.get_meta("generation") or 0)

    def forget_counts(self) -> None:
        """Drop the cached chunk and term counts (another process changed the chunks)."""
        self._term_counts.clear()

    def delete_document(self, doc_id: int) -> list[int]:
        """Delete a document and its chunks in one transaction. Returns the deleted chunk ids."""
        with self.lock, self.db.atomic():
            ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id = ?", [doc_id]).fetchall()]
            self.db.execute("DELETE FROM chunks WHERE doc_id = ?", [doc_id])
            self.db.execute("DELETE FROM documents WHERE id = ?", [doc_id])
            self._changed()
        return ids

    # -- chunks ----------------------------------------------------------------------------------------------------
    def chunk_ids(self) -> np.ndarray:
        rows = self.db.execute("SELECT id FROM chunks ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def count_chunks(self) -> int:
        """Number of chunks (cached until the next write, like term counts)."""
        count = self._term_counts.get("")  # "" is never a query term
        if count is None:
            count = self._term_counts[""] = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return count

    def embeddings(self, batch: int = 10_000) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """All stored embeddings as (ids, vectors) batches, in id order."""
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT id, embedding FROM chunks WHERE id > ? ORDER BY id LIMIT ?", [last, batch]
            ).fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            yield ids, vectors
            last = int(ids[-1])

    def embeddings_of(self, ids: Sequence[int], batch: int = 500) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """The stored embeddings of these chunk ids (those still there) as (ids, vectors) batches."""
        ids = [int(i) for i in ids]
        for lo in range(0, len(ids), batch):
            part = ids[lo : lo + batch]
            rows = self.db.execute(
                f"SELECT id, embedding FROM chunks WHERE id IN ({','.join('?' * len(part))}) ORDER BY id", part
            ).fetchall()
            if rows:
                yield (np.array([r[0] for r in rows], dtype=np.int64),
                       np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]))

    def get_chunks(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            'SELECT c.id, c.doc_id, d.name, c.ord, c.start, c."end", c.text, c.page '
            f"FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})",
            [int(i) for i in ids],
        ).fetchall()
        return {r[0]: ChunkRecord(*r) for r in rows}

    def term_count(self, term: str) -> int:
        """How many chunks contain `term` (after FTS5's stemming). Cached until the next write."""
        count = self._term_counts.get(term)
        if count is None:
            count = self.db.execute(
                "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?", [fts5_match([term])]
            ).fetchone()[0]
            self._term_counts[term] = count
        return count

    def bm25(self, match: str, limit: int) -> list[tuple[int, float]]:
        """(chunk id, score) for an FTS5 MATCH expression, best first; score = -bm25 (higher is better)."""
        if not match:
            return []
        rows = self.db.execute(
            "SELECT rowid, bm25(chunks_fts) AS s FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY s LIMIT ?",
            [match, limit],
        ).fetchall()
        return [(r[0], -r[1]) for r in rows]


def _to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


class IndexUnavailable(ChatQAError):
    pass


class VectorIndex:
    """A FAISS inner-product index keyed by chunk id, persisted atomically next to the database."""

    def __init__(self, path: Path, dim: int):
        self.path = Path(path)
        self.dim = dim
        self.index = self._empty()

    def _empty(self):
        import faiss

        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        import faiss

        return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"Got vectors of shape {vectors.shape} for {len(ids)} ids of dimension {self.dim}.")
        self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Sequence[int]) -> None:
        if len(ids):
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k); missing neighbours have id -1."""
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0:
            n = len(queries)
            return np.zeros((n, 0), dtype=np.float32), np.zeros((n, 0), dtype=np.int64)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self) -> None:
        """Write atomically: a temp file in the same folder, fsync'd, then renamed over the old one."""
        import faiss

        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            faiss.write_index(self.index, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self) -> bool:
        """Read the saved index; False when it is missing, unreadable or of another dimension."""
        import faiss

        if not self.path.exists():
            return False
        try:
            index = faiss.read_index(str(self.path))
        except Exception as e:  # faiss raises RuntimeError for truncated or foreign files
            logger.warning("could not read %s (%s); it will be rebuilt", self.path, e)
            return False
        if index.d != self.dim or not isinstance(index, faiss.IndexIDMap2):
            logger.warning("%s does not match this knowledge base; it will be rebuilt", self.path)
            return False
        self.index = index
        return True

    def rebuild(self, store: Store) -> None:
        self.index = self._empty()
        for ids, vectors in store.embeddings():
            self.add(ids, vectors)
        self.save()

    def in_step_with(self, store: Store) -> bool:
        return self.ntotal == store.count_chunks() and np.array_equal(self.ids(), store.chunk_ids())

    def sync(self, store: Store) -> tuple[int, int]:
        """Make this index hold exactly the database's chunks: drop ids it no longer has, add the embeddings of ids
        it gained (chunk ids are never reused, so equal ids mean equal passages). Returns (added, removed)."""
        mine, theirs = self.ids(), store.chunk_ids()
        gone, new = np.setdiff1d(mine, theirs), np.setdiff1d(theirs, mine)
        self.remove(gone.tolist())
        for ids, vectors in store.embeddings_of(new.tolist()):
            self.add(ids, vectors)
        return len(new), len(gone)
