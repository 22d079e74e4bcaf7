from __future__ import annotations

import math
from pathlib import Path

import pytest

from chatqa.decide import AbstentionPolicy
from chatqa.decoder import DecoderUnavailable, DraftPiece, GenerativeDecoder
from chatqa.engine import ChatEngine, EngineSettings
from chatqa.log import ConversationLog
from chatqa.reader import ReaderAnswer, ReaderResult
from knowledge.base import KnowledgeBase
from knowledge.errors import InvalidQuery

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by Gustave Eiffel. "
    "The tower was built from 1887 to 1889 for the World's Fair."
)
PENGUINS = "Penguins are flightless birds. They live in the Southern Hemisphere and eat krill."
ANSWERS = {"designed": "Gustave Eiffel", "built": "1887 to 1889", "eat": "krill"}


class FakeReader:
    """Finds a known answer for the question's key word in the passages; abstains otherwise."""

    checkpoint = Path("fake-reader")
    threshold = 0.0

    def __init__(self):
        self.questions: list[str] = []

    def warm_up(self):
        pass

    def read_batch(self, questions, passages, *, top_k=5):
        results = []
        for question, texts in zip(questions, passages, strict=True):
            self.questions.append(question)
            answer = next((a for word, a in ANSWERS.items() if word in question.lower()), None)
            found = [(i, t.find(answer)) for i, t in enumerate(texts)] if answer else []
            found = [(i, at) for i, at in found if at >= 0]
            if found and "tower" in question.lower() or found and "penguin" in question.lower():
                i, at = found[0]
                results.append(ReaderResult([ReaderAnswer(i, at, at + len(answer), answer, 12.0, 1.0)], 1.0, False, 0.0))
            else:
                results.append(ReaderResult([], math.inf, True, 0.0))
        return results


class ScriptedDecoder(GenerativeDecoder):
    """A scripted draft instead of a model; records what it was asked."""

    def __init__(self, draft: str | Exception):
        super().__init__("unused")
        self.draft = draft
        self.calls: list[tuple] = []

    @property
    def is_loaded(self) -> bool:
        return True

    def warm_up(self, progress=None) -> None:
        raise AssertionError("a scripted decoder has no model to load")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def answer(self, question, passages, history=()):
        self.calls.append((question, list(passages), list(history)))
        if isinstance(self.draft, Exception):
            raise self.draft
        words = self.draft.split(" ")
        yield from (DraftPiece(w if i == 0 else " " + w, (-0.1,)) for i, w in enumerate(words))


@pytest.fixture
def kb(tmp_path, fake_embedder):
    (tmp_path / "eiffel.txt").write_text(EIFFEL)
    (tmp_path / "penguins.txt").write_text(PENGUINS)
    with KnowledgeBase(tmp_path / "data", embedder=fake_embedder) as kb:
        kb.add_files([tmp_path / "eiffel.txt", tmp_path / "penguins.txt"])
        yield kb


@pytest.fixture
def log(tmp_path):
    with ConversationLog(tmp_path / "data") as log:
        yield log


def test_answer_with_span_evidence_and_log_row(kb, log):
    engine = ChatEngine(kb, FakeReader(), log=log, settings=EngineSettings(mode="extractive"))
    conversation = log.new_conversation()
    result = engine.ask("When was the Eiffel Tower built?", conversation)
    assert not result.abstained and result.mode == "extractive"
    assert result.span.text == "1887 to 1889" and result.span.doc_name == "eiffel.txt"
    passage = result.passages[result.span.passage_index]
    assert passage.text[result.span.start : result.span.end] == "1887 to 1889"
    doc_start, doc_end = result.span.doc_offsets(passage)
    assert kb.store.document_text(result.span.doc_id)[doc_start:doc_end] == "1887 to 1889"
    assert result.answer.startswith("1887 to 1889.") and "World's Fair" in result.answer
    assert set(result.timings) == {"condense", "search", "read", "compose"}
    logged = log.history(conversation)
    assert [t.question for t in logged] == ["When was the Eiffel Tower built?"]
    assert logged[0].span_text == "1887 to 1889" and len(logged[0].passages) == len(result.passages)


