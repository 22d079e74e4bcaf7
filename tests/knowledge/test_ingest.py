"""Adding folders: every skip reported, batches across files, deep HTML (#20 D1), interrupted adds, pypdf's
warnings kept off the terminal (#20)."""

from __future__ import annotations

import io
import logging

import pytest

from knowledge.base import KnowledgeBase
from knowledge.errors import CorruptDocument, FileTooLarge
from knowledge.ingest import Skipped
from knowledge.store import VectorIndex


def _state(kb: KnowledgeBase):
    fts = kb.store.db.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]
    return [d.name for d in kb.list_documents()], kb.store.chunk_ids().tolist(), fts, kb.index.ids().tolist()


def test_a_folder_reports_each_skip_with_its_reason(tmp_path, fake_embedder):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git" / "objects").mkdir(parents=True)
    (folder / ".git" / "objects" / "ab12").write_bytes(b"\x78\x9c" * 10)
    (folder / "guide.rst").write_text("Guide\n=====\n\nHow to start the pump.\n")
    (folder / "sub" / "notes.txt").write_text("Coolant is checked every Monday.")
    (folder / "sub" / "CHANGES").write_text("Version 2 adds the pump schedule.\n")  # extension-less text: added
    (folder / ".env").write_text("SECRET=1")
    (folder / "sub" / ".hidden.md").write_text("# hidden")
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "tool").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    (folder / "big.txt").write_text("word " * 400)
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder, max_file_bytes=1000) as kb:
        report = kb.add_files([folder])
    assert [d.name for d in report.added] == ["guide.rst", "CHANGES", "notes.txt"]
    assert report.failed == [] and report.unchanged == []
    reasons = {s.path.relative_to(folder).as_posix(): s.reason for s in report.skipped}
    assert set(reasons) == {".git", ".env", "sub/.hidden.md", "photo.png", "tool", "big.txt"}
    assert reasons[".git"] == "hidden folder" and reasons[".env"] == reasons["sub/.hidden.md"] == "hidden file"
    assert reasons["photo.png"].startswith("unsupported type '.png' (supported: .txt, ")
    assert reasons["tool"] == "binary file without an extension"
    assert reasons["big.txt"].startswith("too large: is 0.00 MB (2,000 bytes), larger than the 0.00 MB (1,000 bytes)")
    assert str(Skipped(folder / "tool", "x")) == f"{folder / 'tool'}: x"


def test_d1_deeply_nested_html_is_one_error_and_the_rest_of_the_folder_goes_in(tmp_path, kb):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "a-intro.txt").write_text("The intro explains the pump.")
    (folder / "deep.html").write_text("<html><body>" + "<div>" * 1000 + "deep text" + "</div>" * 1000 + "</body></html>")
    (folder / "z-after.md").write_text("# After\n\nThe files after the deep one are added too.")
    report = kb.add_files([folder])
    assert [d.name for d in report.added] == ["a-intro.txt", "z-after.md"]
    assert len(report.failed) == 1
    error = report.failed[0]
    assert isinstance(error, CorruptDocument) and error.name == "deep.html"
    assert str(error) == ("deep.html: is nested too deeply to read (thousands of levels of elements); "
                          "simplify it or save it as plain text")
    assert [h.doc_name for h in kb.search("files after the deep one", k=1)] == ["z-after.md"]


