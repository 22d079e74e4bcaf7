from __future__ import annotations

import numpy as np
import pytest

from knowledge.base import KnowledgeBase
from knowledge.errors import (
    CorruptDocument,
    EmptyDocument,
    FileTooLarge,
    MissingFile,
    UnknownDocument,
    UnsupportedFileType,
)
from knowledge.search import fts5_query, reciprocal_rank_fusion
from knowledge.store import INDEX_NAME, VectorIndex

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889 as the centrepiece of the 1889 World's Fair."
)
PENGUINS = (
    "Penguins are a group of aquatic flightless birds. They live almost exclusively in the Southern "
    "Hemisphere. Highly adapted for life in the water, penguins have countershaded dark and white plumage."
)
VOLCANO = "A volcano is a rupture in the crust of a planet that allows hot lava and volcanic ash to escape."


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "eiffel.txt").write_text(EIFFEL)
    (folder / "penguins.md").write_text("# Penguins\n\n" + PENGUINS)
    (folder / "volcano.txt").write_text(VOLCANO)
    return folder


def _state(kb: KnowledgeBase):
    """What must not change when an operation fails: documents, chunk ids, FTS rows, FAISS ids."""
    fts = kb.store.db.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]
    return [d.sha256 for d in kb.list_documents()], kb.store.chunk_ids().tolist(), fts, kb.index.ids().tolist()


def test_add_list_search(kb, docs):
    report = kb.add_files([docs])
    assert sorted(d.name for d in report.added) == ["eiffel.txt", "penguins.md", "volcano.txt"]
    assert not report.failed
    listed = {d.name: d for d in kb.list_documents()}
    assert listed["penguins.md"].mime == "text/markdown"
    assert listed["penguins.md"].title == "Penguins"
    assert all(d.n_chunks >= 1 for d in listed.values())
    for mode in ("dense", "bm25", "hybrid"):
        hits = kb.search("who designed the Eiffel tower", k=2, mode=mode)
        assert hits[0].doc_name == "eiffel.txt", mode
        assert hits[0].text in EIFFEL
        assert EIFFEL[hits[0].start : hits[0].end] == hits[0].text
    hybrid = kb.search("Eiffel tower designer", k=3)[0]
    assert hybrid.dense_rank == 1 and hybrid.bm25_rank == 1
    assert hybrid.score == pytest.approx(1 / 11 + 1.5 / 11)  # rrf_k=10, bm25_weight=1.5


def test_adding_the_same_content_twice_is_a_no_op(kb, docs, tmp_path):
    kb.add_files([docs / "eiffel.txt"])
    before = _state(kb)
    copy = tmp_path / "copy-of-eiffel.txt"
    copy.write_bytes((docs / "eiffel.txt").read_bytes())
    report = kb.add_files([copy, docs / "eiffel.txt"])
    assert report.added == [] and [d.name for d in report.unchanged] == ["eiffel.txt", "eiffel.txt"]
    assert _state(kb) == before


def test_remove_then_re_add(kb, docs):
    kb.add_files([docs])
    eiffel = next(d for d in kb.list_documents() if d.name == "eiffel.txt")
    kb.remove(eiffel.id)
    assert "eiffel.txt" not in [d.name for d in kb.list_documents()]
    assert all(h.doc_name != "eiffel.txt" for h in kb.search("Eiffel tower Gustave", k=5))
    assert kb.store.bm25(fts5_query("Gustave"), 5) == []  # gone from FTS5
    assert kb.index.ntotal == kb.store.count_chunks()  # and from FAISS
    assert not list((kb.data_dir / "documents").glob(f"{eiffel.sha256}.*"))  # and from documents/
    doc, new = kb.add_file(docs / "eiffel.txt")
    assert new and doc.id != eiffel.id
    assert kb.search("Gustave Eiffel", k=1)[0].doc_id == doc.id


def test_remove_unknown_id(kb):
    with pytest.raises(UnknownDocument, match="no document with id 42"):
        kb.remove(42)


def test_index_rebuilt_after_deleting_the_faiss_file(tmp_path, fake_embedder, docs):
    data = tmp_path / "data"
    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        kb.add_files([docs])
        ids = kb.index.ids().tolist()
    (data / INDEX_NAME).unlink()
    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        assert kb.index.ids().tolist() == ids
        assert kb.search("penguins flightless birds", k=1, mode="dense")[0].doc_name == "penguins.md"
    assert (data / INDEX_NAME).exists()