def test_follow_up_is_read_as_a_standalone_question(kb, log):
    reader = FakeReader()
    engine = ChatEngine(kb, reader, log=log, settings=EngineSettings(mode="extractive"))
    conversation = log.new_conversation()
    engine.ask("When was the Eiffel Tower built?", conversation)
    follow_up = engine.ask("Who designed it?", conversation)
    assert follow_up.question == "Who designed it?"
    assert follow_up.standalone_question == "Who designed the Eiffel Tower?" == reader.questions[-1]
    assert follow_up.span.text == "Gustave Eiffel"
    alone = engine.ask("Who designed it?")  # no conversation: nothing to resolve "it" with
    assert alone.abstained and alone.standalone_question == "Who designed it?"
    assert [t.turn_index for t in log.history(conversation)] == [0, 1]


def test_history_without_a_log_is_kept_in_memory(kb):
    engine = ChatEngine(kb, FakeReader(), settings=EngineSettings(mode="extractive"))
    engine.ask("When was the Eiffel Tower built?", "c1")
    assert engine.ask("Who designed it?", "c1").span.text == "Gustave Eiffel"
    assert engine.ask("Who designed it?", "c2").abstained


def test_abstention_names_the_closest_documents(kb, log):
    engine = ChatEngine(kb, FakeReader(), log=log)
    result = engine.ask("What is the boiling point of the tower?", log.new_conversation())
    assert result.abstained and result.span is None
    assert result.answer.startswith("I couldn't find that in your documents.") and "eiffel.txt" in result.answer


def test_strictness_makes_the_reader_abstain(kb):
    engine = ChatEngine(kb, FakeReader(), settings=EngineSettings(mode="extractive"))
    assert not engine.ask("When was the Eiffel Tower built?").abstained
    assert engine.ask("When was the Eiffel Tower built?", strictness=20.0).abstained  # margin 1 - 12 = -11 > -20


@pytest.mark.parametrize(
    "question, message",
    [("", "Please type a question."), ("   \n\t ", "Please type a question."), ("x" * 10_000, "10,000 characters long")],
)
def test_bad_questions_get_a_clear_message_and_no_log_row(kb, log, question, message):
    engine = ChatEngine(kb, FakeReader(), log=log)
    conversation = log.new_conversation()
    with pytest.raises(InvalidQuery, match=message):
        engine.ask(question, conversation)
    assert log.history(conversation) == []


def test_a_generative_answer_streams_cites_and_highlights_the_readers_span_it_holds(kb, log):
    draft = "The Eiffel Tower was built from 1887 to 1889 [1]."
    decoder = ScriptedDecoder(draft)
    engine = ChatEngine(kb, FakeReader(), decoder=decoder, log=log)
    events = list(engine.stream("When was the Eiffel Tower built?", log.new_conversation()))  # auto: loaded
    result = events[-1].result
    assert result.mode == "generative" and result.answer == draft and not result.abstained
    assert "".join(e.text for e in events if e.kind == "token") == draft
    assert "replace" not in [e.kind for e in events]
    shown = decoder.calls[0][1]
    eiffel = next(i for i, h in enumerate(result.passages) if h.doc_name == "eiffel.txt")
    assert shown[0].index == eiffel and result.citations == [eiffel]
    assert result.evidence == (eiffel, result.span.start, result.span.end)  # the answer holds the reader's span
    logged = log.turn(result.turn_id)
    assert logged.evidence == result.evidence and logged.details["citations"] == [eiffel]
    assert logged.details["signals"]["support"] == 1.0


def test_an_answer_without_citation_names_its_supporting_passage(kb):
    always = AbstentionPolicy(weights={"reader": 0.0, "coverage": 1.0})  # the fake reader finds no span here
    engine = ChatEngine(kb, FakeReader(), decoder=ScriptedDecoder("It is a wrought-iron lattice tower in Paris."),
                        policy=always)
    events = list(engine.stream("What kind of tower is the Eiffel Tower?"))
    result = events[-1].result
    assert result.answer == "It is a wrought-iron lattice tower in Paris. [1]" and events[-2].text == " [1]"
    i, start, end = result.evidence  # the reader found no span: the best-supporting sentence
    assert result.passages[i].text[start:end] == "The Eiffel Tower is a wrought-iron lattice tower in Paris."


def test_the_policy_abstains_before_drafting(kb):
    decoder = ScriptedDecoder("anything")
    policy = AbstentionPolicy(weights={"reader": 0.0, "coverage": 10.0}, bias=-9.0)  # every question word found
    engine = ChatEngine(kb, FakeReader(), decoder=decoder, policy=policy)
    result = engine.ask("Who designed the Kerberos tower?")
    assert result.abstained and result.answer.startswith("I couldn't find that") and decoder.calls == []
    assert result.signals["coverage"] == pytest.approx(2 / 3, abs=1e-4)
    assert not engine.ask("Who designed the Eiffel tower?").abstained