def test_files_are_embedded_in_batches_across_files(tmp_path, kb, fake_embedder, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(30):
        (folder / f"note-{i:02d}.txt").write_text(f"Note {i} says the valve number {i} is open.")
    kb.batch_chunks = 12  # three batches of 12, 12 and 6 files (one chunk each)
    saves = []
    real_save = VectorIndex.save

    def counting_save(index):
        saves.append(index.ntotal)
        real_save(index)

    calls_before = fake_embedder.calls
    monkeypatch.setattr(VectorIndex, "save", counting_save)
    report = kb.add_files([folder])
    assert [d.name for d in report.added] == [f"note-{i:02d}.txt" for i in range(30)]
    assert fake_embedder.calls - calls_before == 3  # one embedder call per batch, not one per file
    assert saves == [12, 24, 30]  # FAISS written once per batch
    names, chunk_ids, fts, faiss_ids = _state(kb)
    assert len(names) == 30 and chunk_ids == faiss_ids and fts == 30
    hit = kb.search("valve number 17", k=1, mode="dense")[0]
    assert hit.doc_name == "note-17.txt" and hit.text == "Note 17 says the valve number 17 is open."


def test_same_content_twice_in_one_add_is_stored_once(tmp_path, kb):
    folder = tmp_path / "copies"
    folder.mkdir()
    (folder / "a.txt").write_text("Identical content.")
    (folder / "b.txt").write_text("Identical content.")
    report = kb.add_files([folder])
    assert [d.name for d in report.added] == ["a.txt"]
    assert [d.name for d in report.unchanged] == ["a.txt"]  # b.txt is the same document
    assert len(list((kb.data_dir / "documents").iterdir())) == 1


def test_an_interrupted_add_keeps_the_batches_already_written(tmp_path, kb, fake_embedder):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(9):
        (folder / f"doc-{i}.txt").write_text(f"Document {i} is about topic {i}.")
    kb.batch_chunks = 3
    real_embed = fake_embedder.embed

    def interrupted(texts, **kw):
        if fake_embedder.calls == 2:  # the third batch
            raise KeyboardInterrupt
        return real_embed(texts, **kw)

    fake_embedder.embed = interrupted
    with pytest.raises(KeyboardInterrupt):
        kb.add_files([folder])
    fake_embedder.embed = real_embed
    names, chunk_ids, fts, faiss_ids = _state(kb)
    assert names == [f"doc-{i}.txt" for i in range(6)]  # two whole batches, nothing of the third
    assert chunk_ids == faiss_ids and fts == 6
    with KnowledgeBase(kb.data_dir, embedder=fake_embedder) as again:  # nothing to rebuild on the next open
        assert again.index.ids().tolist() == chunk_ids
        report = again.add_files([folder])
        assert len(report.added) == 3 and len(report.unchanged) == 6


def test_a_loader_bug_is_reported_for_its_file_only(tmp_path, kb, monkeypatch):
    import knowledge.loaders as loaders

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.csv").write_text("x,y\n1,2\n")
    (folder / "b.txt").write_text("Fine text.")

    def broken(data, name):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(loaders._FORMATS, ".csv", ("text/csv", broken, ""))
    report = kb.add_files([folder])
    assert [d.name for d in report.added] == ["b.txt"]
    assert [str(e) for e in report.failed] == ["a.csv: could not be read (ZeroDivisionError: division by zero)"]


def test_explicit_files_over_the_limit_fail_and_the_limit_is_configurable(tmp_path, fake_embedder):
    path = tmp_path / "big.txt"
    path.write_text("word " * 300)
    with KnowledgeBase(tmp_path / "d1", embedder=fake_embedder, max_file_bytes=1000) as kb:
        report = kb.add_files([path])
        assert [type(e) for e in report.failed] == [FileTooLarge] and "--max-file-mb" in str(report.failed[0])
    with KnowledgeBase(tmp_path / "d2", embedder=fake_embedder, max_file_bytes=2000) as kb:
        assert [d.name for d in kb.add_files([path]).added] == ["big.txt"]


def test_pypdf_warnings_go_to_logging_not_the_terminal(tmp_path, kb, caplog):
    from tests.knowledge.test_loaders import PDF_PAGES, make_pdf

    data = make_pdf(PDF_PAGES)
    at = data.rindex(b"startxref\n") + len(b"startxref\n")
    damaged = data[:at] + b"12" + data[at:]  # a wrong cross-reference offset: pypdf repairs it and warns
    (tmp_path / "damaged.pdf").write_bytes(damaged)
    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)  # what `chatqa -v`'s logging.basicConfig sets up
    try:
        with caplog.at_level(logging.DEBUG, logger="knowledge.loaders.pdf"):
            report = kb.add_files([tmp_path / "damaged.pdf"])
    finally:
        logging.getLogger().removeHandler(handler)
    assert [d.name for d in report.added] == ["damaged.pdf"]
    assert terminal.getvalue() == ""
    routed = [r.getMessage() for r in caplog.records if r.name == "knowledge.loaders.pdf"]
    assert any(m.startswith("damaged.pdf: pypdf: ") and "startxref" in m for m in routed), routed
