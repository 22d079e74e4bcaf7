from __future__ import annotations

import pytest

from chatqa.engine import ChatEngine
from chatqa.log import ConversationLog
from knowledge.base import KnowledgeBase
from tests.chatqa.test_engine import EIFFEL, PENGUINS, FakeReader

QUESTIONS = ["When was the Eiffel Tower built?", "Who designed the Eiffel Tower?", "What do penguins eat?"]


@pytest.fixture
def data_dir(tmp_path, fake_embedder):
    """A data directory whose log holds 30 one-question conversations, each rated 👍."""
    (tmp_path / "eiffel.txt").write_text(EIFFEL)
    (tmp_path / "penguins.txt").write_text(PENGUINS)
    data = tmp_path / "data"
    with KnowledgeBase(data, embedder=fake_embedder) as kb, ConversationLog(data) as log:
        kb.add_files([tmp_path / "eiffel.txt", tmp_path / "penguins.txt"])
        engine = ChatEngine(kb, FakeReader(), log=log)
        for i in range(30):
            result = engine.ask(QUESTIONS[i % 3], log.new_conversation(), mode="extractive")
            log.feedback(result.turn_id, "up")
    return data