def test_a_draft_the_passages_do_not_support_is_retracted(kb):
    policy = AbstentionPolicy(guard_weights={"support": 1.0}, guard_threshold=0.6)
    engine = ChatEngine(kb, FakeReader(), decoder=ScriptedDecoder("Napoleon Bonaparte commissioned it in Lyon."),
                        policy=policy)
    events = list(engine.stream("When was the Eiffel Tower built?"))
    result = events[-1].result
    assert result.abstained and result.span is None and result.evidence is None
    assert [e.kind for e in events][-2:] == ["replace", "final"] and events[-2].text == result.answer
    assert result.signals["support"] < 0.6


def test_an_unavailable_decoder_falls_back_to_the_extractive_answer(kb):
    decoder = ScriptedDecoder(DecoderUnavailable("weights missing"))
    engine = ChatEngine(kb, FakeReader(), decoder=decoder)
    events = list(engine.stream("When was the Eiffel Tower built?", mode="generative"))
    result = events[-1].result
    assert result.mode == "extractive" and "1887 to 1889" in result.answer
    assert any(e.kind == "status" and "unavailable" in e.text for e in events)


def test_a_broken_log_does_not_break_answering(kb, log):
    log.close()
    log.db.conn.close()  # any write now fails inside record(), which must swallow it
    engine = ChatEngine(kb, FakeReader(), log=log, settings=EngineSettings(mode="extractive"))
    assert engine.ask("When was the Eiffel Tower built?", "c9").span.text == "1887 to 1889"


def test_settings_validation():
    with pytest.raises(InvalidQuery, match="answer mode must be one of"):
        EngineSettings(mode="poetic")
    with pytest.raises(InvalidQuery, match="between 1 and 50"):
        EngineSettings(k=0)


def test_eval_conversations_scores_first_turns_and_follow_ups(tmp_path, fake_embedder):
    import json

    from chatqa.evaluation import evaluate_conversations

    squad = {"version": "1.1", "data": [
        {"title": "Eiffel_Tower", "paragraphs": [{"context": EIFFEL, "qas": []}]},
        {"title": "Penguin", "paragraphs": [{"context": PENGUINS, "qas": []}]},
    ]}
    conversations = {"conversations": [
        {"id": "c1", "title": "Eiffel_Tower", "turns": [
            {"question": "When was the Eiffel Tower built?", "answers": ["1887 to 1889"], "depends_on_history": False},
            {"question": "Who designed it?", "standalone": "Who designed the Eiffel Tower?",
             "answers": ["Gustave Eiffel"], "depends_on_history": True},
        ]},
        {"id": "c2", "title": "Penguin", "turns": [
            {"question": "What do penguins eat?", "answers": ["krill"]},
        ]},
    ]}
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    (tmp_path / "conv.json").write_text(json.dumps(conversations))
    report = evaluate_conversations(tmp_path / "conv.json", tmp_path / "squad.json", reader=FakeReader(),
                                    embedder=fake_embedder)
    assert report["first_span_f1"] == 100.0 and report["followup_span_f1"] == 100.0
    assert report["followup_span_f1_no_history"] == 0.0  # "Who designed it?" alone: the fake reader abstains
    assert report["first_recall@5"] == 1.0 and report["followup_recall@5"] == 1.0
    assert report["abstention_rate"] == 0.0 and report["followup_abstained_no_history"] == 1.0
    assert (report["conversations"], report["first_turns"], report["followups"]) == (2, 2, 1)


def test_eval_conversations_rejects_a_malformed_file(tmp_path):
    from chatqa.evaluation import load_conversations

    (tmp_path / "bad.json").write_text('{"conversations": [{"id": "c1", "turns": [{"question": "x"}]}]}')
    with pytest.raises(Exception, match="not a conversation set"):
        load_conversations(tmp_path / "bad.json")


def test_the_models_tab_says_what_the_embedder_runs_on(kb):
    engine = ChatEngine(kb, FakeReader())
    assert dict(engine.describe_models())["Embedder (retrieval)"] == ["fake-bow"]  # not loaded: nothing to say yet
    kb.embedder.is_loaded, kb.embedder.runs_on = True, "ct2-int8"
    assert dict(engine.describe_models())["Embedder (retrieval)"] == ["fake-bow", "runs on: CTranslate2 int8"]
