from __future__ import annotations

import pytest

from chatqa.dialog import DialogManager, Exchange, asks_for_several, subject_of

EIFFEL = [Exchange("When was the Eiffel Tower built?", "1887 to 1889")]
DESIGNER = [Exchange("Who designed the Eiffel Tower?", "Gustave Eiffel")]
SUPER_BOWL = [Exchange("Which NFL team represented the AFC at Super Bowl 50?", "Denver Broncos")]


@pytest.mark.parametrize(
    "question, subject",
    [
        ("When was the Eiffel Tower built?", "the Eiffel Tower"),
        ("Who was the Duke of Normandy in 1066?", "the Duke of Normandy"),
        ("Which NFL team represented the AFC at Super Bowl 50?", "Super Bowl 50"),
        ("In what country is Normandy located?", "Normandy"),
        ("What do penguins eat?", "penguins eat"),
        ("How do I decompress a file with bzip2?", "decompress a file with"),  # "I" is not a name
        ("Can I keep the original file?", "keep the original file"),
    ],
)
def test_subject_of(question, subject):
    assert subject_of(question) == subject


@pytest.mark.parametrize(
    "history, follow_up, standalone",
    [
        (EIFFEL, "Who designed it?", "Who designed the Eiffel Tower?"),
        ([Exchange("How do I add a table of contents?", "[TOC]")], "Can I switch the search for it off?",
         "Can I switch the search for add a table of off?"),  # clumsy, but never "for I": the asker is not the topic
        ([Exchange("How do I unpack a .tar file?", "tar -xf")], "Will it keep the .tar file?",
         "Will unpack a .tar file keep the .tar file?"),  # ".tar" keeps its space: it is not end punctuation
        (EIFFEL, "What is its height?", "What is the Eiffel Tower's height?"),
        (DESIGNER, "Where was he born?", "Where was Gustave Eiffel born?"),  # a "who" question: he = its answer
        (DESIGNER, "What was his nationality?", "What was Gustave Eiffel's nationality?"),
        (SUPER_BOWL, "Who coached them?", "Who coached Denver Broncos?"),  # the answer is a name
        (SUPER_BOWL, "Where was it played?", "Where was Super Bowl 50 played?"),
        # after a question that asked for several things, "they" is its short answer or the things asked for
        ([Exchange("What two rivers meet at Koblenz?", "the Rhine and the Moselle")], "Where do they rise?",
         "Where do the Rhine and the Moselle rise?"),
        ([Exchange("Which file types can ChatQA read?", "PDF, Word (DOCX), HTML, Markdown and plain-text files")],
         "What happens when they are password-protected?", "What happens when the file types are password-protected?"),
        ([Exchange("What is the Eiffel Tower made of?", "wrought iron")], "Who built them?",
         "Who built the Eiffel Tower?"),  # asked for one thing: "them" stays the topic
        (EIFFEL, "And the Statue of Liberty?", "And the Statue of Liberty? (When was the Eiffel Tower built?)"),
        (EIFFEL, "What about the Statue of Liberty?", "When was the Statue of Liberty built?"),
        ([Exchange("When did General Hospital begin airing?", "1963")], "What about Good Morning America?",
         "When did Good Morning America begin airing?"),
        (EIFFEL, "Why?", "Why? (When was the Eiffel Tower built?)"),
        ([Exchange("What is the Doctor's time machine called?", "TARDIS")], "What does that stand for?",
         "What does TARDIS stand for?"),  # "that" after do-support, pointing at the answer just given
        # "it" is the thing a what/which question asked for, unless that question named its own subject
        ([Exchange("What space station supported three manned missions?", "Skylab")], "Where was it assembled?",
         "Where was Skylab assembled?"),
        ([Exchange("What is the highest court in the United Methodist denomination?", "Judicial Council")],
         "How many members make it up?", "How many members make Judicial Council up?"),
        ([Exchange("What is the Eiffel Tower made of?", "wrought iron")], "When was it built?",
         "When was the Eiffel Tower built?"),
        ([Exchange("What share of teachers felt stressed?", "42%")], "Why was it so high?",
         "Why was share of teachers felt so high?"),  # a number is not a thing "it" can be: the topic words stay
        # "he" is the answer of a who-question only: not a place, a nationality or a book
        ([Exchange("Where was Martin Luther born?", "Eisleben, Saxony")], "What did his father do?",
         "What did Martin Luther's father do?"),
        ([Exchange("What nationality was Konstantin Mereschkowski?", "Russian")], "What was his career?",
         "What was Konstantin Mereschkowski's career?"),
        # a repeated possessive keeps its owner
        ([Exchange("Who was Genghis Khan's father?", "Yesügei")], "Who might his father have named him after?",
         "Who might Genghis Khan's father have named him after?"),
        (
            [Exchange("Historically, what was the usual type of school discipline?", "corporal punishment")],
            "Where is it still allowed?", "Where is corporal punishment still allowed?",
        ),
    ],
)
def test_follow_ups_become_standalone(history, follow_up, standalone):
    assert DialogManager().condense(follow_up, history) == standalone


@pytest.mark.parametrize(
    "question, several",
    [
        ("Which file types can ChatQA read?", "file types"),
        ("What two rivers meet at Koblenz?", "two rivers"),
        ("What series is the longest running program in ABC history?", None),  # a singular verb
        ("Which of his sculptures was not donated by him?", None),  # one of several
        ("What is the Eiffel Tower made of?", None),
        ("Who designed the Eiffel Tower?", None),
    ],
)
def test_asks_for_several(question, several):
    assert asks_for_several(question) == several


def test_questions_that_need_no_history_are_unchanged():
    dm = DialogManager()
    assert dm.condense("Who designed the Statue of Liberty?", EIFFEL) == "Who designed the Statue of Liberty?"
    assert dm.condense("In which year was this book written?", EIFFEL) == "In which year was this book written?"
    assert dm.condense("Who designed it?", []) == "Who designed it?"
    assert dm.condense("Who is Tesla?", EIFFEL) == "Who is Tesla?"  # short, but names its subject
    assert dm.condense("  spaced   out  ", []) == "spaced out"
    assert dm.condense("How tall?", EIFFEL) == "How tall? (When was the Eiffel Tower built?)"


def test_max_history_validation():
    with pytest.raises(ValueError, match="max_history must be at least 1"):
        DialogManager(max_history=0)


def test_the_topic_carries_over_rewritten_turns():
    dm = DialogManager()
    history = [Exchange("What is an apicoplast?", "a plastid"),
               Exchange("How many membranes does an apicoplast have?", "four")]  # a rewrite: names nothing new
    assert dm.condense("What does it synthesize?", history) == "What does apicoplast synthesize?"
    assert dm.topic([Exchange("What does TARDIS's outside resemble?", "a police box")]) == "TARDIS"


def test_search_query_adds_the_previous_question_when_the_follow_up_leans_on_it():
    dm = DialogManager()
    history = [Exchange("When did ITT propose a merger with ABC?", "1965")]
    # rewritten, or naming no subject of its own: retrieval also gets the previous question's words
    assert dm.search_query("Why?", "Why? (x)", history) == "Why? (x) When did ITT propose a merger with ABC?"
    assert dm.search_query("When was the deal called off?", "When was the deal called off?", history).endswith(
        "When did ITT propose a merger with ABC?"
    )
    # a question that names its own subject stands alone
    assert dm.search_query("Who founded CBS?", "Who founded CBS?", history) == "Who founded CBS?"
    assert dm.search_query("Who founded CBS?", "Who founded CBS?", []) == "Who founded CBS?"