def test_unreadable_faiss_file_is_rebuilt(tmp_path, fake_embedder, docs):
    data = tmp_path / "data"
    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        kb.add_files([docs])
        n = kb.index.ntotal
    (data / INDEX_NAME).write_bytes(b"not a faiss index")
    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        assert kb.index.ntotal == n


def test_crash_between_sqlite_and_faiss_write_leaves_a_consistent_store(tmp_path, fake_embedder, docs, monkeypatch):
    data = tmp_path / "data"
    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        kb.add_files([docs / "eiffel.txt"])

    def crash(self):
        raise KeyboardInterrupt("simulated crash before the FAISS file is written")

    monkeypatch.setattr(VectorIndex, "save", crash)
    kb = KnowledgeBase(data, embedder=fake_embedder).open()
    with pytest.raises(KeyboardInterrupt):
        kb.add_file(docs / "penguins.md")
    with pytest.raises(KeyboardInterrupt):
        kb.remove(kb.list_documents()[0].id)
    kb.close()  # the process "dies": the FAISS file on disk still has the eiffel chunks only
    monkeypatch.undo()

    with KnowledgeBase(data, embedder=fake_embedder) as kb:
        # SQLite committed both changes; the reopened index follows it exactly
        assert [d.name for d in kb.list_documents()] == ["penguins.md"]
        assert np.array_equal(kb.index.ids(), kb.store.chunk_ids())
        assert kb.search("penguins", k=1, mode="dense")[0].doc_name == "penguins.md"
        assert all(h.doc_name == "penguins.md" for h in kb.search("Eiffel", k=5))


def test_failed_sqlite_write_changes_nothing(kb, docs, monkeypatch):
    kb.add_files([docs / "eiffel.txt"])
    before = _state(kb)

    def broken_insert(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(kb.store, "_insert_chunks", broken_insert)
    with pytest.raises(RuntimeError):
        kb.add_file(docs / "penguins.md")
    assert _state(kb) == before


@pytest.mark.parametrize(
    "query",
    [
        '"', '""', "'", "AND", "OR NOT", "NEAR(", "NEAR(a b", "*", "eiffel*", "-", "- tower", "a:b", "text:eiffel",
        "(((", ")", "^tower", "{tower}", "tower AND", "\x00", "é à ü 東京", "😀", " ", "", "a" * 5000,
        "SELECT * FROM chunks; DROP TABLE chunks;--", "the of and",
    ],
)
def test_hostile_fts5_input_is_safe(kb, docs, query):
    kb.add_files([docs])
    hits = kb.search(query, k=3, mode="bm25")
    assert isinstance(hits, list) and len(hits) <= 3
    hits = kb.search(query, k=3, mode="hybrid")
    assert len(hits) <= 3
    assert len(kb.list_documents()) == 3  # nothing dropped


def test_fts5_query_quotes_every_term():
    assert fts5_query('Who designed "the Eiffel" tower AND NEAR(x*') == '"designed" OR "eiffel" OR "tower" OR "near"'
    assert fts5_query("ABC's 2 shows") == '"abc" OR "2" OR "shows"'  # single letters dropped, digits kept
    assert fts5_query("the of and") == '"the" OR "of" OR "and"'
    assert fts5_query("!!! ---") == ""


def test_reciprocal_rank_fusion_by_hand():
    fused = dict(reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    assert [i for i, _ in reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60)] == [1, 3, 2]
    weighted = dict(reciprocal_rank_fusion([[1, 2], [2]], k=10, weights=(1.0, 2.0)))
    assert weighted == pytest.approx({1: 1 / 11, 2: 1 / 12 + 2 / 11})
    with pytest.raises(ValueError, match="Got 1 weights for 2 rankings"):
        reciprocal_rank_fusion([[1], [2]], weights=(1.0,))


def test_blank_query_and_bad_arguments(kb, docs):
    kb.add_files([docs])
    assert kb.search("   ") == []
    with pytest.raises(ValueError, match="mode must be one of"):
        kb.search("x", mode="fuzzy")
    with pytest.raises(ValueError, match="k must be at least 1"):
        kb.search("x", k=0)


def test_empty_knowledge_base_search(kb):
    assert kb.search("anything", mode="hybrid") == []
    assert kb.search("anything", mode="dense") == []


def test_bad_files_are_reported_and_the_rest_still_go_in(tmp_path, fake_embedder, docs):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "junk.txt").write_bytes(bytes(range(256)) * 20)
    (bad / "corrupt.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 10)
    (bad / "program.exe").write_bytes(b"MZ\x90\x00")
    (bad / "huge.txt").write_text("big words " * 2000)
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder, max_file_bytes=10_000) as kb:
        kb.add_files([docs / "volcano.txt"])
        before = _state(kb)
        report = kb.add_files(
            [bad / "empty.txt", docs / "eiffel.txt", bad / "junk.txt", bad / "corrupt.pdf", bad / "program.exe",
             bad / "huge.txt", tmp_path / "missing.txt", docs / "penguins.md"]
        )
        assert [d.name for d in report.added] == ["eiffel.txt", "penguins.md"]
        failures = {e.name.split("/")[-1]: type(e) for e in report.failed}
        assert failures == {
            "empty.txt": EmptyDocument, "junk.txt": CorruptDocument, "corrupt.pdf": CorruptDocument,
            "program.exe": UnsupportedFileType, "huge.txt": FileTooLarge, "missing.txt": MissingFile,
        }
        assert all(e.name.split("/")[-1] in str(e) for e in report.failed)  # each message names its file
        # the failed files left no trace: same as before plus exactly the two good documents
        docs_after, chunks_after, _, faiss_after = _state(kb)
        assert docs_after[: len(before[0])] == before[0] and len(docs_after) == len(before[0]) + 2
        assert set(before[1]) <= set(chunks_after) and faiss_after == chunks_after
        stored = sorted(p.name for p in (kb.data_dir / "documents").iterdir())
        assert len(stored) == 3 and all(not n.startswith(".") for n in stored)


