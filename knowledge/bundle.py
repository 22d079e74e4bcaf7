"""The small knowledge base that ships with ChatQA, so a fresh start can answer questions at once."""

from __future__ import annotations

import logging
from pathlib import Path

from knowledge.base import AddReport, KnowledgeBase

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
_SEEDED = "bundled_documents_added"


def seed_bundled_documents(kb: KnowledgeBase) -> AddReport | None:
    """Add the bundled documents once, to a knowledge base that has never had any. Returns None when it did nothing.

    Removing a bundled document later is respected: it is not added again on the next start.
    """
    if kb.store.get_meta(_SEEDED) is not None or kb.list_documents():
        return None
    report = kb.add_files(sorted(BUNDLED_DIR.glob("*.md")))
    kb.store.set_meta(_SEEDED, ",".join(d.name for d in report.added))
    logger.info("added %d bundled documents", len(report.added))
    return report
