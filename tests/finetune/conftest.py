from __future__ import annotations

import shutil

import pytest

from finetune.from_logs import conversation_is_heldout
from tests.chatqa.conftest import tiny_qwen  # noqa: F401  (a fixture: the tiny random Qwen2 as a transformers folder)

QUESTIONS = ["When was the Eiffel Tower built?", "Who designed the Eiffel Tower?", "What do penguins eat?"]


@pytest.fixture
def data_dir(fake_engine):
    """A data directory whose log holds 30 one-question conversations, each rated 👍."""
    log = fake_engine.log
    for i in range(30):
        result = fake_engine.ask(QUESTIONS[i % 3], log.new_conversation(), mode="extractive")
        log.feedback(result.turn_id, "up")
    return fake_engine.kb.data_dir


def log_rated_answers(engine, *, train: int, held: int, share: float = 0.2) -> None:
    """Ask and rate 👍 one-question conversations through the app's code path until ``train`` of them are on the
    training side of the split and ``held`` are held out."""
    counts, want, asked = {False: 0, True: 0}, {False: train, True: held}, 0
    while counts != want:
        conversation = engine.log.new_conversation()
        side = conversation_is_heldout(conversation, share)
        if counts[side] >= want[side]:
            continue
        result = engine.ask(QUESTIONS[asked % len(QUESTIONS)], conversation, mode="extractive")
        assert not result.abstained, result.answer
        engine.log.feedback(result.turn_id, "up")
        counts[side] += 1
        asked += 1


@pytest.fixture
def tiny_cache(tiny_qwen, tmp_path):  # noqa: F811
    """A decoder cache whose packaged "qwen2.5-0.5b" is the tiny random Qwen2: ``hf/`` and its CTranslate2 ``ct2/``."""
    from chatqa.models.conversion import hf_to_ct2

    cache = tmp_path / "cache"
    folder = cache / "decoder-qwen2.5-0.5b"
    shutil.copytree(tiny_qwen, folder / "hf")
    hf_to_ct2(folder / "hf", folder / "ct2")
    return cache
