"""The knowledge base: documents in, passages out.

    KnowledgeBase(data_dir).add_files(paths)     load → chunk → embed → SQLite (+FTS5) → FAISS
    KnowledgeBase(data_dir).search("question")   dense + BM25, fused by reciprocal rank

Write order for every change: the SQLite transaction first (the source of truth), then the FAISS file. A crash in
between leaves an index whose ids differ from the database's; the next open sees that and rebuilds it, and deletes
what the crash left in the folder (temp files, originals of documents no longer in the database).

Another process may change the same data directory (`chatqa kb add` while the app runs): before every search and
every change, the database's generation number is compared with the one this index reflects, and the index is
patched from SQLite when they differ (see knowledge/store.py).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from knowledge.chunker import Chunker, ChunkerConfig, tokenizer_offsets
from knowledge.embedder import Embedder
from knowledge.errors import ChatQAError, MissingFile, UnknownDocument
from knowledge.files import atomic_write
from knowledge.ingest import (
    BATCH_CHUNKS,
    BATCH_FILES,
    AddReport,
    Skipped,
    add_paths,
    expand_paths,
    prepare_bytes,
    write_batch,
)
from knowledge.loaders import DEFAULT_MAX_BYTES, LoadedDocument, Page, Section, check_size
from knowledge.search import SEARCH_MODES, Hit, fts5_match, query_terms, reciprocal_rank_fusion
from knowledge.store import DB_NAME, INDEX_NAME, DocumentInfo, NewChunk, Store, VectorIndex, connect

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "chatqa-data"


def default_data_dir() -> Path:
    return Path(os.environ.get("CHATQA_DATA_DIR") or DEFAULT_DATA_DIR)


def default_max_file_bytes() -> int:
    """$CHATQA_MAX_FILE_MB megabytes (the app's `--max-file-mb` sets it), else DEFAULT_MAX_BYTES."""
    raw = os.environ.get("CHATQA_MAX_FILE_MB", "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not 0 < mb < float("inf"):
        raise ChatQAError(f"CHATQA_MAX_FILE_MB must be a positive number of megabytes, got {raw!r}")
    return int(mb * 1024 * 1024)


__all__ = ["AddReport", "KnowledgeBase", "Skipped", "default_data_dir", "default_max_file_bytes", "expand_paths"]


class KnowledgeBase:
    """One data directory: `chatqa.db`, `index.faiss` and `documents/` (the originals, stored by content hash)."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        embedder: Embedder | None = None,
        chunker_config: ChunkerConfig | None = None,
        max_file_bytes: int | None = None,
        candidates: int = 50,
        rrf_k: int = 10,
        bm25_weight: float = 1.5,
    ):
        """`candidates` hits of each retriever are fused; `rrf_k` and `bm25_weight` shape the fusion.
        `max_file_bytes`: the largest file added (default: $CHATQA_MAX_FILE_MB megabytes, else 50 MB).

        The fusion defaults were chosen on the answerable questions of squad-v2.0-dev-16art.json (recall@5 0.965,
        against 0.960 for plain k=10 and 0.957 for k=60); the retrieval figures in the README are measured on other
        articles (squad-v1.1-dev-13art.json).
        """
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.embedder = embedder if embedder is not None else Embedder()
        self.chunker_config = chunker_config if chunker_config is not None else ChunkerConfig()
        self.max_file_bytes = max_file_bytes if max_file_bytes is not None else default_max_file_bytes()
        self.batch_chunks = BATCH_CHUNKS  # passages embedded and stored together when adding files
        self.batch_files = BATCH_FILES
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.bm25_weight = bm25_weight
        self.max_term_share = 0.25
        self.min_chunks_for_pruning = 1000
        self.stale_seconds = 60.0  # leftovers younger than this may belong to another process's write in progress
        self._lock = threading.RLock()
        # Held while the in-memory FAISS index is searched or changed: a search on the dense worker thread must not
        # meet a change (this process's, or a patch for another process's) half made. Taken after `_lock`.
        self._index_lock = threading.Lock()
        self._store: Store | None = None
        self._index: VectorIndex | None = None
        self._generation = 0  # the database generation the in-memory index reflects
        self._chunker: Chunker | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- opening ---------------------------------------------------------------------------------------------------
    def open(self) -> KnowledgeBase:
        """Create or open the data directory; rebuild the FAISS index if it is missing or out of step."""
        with self._lock:
            if self._store is not None:
                return self
            (self.data_dir / "documents").mkdir(parents=True, exist_ok=True)
            store = Store(connect(self.data_dir / DB_NAME))
            dim = self.embedder.dim
            stored_dim = store.get_meta("embedding_dim")
            if stored_dim is not None and int(stored_dim) != dim:
                raise ChatQAError(
                    f"{self.data_dir} was built with {stored_dim}-d embeddings but the embedder gives {dim}-d; "
                    "use another --data-dir or re-index"
                )
            store.set_meta("embedding_dim", str(dim))
            store.set_meta("embedder", self.embedder.name)
            generation = store.generation()  # read before the chunks: a later change is caught by the next check
            index = VectorIndex(self.data_dir / INDEX_NAME, dim)
            if not index.load() or not index.in_step_with(store):
                n = store.count_chunks()
                if n:
                    logger.warning("%s is missing or out of step: rebuilding it from %d stored embeddings", index.path, n)
                index.rebuild(store)
            self._store, self._index, self._generation = store, index, generation
            self._remove_leftovers(store)
            return self

    def _remove_leftovers(self, store: Store) -> None:
        """Delete what an interrupted write left behind: temp files of index and original writes, and originals
        of documents no longer in the database. Only files older than `stale_seconds`, which no write still in
        progress (in this process or another) can own."""
        cutoff = time.time() - self.stale_seconds
        originals = self.data_dir / "documents"
        known = store.document_hashes()
        candidates = [*self.data_dir.glob(".index-*.tmp"), *originals.glob(".*.tmp")]
        for path in originals.iterdir():
            name = path.name
            ours = len(name) >= 64 and all(c in "0123456789abcdef" for c in name[:64]) and name[64:65] in ("", ".")
            if ours and name[:64] not in known:
                candidates.append(path)
        for path in candidates:
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    logger.info("removed %s, left behind by an interrupted write", path)
            except OSError as e:  # another process removed it first, or it is not ours to remove
                logger.debug("could not remove %s: %s", path, e)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if self._store is not None:
                self._store.db.conn.close()
            self._store = self._index = None

    def __enter__(self) -> KnowledgeBase:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def store(self) -> Store:
        return self.open()._store  # type: ignore[return-value]

    @property
    def index(self) -> VectorIndex:
        return self.open()._index  # type: ignore[return-value]

    def refresh(self) -> bool:
        """Bring the in-memory index in step with changes other processes made. True when there were any."""
        with self._lock:
            store, index = self.store, self.index
            generation = store.generation()
            if generation == self._generation:
                return False
            store.forget_counts()
            with self._index_lock:
                added, removed = index.sync(store)
            self._generation = generation
        logger.info("the knowledge base changed elsewhere: %d passages added, %d removed", added, removed)
        return True

    def _apply(self, change: Callable[[VectorIndex], None]) -> None:
        """After this process's own SQLite write: apply it to the in-memory index, or, when another process also
        changed the database since this index was last in step, patch the index from the database instead."""
        with self._lock:
            generation = self.store.generation()
            if generation == self._generation + 1:  # our write was the only change
                index = self.index
                with self._index_lock:
                    change(index)
                self._generation = generation
            else:
                self._generation = -1
                self.refresh()

    @property
    def chunker(self) -> Chunker:
        with self._lock:
            if self._chunker is None:
                # A copy of the tokenizer: the chunker runs on the loader thread while the embedder tokenizes on
                # another, and a fast tokenizer whose truncation settings change under it raises "Already borrowed".
                tokenizer = copy.deepcopy(self.embedder.tokenizer)
                self._chunker = Chunker(tokenizer_offsets(tokenizer), self.chunker_config)
            return self._chunker

    # -- adding ----------------------------------------------------------------------------------------------------
    def add_files(
        self, paths: Iterable[str | Path], *, progress: Callable[[Path], None] | None = None
    ) -> AddReport:
        """Add files and folders (recursively, supported types only). A bad file is reported, never fatal; what
        a folder walk leaves out (hidden, unsupported, too large) is listed in `report.skipped`.

        Files are embedded and stored in batches across files (knowledge.ingest), loading overlapping embedding."""
        report = AddReport()
        files = expand_paths(paths, report, max_bytes=self.max_file_bytes)
        self.open()
        add_paths(self, files, report, progress)
        return report

    def add_file(self, path: str | Path, *, save_index: bool = True) -> tuple[DocumentInfo, bool]:
        path = Path(path)
        if not path.is_file():
            raise MissingFile(path, "no such file" if not path.exists() else "is not a file")
        check_size(path.name, path.stat().st_size, self.max_file_bytes)  # before reading a huge file into memory
        return self.add_bytes(path.read_bytes(), path.name, save_index=save_index)

    def add_bytes(self, data: bytes, name: str, *, save_index: bool = True) -> tuple[DocumentInfo, bool]:
        """Add one document from its bytes. Returns (document, True if it was new)."""
        prepared = prepare_bytes(self, bytes(data), name)
        if prepared.error is not None:
            raise prepared.error
        report = AddReport()
        write_batch(self, [prepared], report, save_index=save_index)
        if report.added:
            return report.added[0], True
        return report.unchanged[0], False

    def _embed_chunks(self, loaded: LoadedDocument) -> list[NewChunk]:
        pieces = self.chunker.chunk(loaded.text)
        vectors = self.embedder.embed([p.text for p in pieces])
        return [
            NewChunk(p.text, p.start, p.end, p.n_tokens, loaded.page_at(p.start), v)
            for p, v in zip(pieces, vectors, strict=True)
        ]

    def _save_original(self, data: bytes, sha: str, suffix: str) -> None:
        target = self.data_dir / "documents" / f"{sha}{suffix}"
        if target.exists():
            return
        atomic_write(target, data)

    # -- listing, removing, re-indexing ----------------------------------------------------------------------------
    def list_documents(self) -> list[DocumentInfo]:
        return self.store.list_documents()

    def get_document(self, doc_id: int) -> DocumentInfo:
        doc = self.store.get_document(doc_id)
        if doc is None:
            raise UnknownDocument(doc_id)
        return doc

    def remove(self, doc_id: int) -> DocumentInfo:
        with self._lock:
            doc = self.get_document(doc_id)
            chunk_ids = self.store.delete_document(doc_id)
            # The original goes before the slow index write, so an interruption there cannot strand it.
            for original in (self.data_dir / "documents").glob(f"{doc.sha256}.*"):
                original.unlink(missing_ok=True)
            self._apply(lambda index: index.remove(chunk_ids))
            self.index.save()
        logger.info("removed %s (%d chunks)", doc.name, len(chunk_ids))
        return doc

    def reindex(self, *, progress: Callable[[DocumentInfo], None] | None = None) -> int:
        """Re-chunk and re-embed every document from its stored text, then rebuild FAISS. Returns the chunk count.

        A document another process removes meanwhile is skipped."""
        for doc in self.list_documents():
            if progress is not None:
                progress(doc)
            text = self.store.document_text(doc.id)
            if text is None or self.store.replace_chunks(doc.id, self._embed_chunks(self._stored(doc, text))) is None:
                logger.info("skipped %s: removed while re-indexing", doc.name)
        with self._lock:
            generation = self.store.generation()
            index = self.index
            with self._index_lock:
                index.rebuild(self.store)
            self._generation = generation
        return self.store.count_chunks()

    def _stored(self, doc: DocumentInfo, text: str) -> LoadedDocument:
        pages, sections = self.store.document_structure(doc.id)
        return LoadedDocument(
            text, doc.title, doc.mime, tuple(Page(**p) for p in pages), tuple(Section(**s) for s in sections)
        )

    # -- searching -------------------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, mode: str = "hybrid") -> list[Hit]:
        return self.search_many([query], k=k, mode=mode)[0]

    def search_many(self, queries: Sequence[str], k: int = 5, mode: str = "hybrid") -> list[list[Hit]]:
        """Top-k chunks for each query. Blank queries get no hits."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.refresh()  # opens the knowledge base on this thread before the worker needs it
        depth = max(k, self.candidates) if mode == "hybrid" else k
        depth = min(depth, max(1, self.store.count_chunks()))  # a huge k asks for every passage, no more
        live = [i for i, q in enumerate(queries) if q.strip()]
        index = self.index
        # Dense search (embedding + FAISS) runs on a worker thread while BM25 (SQLite) runs here: both release
        # the GIL, so a hybrid query costs about the slower of the two rather than their sum.
        pending = self._dense_pool().submit(self._dense, queries, live, depth, index) if mode != "bm25" and live else None
        sparse: dict[int, list[tuple[int, float]]] = {}
        if mode != "dense":
            for i in live:
                sparse[i] = self.store.bm25(fts5_match(self._bm25_terms(queries[i])), depth)
        dense = pending.result() if pending is not None else {}

        results: list[list[Hit]] = []
        for i in range(len(queries)):
            d, s = dense.get(i, []), sparse.get(i, [])
            if mode == "dense":
                ranked = d[:k]
            elif mode == "bm25":
                ranked = s[:k]
            else:
                ranked = reciprocal_rank_fusion(
                    [[c for c, _ in d], [c for c, _ in s]], k=self.rrf_k, weights=(1.0, self.bm25_weight)
                )[:k]
            results.append(self._hits(ranked, dict(d), dict(s), d, s))
        return results

    def _bm25_terms(self, query: str) -> list[str]:
        """The query's terms, without those found in more than `max_term_share` of a large knowledge base's chunks.

        Such terms weigh almost nothing in BM25 (IDF ≤ log 3 at a 25% share, against 7-10 for rare terms) but make
        FTS5 score most of the collection: leaving them out keeps searches over 100k chunks fast.
        """
        terms = query_terms(query)
        n = self.store.count_chunks()
        if n < self.min_chunks_for_pruning or len(terms) < 2:
            return terms
        kept = [t for t in terms if self.store.term_count(t) <= self.max_term_share * n]
        return kept or terms

    def _dense(self, queries, live, depth, index) -> dict[int, list[tuple[int, float]]]:
        vectors = self.embedder.embed([queries[i] for i in live])
        with self._index_lock:
            scores, ids = index.search(vectors, depth)
        return {
            i: [(int(c), float(s)) for c, s in zip(ids[row], scores[row], strict=True) if c >= 0]
            for row, i in enumerate(live)
        }

    def _dense_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatqa-dense")
            return self._pool

    def _hits(self, ranked, dense_scores, bm25_scores, dense_list, bm25_list) -> list[Hit]:
        records = self.store.get_chunks([c for c, _ in ranked])
        dense_rank = {c: r for r, (c, _) in enumerate(dense_list, start=1)}
        bm25_rank = {c: r for r, (c, _) in enumerate(bm25_list, start=1)}
        hits = []
        for chunk_id, score in ranked:
            rec = records.get(chunk_id)
            if rec is None:  # removed between search and lookup
                continue
            hits.append(
                Hit(
                    chunk_id=chunk_id, doc_id=rec.doc_id, doc_name=rec.doc_name, text=rec.text, start=rec.start,
                    end=rec.end, page=rec.page, score=score, dense_score=dense_scores.get(chunk_id),
                    bm25_score=bm25_scores.get(chunk_id), dense_rank=dense_rank.get(chunk_id),
                    bm25_rank=bm25_rank.get(chunk_id),
                )
            )
        return hits
