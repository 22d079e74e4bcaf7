"""Fixtures of the knowledge-base tests."""

from __future__ import annotations

import pytest

from knowledge.base import KnowledgeBase


@pytest.fixture
def kb(tmp_path, fake_embedder):
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder) as kb:
        yield kb
