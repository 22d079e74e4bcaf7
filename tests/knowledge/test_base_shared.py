"""One data directory used by several processes (the app and a terminal), and what an interrupted one leaves behind.

Two `KnowledgeBase` handles on one folder stand for two processes: each has its own SQLite connection and its own
in-memory FAISS index, as separate processes do.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from knowledge.base import KnowledgeBase
from knowledge.errors import UnknownDocument
from knowledge.store import INDEX_NAME, VectorIndex
from tests.conftest import FakeEmbedder
from tests.knowledge.test_base import EIFFEL, PENGUINS, VOLCANO


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "eiffel.txt").write_text(EIFFEL)
    (folder / "penguins.txt").write_text(PENGUINS)
    (folder / "volcano.txt").write_text(VOLCANO)
    return folder


@pytest.fixture
def pair(tmp_path, fake_embedder):
    """Two handles on one data directory, as the app and a terminal command would be."""
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder) as app, \
            KnowledgeBase(tmp_path / "data", embedder=FakeEmbedder()) as terminal:
        yield app, terminal


def _saved_ids(kb: KnowledgeBase) -> list[int]:
    """The chunk ids in `index.faiss` as another process would read it now."""
    index = VectorIndex(kb.data_dir / INDEX_NAME, kb.embedder.dim)
    assert index.load()
    return index.ids().tolist()


def _dense(kb: KnowledgeBase, query: str, text: str) -> float:
    """The dense score a passage should get: the inner product of the two embeddings."""
    q, t = kb.embedder.embed([query, text])
    return float(q @ t)


def _age(path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


# -- D2: what a killed process leaves behind is cleaned on the next open --------------------------------------------
def test_leftovers_of_a_killed_remove_are_cleaned_on_the_next_open(tmp_path, fake_embedder, docs):
    data = tmp_path / "data"
    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        kb.add_files([docs / "eiffel.txt", docs / "penguins.txt"])
        gone, kept = kb.list_documents()
        # What `kill -9` during the FAISS write of `kb remove` leaves: the row is gone (SQLite committed), the
        # original is still in documents/, and the temp file of the index write is half written.
        kb.store.delete_document(gone.id)
    originals = data / "documents"
    gone_original = next(originals.glob(f"{gone.sha256}.*"))
    kept_original = next(originals.glob(f"{kept.sha256}.*"))
    tmp_index = data / ".index-abc123.tmp"
    tmp_index.write_bytes(b"half an index")
    tmp_original = originals / f".{kept.sha256}.txt.xyz.tmp"
    tmp_original.write_bytes(b"half a file")
    unrelated = originals / "notes-of-the-user.txt"  # not ours: never touched
    unrelated.write_text("keep me")
    for path in (gone_original, kept_original, tmp_index, tmp_original, unrelated):
        _age(path, 3600)

    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        assert [d.name for d in kb.list_documents()] == ["penguins.txt"]
        assert not gone_original.exists() and not tmp_index.exists() and not tmp_original.exists()
        assert kept_original.read_text() == PENGUINS and unrelated.read_text() == "keep me"
        assert _saved_ids(kb) == kb.store.chunk_ids().tolist()


def test_files_another_process_may_be_writing_right_now_are_left_alone(tmp_path, fake_embedder, docs):
    data = tmp_path / "data"
    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        kb.add_files([docs / "eiffel.txt"])
    fresh_tmp = data / ".index-writing.tmp"  # a concurrent save, not yet renamed
    fresh_tmp.write_bytes(b"being written")
    fresh_original = data / "documents" / ("0" * 64 + ".txt")  # saved just before its row is inserted
    fresh_original.write_text("about to be added")
    with KnowledgeBase(data, embedder=fake_embedder):
        pass
    assert fresh_tmp.read_bytes() == b"being written" and fresh_original.read_text() == "about to be added"


def test_remove_deletes_the_original_before_writing_the_index(kb_with_docs, monkeypatch):
    kb = kb_with_docs
    doc = kb.list_documents()[0]

    def killed(self):
        raise KeyboardInterrupt  # stands for kill -9 while the index is written

    monkeypatch.setattr(VectorIndex, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        kb.remove(doc.id)
    assert list((kb.data_dir / "documents").glob(f"{doc.sha256}.*")) == []


@pytest.fixture
def kb_with_docs(tmp_path, fake_embedder, docs):
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder) as kb:
        kb.add_files([docs])
        yield kb


# -- D3: re-indexing while another process removes a document -------------------------------------------------------
def test_reindex_skips_a_document_removed_meanwhile(pair, docs):
    app, terminal = pair
    app.add_files([docs])
    eiffel, penguins, volcano = app.list_documents()
    real_embed = terminal.embedder.embed

    def embed_while_the_app_removes(texts, **kw):
        if any("Eiffel" in t for t in texts) and app.list_documents()[0].id == eiffel.id:
            app.remove(eiffel.id)  # the other process removes the document being re-embedded
        return real_embed(texts, **kw)

    terminal.embedder.embed = embed_while_the_app_removes
    seen = []
    n = terminal.reindex(progress=lambda d: seen.append(d.name))
    assert seen == ["eiffel.txt", "penguins.txt", "volcano.txt"]  # went on after the vanished one
    assert [d.name for d in terminal.list_documents()] == ["penguins.txt", "volcano.txt"]
    assert n == terminal.store.count_chunks() == penguins.n_chunks + volcano.n_chunks
    assert terminal.store.db.execute("SELECT COUNT(*) FROM chunks WHERE doc_id = ?", [eiffel.id]).fetchone()[0] == 0
    assert terminal.index.ids().tolist() == terminal.store.chunk_ids().tolist()


def test_reindex_skips_a_document_removed_before_its_turn(pair, docs):
    app, terminal = pair
    app.add_files([docs])
    eiffel, penguins, volcano = app.list_documents()

    def remove_volcano(doc):
        if doc.id == penguins.id:
            app.remove(volcano.id)

    assert terminal.reindex(progress=remove_volcano) == eiffel.n_chunks + penguins.n_chunks
    assert [d.name for d in terminal.list_documents()] == ["eiffel.txt", "penguins.txt"]


# -- D4: a change made by another process is seen at once -------------------------------------------------------------
def test_search_sees_documents_another_process_added(pair, docs):
    app, terminal = pair
    app.add_files([docs / "eiffel.txt"])
    assert app.search("volcano lava ash", k=3, mode="dense")[0].doc_name == "eiffel.txt"  # the only one so far
    terminal.add_files([docs / "volcano.txt"])
    hits = app.search("volcano lava ash", k=3)
    assert hits[0].doc_name == "volcano.txt" and hits[0].dense_rank == 1 and hits[0].bm25_rank == 1
    assert hits[0].dense_score == pytest.approx(_dense(app, "volcano lava ash", VOLCANO), abs=1e-5)
    assert app.index.ids().tolist() == app.store.chunk_ids().tolist()


def test_search_forgets_documents_another_process_removed_or_reindexed(pair, docs):
    app, terminal = pair
    app.add_files([docs])
    assert app.search("penguins", k=1, mode="dense")[0].doc_name == "penguins.txt"
    penguins = [d for d in terminal.list_documents() if d.name == "penguins.txt"][0]
    terminal.remove(penguins.id)
    assert all(h.doc_name != "penguins.txt" for h in app.search("penguins", k=3, mode="dense"))
    terminal.reindex()
    hits = app.search("Gustave Eiffel tower", k=1, mode="dense")
    assert app.index.ids().tolist() == app.store.chunk_ids().tolist()
    assert hits[0].doc_name == "eiffel.txt"
    assert hits[0].dense_score == pytest.approx(_dense(app, "Gustave Eiffel tower", hits[0].text), abs=1e-5)


def test_chunk_ids_are_never_reused(pair, docs):
    """A FAISS index is matched to the database by chunk ids: an id must never name two different passages."""
    app, terminal = pair
    app.add_files([docs / "eiffel.txt", docs / "penguins.txt"])
    last = app.list_documents()[-1]
    old_ids = set(app.store.chunk_ids().tolist())
    terminal.remove(last.id)  # held the highest ids
    terminal.add_files([docs / "volcano.txt"])
    terminal.reindex()
    new_ids = set(terminal.store.chunk_ids().tolist())
    assert not (new_ids & old_ids)
    hits = app.search("volcano lava ash", k=1, mode="dense")
    assert hits[0].doc_name == "volcano.txt"
    assert hits[0].dense_score == pytest.approx(_dense(app, "volcano lava ash", VOLCANO), abs=1e-5)


def test_what_a_process_adds_is_in_the_saved_index_at_once(pair, docs):
    app, terminal = pair
    terminal.add_files([docs / "eiffel.txt"])  # the app's in-memory index has not seen this one
    app.add_files([docs / "penguins.txt"])
    assert _saved_ids(app) == app.store.chunk_ids().tolist()
    app.add_bytes(VOLCANO.encode(), "volcano.txt")
    assert _saved_ids(app) == app.store.chunk_ids().tolist() == terminal.store.chunk_ids().tolist()
    assert len(_saved_ids(app)) == sum(d.n_chunks for d in app.list_documents())


def test_generation_counts_every_change(pair, docs):
    app, terminal = pair
    start = app.store.generation()
    app.add_files([docs / "eiffel.txt"])
    terminal.add_files([docs / "eiffel.txt"])  # unchanged: no new generation
    assert terminal.store.generation() == start + 1
    terminal.remove(terminal.list_documents()[0].id)
    assert app.store.generation() == start + 2
    app.add_files([docs / "penguins.txt"])
    app.reindex()
    assert terminal.store.generation() > start + 3


# -- D5: ids and k beyond what SQLite can store -----------------------------------------------------------------------
def test_huge_ids_and_k_are_named_errors_not_overflows(kb_with_docs):
    kb = kb_with_docs
    huge = 99999999999999999999999
    with pytest.raises(UnknownDocument, match="no document with id 99999999999999999999999"):
        kb.remove(huge)
    with pytest.raises(UnknownDocument):
        kb.get_document(-huge)
    hits = kb.search("penguins", k=99999999999999999999)
    assert len(hits) == kb.store.count_chunks()  # every passage, best first
    assert hits[0].doc_name == "penguins.txt"
    assert np.all(np.diff([h.score for h in hits]) <= 0)
