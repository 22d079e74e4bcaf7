"""Retraining from the conversation log: the split, the promotion rule, interruption, and the running engine
picking up a promoted version. The trainer is faked where the test is about the loop, real where it is about
training (marked slow)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from chatqa.engine import ChatEngine
from chatqa.log import ConversationLog
from chatqa.reader import DEFAULT_READER_DIR, ExtractiveReader, load_reader_settings, save_reader_settings
from chatqa.registry import SHIPPED, ModelRegistry, UnknownVersion
from finetune.from_logs import (
    LogRetrainConfig,
    conversation_is_heldout,
    decide,
    retrain_reader,
    split_examples,
)
from knowledge.base import KnowledgeBase
from knowledge.errors import ChatQAError
from tests.chatqa.test_engine import EIFFEL


def _config(data_dir, **kw) -> LogRetrainConfig:
    return LogRetrainConfig(data_dir=str(data_dir), replay=[], squad_dev=None, **kw)


class CopyTrainer:
    """Stands in for ReaderTrainer: records what it was given and writes a copy of the base model, optionally
    spoiled (span head zeroed: it can no longer point at an answer)."""

    spoil = False
    seen: list = []

    def __init__(self, cfg, examples):
        self.cfg, self.examples = cfg, examples
        CopyTrainer.seen = examples

    def run(self) -> Path:
        out = Path(self.cfg.out) / "model"
        shutil.copytree(self.cfg.base, out)
        if self.spoil:
            from safetensors.torch import load_file, save_file

            weights = load_file(out / "model.safetensors")
            weights = {k: (v * 0 if k.startswith("qa_outputs") else v) for k, v in weights.items()}
            save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
        return out


class SpoilingTrainer(CopyTrainer):
    spoil = True


class InterruptedTrainer(CopyTrainer):
    def run(self) -> Path:
        (Path(self.cfg.out) / "state.tmp").mkdir(parents=True)
        raise KeyboardInterrupt


def test_the_split_is_by_conversation_and_deterministic(data_dir):
    from chatqa.export import feedback_examples

    with ConversationLog(data_dir) as log:
        examples, _ = feedback_examples(log)
    train, held = split_examples(examples, 0.2)
    assert train and held and len(train) + len(held) == len(examples)
    assert not {e.conversation_id for e in train} & {e.conversation_id for e in held}
    assert split_examples(examples, 0.2) == (train, held)
    assert conversation_is_heldout("abc", 0.2) == conversation_is_heldout("abc", 0.2)
    assert not conversation_is_heldout("abc", 0.0) and conversation_is_heldout("abc", 1.0)


@pytest.mark.slow
def test_held_out_examples_are_never_trained_on(data_dir):
    from chatqa.export import feedback_examples

    report = retrain_reader(_config(data_dir), trainer_cls=CopyTrainer)
    with ConversationLog(data_dir) as log:
        examples, _ = feedback_examples(log)
    _, held = split_examples(examples, 0.2)
    held_conversations = {e.conversation_id for e in held}
    assert CopyTrainer.seen and not {e.group for e in CopyTrainer.seen} & held_conversations
    assert report.metrics["heldout_examples"] == len(held)


@pytest.mark.slow
def test_a_worse_model_is_refused_and_recorded(data_dir):
    report = retrain_reader(_config(data_dir), trainer_cls=SpoilingTrainer)
    assert not report.promoted and "not above" in report.reason
    assert report.metrics["new"]["heldout"]["f1"] < report.metrics["parent"]["heldout"]["f1"]
    registry = ModelRegistry(data_dir)
    assert registry.active().id == SHIPPED
    assert [v.id for v in registry.versions()] == [SHIPPED, "r1"]
    assert registry.checkpoint("r1").is_dir() and not registry.get("r1").promoted
    assert not (registry.folder / "runs").exists() or not any((registry.folder / "runs").iterdir())


@pytest.mark.slow
def test_an_equal_model_is_not_promoted_either(data_dir):
    report = retrain_reader(_config(data_dir), trainer_cls=CopyTrainer)
    assert not report.promoted
    assert report.metrics["new"]["heldout"] == report.metrics["parent"]["heldout"]


def test_an_interrupted_retrain_leaves_the_active_version(data_dir):
    registry = ModelRegistry(data_dir)
    with pytest.raises(KeyboardInterrupt):
        retrain_reader(_config(data_dir), trainer_cls=InterruptedTrainer)
    assert registry.active().id == SHIPPED and [v.id for v in registry.versions()] == [SHIPPED]
    assert not registry.path.exists()


def test_nothing_to_learn_from_is_a_clear_error(tmp_path):
    with pytest.raises(ChatQAError, match="nothing to learn from yet"):
        retrain_reader(_config(tmp_path), trainer_cls=CopyTrainer)


def test_promotion_rule():
    def m(held, squad=None):
        out = {"heldout": {"f1": held}}
        if squad is not None:
            out["squad"] = {"f1": squad}
        return out

    assert decide(m(50, 80), m(60, 79.5), 1.0)[0]
    assert not decide(m(50, 80), m(60, 78.9), 1.0)[0]  # forgets too much SQuAD
    assert not decide(m(50, 80), m(50, 80), 1.0)[0]  # not strictly better
    assert decide(m(50), m(51), 1.0)[0]  # no SQuAD file available: the held-out split decides
    assert not decide(m(None), m(None), 1.0)[0]


def test_registry_switches_versions_and_refuses_unknown_ones(tmp_path):
    registry = ModelRegistry(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    v = registry.add(model, parent=SHIPPED, promoted=True, reason="test", metrics={"f1": 1})
    assert registry.active().id == v.id == "r1" and registry.checkpoint() == registry.folder / "versions" / "r1"
    registry.activate(SHIPPED)
    assert registry.checkpoint() == DEFAULT_READER_DIR
    with pytest.raises(UnknownVersion, match="r9"):
        registry.activate("r9")
    assert json.loads(registry.path.read_text())["active"] == SHIPPED


@pytest.mark.slow
def test_the_running_engine_answers_with_a_promoted_version(tmp_path, fake_embedder):
    with KnowledgeBase(tmp_path, embedder=fake_embedder) as kb, ConversationLog(tmp_path) as log:
        (tmp_path / "eiffel.txt").write_text(EIFFEL)
        kb.add_files([tmp_path / "eiffel.txt"])
        registry = ModelRegistry(tmp_path)
        engine = ChatEngine(kb, ExtractiveReader(registry.checkpoint()), log=log, registry=registry)
        first = engine.ask("When was the Eiffel Tower built?", mode="extractive")
        assert not first.abstained and first.model_versions["reader"] == SHIPPED

        # a "retrained" version that abstains on everything (its chat threshold says so), promoted
        strict = tmp_path / "strict"
        shutil.copytree(DEFAULT_READER_DIR, strict)
        save_reader_settings(strict, replace(load_reader_settings(strict), chat_threshold=-1e9))
        registry.add(strict, parent=SHIPPED, promoted=True, reason="test", metrics={})
        second = engine.ask("When was the Eiffel Tower built?", mode="extractive")
        assert second.abstained and second.model_versions["reader"] == "r1"

        registry.activate(SHIPPED)  # switching back
        third = engine.ask("When was the Eiffel Tower built?", mode="extractive")
        assert not third.abstained and third.model_versions["reader"] == SHIPPED


@pytest.mark.slow
def test_a_real_retrain_records_a_version(data_dir):
    report = retrain_reader(_config(data_dir), {"epochs": 1.0, "batch_size": 8})
    registry = ModelRegistry(data_dir)
    assert report.version.id == "r1" and registry.get("r1").training["config"]["epochs"] == 1.0
    assert (registry.checkpoint("r1") / "model.safetensors").exists()
    settings = load_reader_settings(registry.checkpoint("r1"))
    assert settings.chat_threshold == load_reader_settings(DEFAULT_READER_DIR).chat_threshold
    assert registry.active().id == ("r1" if report.promoted else SHIPPED)
