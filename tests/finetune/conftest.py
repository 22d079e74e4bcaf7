from __future__ import annotations

import pytest

QUESTIONS = ["When was the Eiffel Tower built?", "Who designed the Eiffel Tower?", "What do penguins eat?"]


@pytest.fixture
def data_dir(fake_engine):
    """A data directory whose log holds 30 one-question conversations, each rated 👍."""
    log = fake_engine.log
    for i in range(30):
        result = fake_engine.ask(QUESTIONS[i % 3], log.new_conversation(), mode="extractive")
        log.feedback(result.turn_id, "up")
    return fake_engine.kb.data_dir