def test_folder_walk_skips_hidden_and_unsupported_files(kb, docs):
    (docs / ".secret.txt").write_text("hidden text")
    (docs / "image.png").write_bytes(b"\x89PNG")
    report = kb.add_files([docs])
    assert sorted(d.name for d in report.added) == ["eiffel.txt", "penguins.md", "volcano.txt"]
    assert report.failed == []


def test_reindex_keeps_documents_and_rebuilds_chunks(kb, docs):
    kb.add_files([docs])
    old_ids = kb.store.chunk_ids().tolist()
    n = kb.reindex()
    assert n == len(old_ids)
    assert set(kb.store.chunk_ids().tolist()).isdisjoint(old_ids)
    assert np.array_equal(kb.index.ids(), kb.store.chunk_ids())
    assert kb.search("Gustave Eiffel", k=1)[0].doc_name == "eiffel.txt"


@pytest.mark.slow
def test_real_embedder_finds_paraphrases(tmp_path, real_embedder, docs):
    with KnowledgeBase(tmp_path / "data", embedder=real_embedder) as kb:
        kb.add_files([docs])
        assert kb.search("Which birds cannot fly?", k=1, mode="dense")[0].doc_name == "penguins.md"
        assert kb.search("molten rock erupting from a mountain", k=1, mode="dense")[0].doc_name == "volcano.txt"


def test_very_common_terms_are_left_out_of_bm25_on_large_knowledge_bases(kb, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        (folder / f"d{i}.txt").write_text(f"Common words fill document number {i}. Rare{i} appears here only.")
    kb.add_files([folder])
    kb.min_chunks_for_pruning = 10
    assert kb.store.term_count("common") == 12
    assert kb._bm25_terms("common rare7") == ["rare7"]  # "common" is in every chunk: left out
    assert kb._bm25_terms("common words") == ["common", "words"]  # nothing would be left: keep all
    assert kb.search("common rare7", k=1, mode="bm25")[0].doc_name == "d7.txt"
    kb.min_chunks_for_pruning = 1000
    assert kb._bm25_terms("common rare7") == ["common", "rare7"]  # small knowledge bases keep every term


def test_term_counts_follow_writes(kb, docs):
    assert kb.store.term_count("penguins") == 0
    kb.add_files([docs])
    assert kb.store.term_count("penguins") == 1 and kb.store.count_chunks() == 3
    kb.remove(next(d.id for d in kb.list_documents() if d.name == "penguins.md"))
    assert kb.store.term_count("penguins") == 0 and kb.store.count_chunks() == 2
