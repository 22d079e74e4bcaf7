"""One data directory used by several processes (the app and a terminal).

Two `KnowledgeBase` handles on one folder stand for two processes: each has its own SQLite connection and its own
in-memory FAISS index, as separate processes do.
"""

from __future__ import annotations

import pytest

from knowledge.base import KnowledgeBase
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
