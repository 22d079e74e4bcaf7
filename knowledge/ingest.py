"""Adding files to the knowledge base: walk folders (reporting every skip), then load → chunk → embed → store.

A loader thread reads, loads and chunks files into batches while the caller's thread embeds and stores the batch
before: the two overlap, and the embedder is called once per batch of files rather than once per file. Each batch
is written to SQLite in one transaction and then to FAISS (atomically, as every write), so an interrupted add keeps
every batch already written and leaves no half-written document. Originals are written to `documents/` by the loader
thread, before their batch's transaction; one whose batch never got stored is removed by a later open, like any
leftover of an interrupted write.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from knowledge.errors import CorruptDocument, DocumentError, MissingFile
from knowledge.loaders import (
    SUPPORTED_SUFFIXES,
    LoadedDocument,
    check_size,
    is_supported,
    load_bytes,
    looks_binary,
)
from knowledge.loaders.common import first_line
from knowledge.store import DocumentInfo, NewChunk, NewDocument

if TYPE_CHECKING:
    from knowledge.base import KnowledgeBase
    from knowledge.chunker import Chunk

logger = logging.getLogger(__name__)

BATCH_CHUNKS = 512  # passages embedded and stored together
BATCH_FILES = 500
BATCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Skipped:
    """A file (or hidden folder) a folder walk left out, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class AddReport:
    added: list[DocumentInfo] = field(default_factory=list)
    unchanged: list[DocumentInfo] = field(default_factory=list)  # already present (same content)
    failed: list[DocumentError] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # left out of a folder: hidden, unsupported, too large


