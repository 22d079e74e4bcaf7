"""End to end with the real packaged models over the bundled knowledge base (marked slow; runs in CI)."""

from __future__ import annotations

import pytest

from chatqa.engine import EngineSettings, open_engine

pytestmark = pytest.mark.slow

# Nothing in the bundled user guide answers these.
NOT_IN_THE_KNOWLEDGE_BASE = [
    "What is the capital of Australia?",
    "Who wrote Pride and Prejudice?",
    "How many moons does Mars have?",
    "When did the Second World War end?",
    "What is the boiling point of water at sea level?",
    "Who painted the Mona Lisa?",
    "What is the speed of light?",
    "Which country won the 2018 football World Cup?",
    "How tall is Mount Everest?",
    "What is the chemical symbol for gold?",
    "Who was the first person to walk on the Moon?",
    "What is the population of Tokyo?",
    "How many bones are in the human body?",
    "Which planet is closest to the Sun?",
    "Who discovered penicillin?",
    "What language is spoken in Brazil?",
    "What year did the Berlin Wall fall?",
    "How long is the Nile river?",
    "Who composed the Moonlight Sonata?",
    "What is the largest ocean on Earth?",
    "What is the currency of Japan?",
    "Who invented the telephone?",
    "How many players are on a basketball team?",
    "What is photosynthesis?",
    "Which animal is the fastest on land?",
    "Who is the author of Don Quixote?",
    "What is the freezing point of mercury?",
    "Where are the pyramids of Giza?",
    "How many strings does a violin have?",
    "What does DNA stand for?",
    "Who was Napoleon's first wife?",
    "What is the tallest building in the world?",
]

ABOUT_THE_GUIDE = [
    ("Which file types can ChatQA read?", ["PDF", "DOCX", "HTML", "Markdown"]),
    ("How large can an uploaded file be?", ["50 MB"]),
    ("What is the default data directory?", ["chatqa-data"]),
    ("Where does the chat open in the browser?", ["127.0.0.1:7860"]),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = open_engine(tmp_path_factory.mktemp("data"), settings=EngineSettings(mode="extractive"))
    engine.warm_up(decoder=False)
    yield engine
    engine.log.close()
    engine.kb.close()


def test_questions_outside_the_knowledge_base_are_abstained_on(engine):
    results = [engine.ask(q) for q in NOT_IN_THE_KNOWLEDGE_BASE]
    rate = sum(r.abstained for r in results) / len(results)
    answered = [(r.question, r.span.text) for r in results if not r.abstained]
    assert rate >= 0.8, f"abstained on {rate:.0%}; answered: {answered}"
    assert all(r.answer.startswith("I couldn't find that") for r in results if r.abstained)


def test_questions_about_the_guide_are_answered_from_it(engine):
    for question, expected in ABOUT_THE_GUIDE:
        result = engine.ask(question)
        assert not result.abstained, question
        assert result.span.doc_name == "chatqa-user-guide.md"
        assert any(e.lower() in result.span.text.lower() for e in expected), (question, result.span.text)


def test_scripted_multi_turn_conversation_is_logged(engine):
    conversation = engine.log.new_conversation()
    first = engine.ask("Which file types can ChatQA read?", conversation)
    follow_up = engine.ask("What happens when they are password-protected?", conversation)
    assert "ChatQA" in follow_up.standalone_question or "file types" in follow_up.standalone_question
    assert not first.abstained
    logged = engine.log.history(conversation)
    assert [t.question for t in logged] == [first.question, follow_up.question]
    assert logged[1].standalone_question == follow_up.standalone_question
    assert all(len(t.passages) == min(5, engine.kb.store.count_chunks()) for t in logged)
