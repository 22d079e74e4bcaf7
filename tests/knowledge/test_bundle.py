from __future__ import annotations

from knowledge.base import KnowledgeBase
from knowledge.bundle import BUNDLED_DIR, seed_bundled_documents


def test_bundled_documents_are_added_once(tmp_path, fake_embedder):
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder) as kb:
        report = seed_bundled_documents(kb)
        bundled = sorted(p.name for p in BUNDLED_DIR.glob("*.md"))
        assert bundled and sorted(d.name for d in report.added) == bundled
        assert kb.search("Which file types can ChatQA read?", k=1)[0].doc_name in bundled
        assert seed_bundled_documents(kb) is None  # second start: nothing to do
        for doc in kb.list_documents():
            kb.remove(doc.id)
        assert seed_bundled_documents(kb) is None  # removed by the user: stays removed
        assert kb.list_documents() == []


def test_not_added_to_a_knowledge_base_that_already_has_documents(tmp_path, fake_embedder):
    (tmp_path / "mine.txt").write_text("My own notes about volcanoes.")
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder) as kb:
        kb.add_files([tmp_path / "mine.txt"])
        assert seed_bundled_documents(kb) is None
        assert [d.name for d in kb.list_documents()] == ["mine.txt"]