def expand_paths(paths: Iterable[str | Path], report: AddReport, *, max_bytes: int | None = None) -> list[Path]:
    """Files as given; folders walked recursively, in name order. What a walk leaves out goes to `report.skipped`
    with its reason: hidden files and folders (a hidden folder once, not its contents), unsupported types,
    files over `max_bytes`, and extension-less files that are binary. Missing paths go to `report.failed`."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(_walk(path, report, max_bytes))
        elif path.exists():
            files.append(path)
        else:
            report.failed.append(MissingFile(path, "no such file or folder"))
    return files


def _walk(folder: Path, report: AddReport, max_bytes: int | None) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        for d in sorted(dirs):
            if d.startswith("."):
                report.skipped.append(Skipped(here / d, "hidden folder"))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = here / name
            reason = _skip_reason(path, max_bytes)
            if reason is None:
                yield path
            else:
                report.skipped.append(Skipped(path, reason))


def _skip_reason(path: Path, max_bytes: int | None) -> str | None:
    if path.name.startswith("."):
        return "hidden file"
    if not is_supported(path.name):
        return f"unsupported type '{path.suffix.lower()}' (supported: {', '.join(SUPPORTED_SUFFIXES)})"
    try:
        if not path.is_file():
            return "not a regular file"
        check_size(path.name, path.stat().st_size, max_bytes)
        if not path.suffix:
            with path.open("rb") as f:
                if looks_binary(f.read(8192)):
                    return "binary file without an extension"
    except DocumentError as e:
        return f"too large: {e.reason}"
    except OSError as e:
        return f"could not be read ({e.strerror or e})"
    return None


@dataclass
class Prepared:
    """One file after the loader thread: a failure, a document already stored, or a document to embed."""

    path: Path
    error: DocumentError | None = None
    existing: DocumentInfo | None = None
    duplicate_of: str | None = None  # the sha256 of a file earlier in this add with the same content
    name: str = ""
    data: bytes = b""
    sha: str = ""
    loaded: LoadedDocument | None = None
    pieces: list[Chunk] = field(default_factory=list)
    saved: bool = False  # its original is already in documents/


def prepare_bytes(kb: KnowledgeBase, data: bytes, name: str, path: Path | None = None) -> Prepared:
    """Hash, look up, load and chunk one document (no embedding). Errors a user can cause are returned."""
    path = Path(name) if path is None else path
    sha = hashlib.sha256(data).hexdigest()
    with kb.store.lock:
        existing = kb.store.find_by_sha(sha)
    if existing is not None:
        return Prepared(path, existing=existing, sha=sha)
    try:
        loaded = load_bytes(data, name, max_bytes=kb.max_file_bytes)
    except DocumentError as e:
        return Prepared(path, error=e)
    return Prepared(path, name=Path(name).name, data=data, sha=sha, loaded=loaded, pieces=kb.chunker.chunk(loaded.text))


def _prepare_file(kb: KnowledgeBase, path: Path) -> Prepared:
    try:
        if not path.is_file():
            raise MissingFile(path, "no such file" if not path.exists() else "is not a file")
        check_size(path.name, path.stat().st_size, kb.max_file_bytes)  # before reading a huge file into memory
        data = path.read_bytes()
    except DocumentError as e:
        return Prepared(path, error=e)
    except OSError as e:
        return Prepared(path, error=MissingFile(path, f"could not be read ({e.strerror or e})"))
    try:
        return prepare_bytes(kb, data, path.name, path)
    except Exception as e:  # a parsing library's own bug must not stop the other files: report it as this file's
        logger.debug("could not read %s", path, exc_info=True)
        return Prepared(path, error=CorruptDocument(path.name, f"could not be read ({type(e).__name__}: {first_line(e)})"))


def _batches(kb: KnowledgeBase, files: list[Path], stop: threading.Event) -> Iterator[list[Prepared]]:
    batch: list[Prepared] = []
    chunks = size = 0
    seen: set[str] = set()
    for path in files:
        if stop.is_set():
            return
        item = _prepare_file(kb, path)
        if item.loaded is not None:
            if item.sha in seen:
                item = Prepared(path, duplicate_of=item.sha, sha=item.sha)
            else:  # here, off the embedding thread's path; before its SQLite row, as always
                kb._save_original(item.data, item.sha, Path(item.name).suffix.lower())
                item.saved = True
            seen.add(item.sha)
        batch.append(item)
        chunks += len(item.pieces)
        size += len(item.data)
        if chunks >= kb.batch_chunks or len(batch) >= kb.batch_files or size >= BATCH_BYTES:
            yield batch
            batch, chunks, size = [], 0, 0
    if batch:
        yield batch


def add_paths(kb: KnowledgeBase, files: list[Path], report: AddReport,
              progress: Callable[[Path], None] | None = None) -> None:
    """Add `files` in batches, loading the next batch on a thread while this one is embedded and stored."""
    feed: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for batch in _batches(kb, files, stop):
                while not stop.is_set():
                    try:
                        feed.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            item: object = done
        except BaseException as e:  # handed to the caller's thread, which raises it
            item = e
        while not stop.is_set():
            try:
                feed.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    loader = threading.Thread(target=produce, name="chatqa-loader", daemon=True)
    loader.start()
    try:
        while (batch := feed.get()) is not done:
            if isinstance(batch, BaseException):
                raise batch
            if progress is not None:
                for item in batch:
                    progress(item.path)
            write_batch(kb, batch, report)
    finally:
        stop.set()
        loader.join(timeout=5)


def write_batch(kb: KnowledgeBase, batch: list[Prepared], report: AddReport, *, save_index: bool = True) -> None:
    """Embed the batch's new documents in one call, store them in one SQLite transaction, add them to FAISS and
    save it; record every item of the batch in `report`, in order."""
    new = [p for p in batch if p.loaded is not None]
    vectors = kb.embedder.embed([c.text for p in new for c in p.pieces]) if new else None
    offsets, pos = {}, 0
    for p in new:
        offsets[id(p)] = pos
        pos += len(p.pieces)
        if not p.saved:
            kb._save_original(p.data, p.sha, Path(p.name).suffix.lower())
    by_sha: dict[str, DocumentInfo] = {}
    with kb._lock:
        fresh = []
        for p in new:
            existing = kb.store.find_by_sha(p.sha)  # a concurrent upload of the same file may have won
            if existing is not None:
                p.existing, p.loaded = existing, None
            else:
                fresh.append(p)
        docs = []
        for p in fresh:
            assert p.loaded is not None and vectors is not None
            offset = offsets[id(p)]
            chunks = [NewChunk(c.text, c.start, c.end, c.n_tokens, p.loaded.page_at(c.start), vectors[offset + i])
                      for i, c in enumerate(p.pieces)]
            docs.append(NewDocument(
                p.name, p.sha, len(p.data), p.loaded.mime, p.loaded.title, p.loaded.text,
                [asdict(x) for x in p.loaded.pages], [asdict(x) for x in p.loaded.sections], chunks,
            ))
        if docs:
            ids = kb.store.insert_documents(docs)
            all_ids = np.array([c for _d, chunk_ids in ids for c in chunk_ids], dtype=np.int64)
            all_vectors = [np.stack([c.embedding for c in d.chunks]) for d in docs if d.chunks]
            if len(all_ids):
                vectors_in = np.concatenate(all_vectors)
                kb._apply(lambda index: index.add(all_ids, vectors_in))  # or patch from SQLite (another process)
            else:
                kb._apply(lambda index: None)
            if save_index:
                kb.index.save()
            for p, (doc_id, _c) in zip(fresh, ids, strict=True):
                by_sha[p.sha] = kb.store.get_document(doc_id)  # type: ignore[assignment]
    for p in batch:
        if p.error is not None:
            logger.info("not added: %s", p.error)
            report.failed.append(p.error)
        elif p.sha in by_sha and p.duplicate_of is None:
            report.added.append(by_sha[p.sha])
            logger.info("added %s (%d chunks)", by_sha[p.sha].name, by_sha[p.sha].n_chunks)
        else:
            doc = p.existing or by_sha.get(p.sha) or kb.store.find_by_sha(p.sha)
            if doc is not None:
                report.unchanged.append(doc)
