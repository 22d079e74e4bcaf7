"""Pure text checks around an answer: span keeping, support, evidence spans, sentences, fixed replies."""

from __future__ import annotations

import pytest

from chatqa.grounding import (
    abstention_answer,
    content_words,
    evidence_sentence,
    keeps_span,
    sentence_bounds,
    sentence_cut,
    support,
    supporting_span,
    template_answer,
)

QUESTION = "When was the Eiffel Tower built?"
SPAN = "1887 to 1889"
EVIDENCE = "The Eiffel Tower was built from 1887 to 1889 on the Champ de Mars in Paris."
PASSAGE = (
    "Gustave Eiffel's company designed it. " + EVIDENCE + " It is 330 m tall. Dr. Smith visited it in 1925."
)


# -- the span-keeping rule, without a model --------------------------------------------------------------------
def test_keeps_span_accepts_a_reply_containing_the_span_in_any_case_and_spacing():
    assert keeps_span("The Eiffel Tower was built from 1887   TO 1889.", SPAN, EVIDENCE, QUESTION)
    assert keeps_span("It was built from 1887 to 1889, in Paris.", SPAN, EVIDENCE, QUESTION)


def test_keeps_span_accepts_the_spans_numbers_and_names_in_other_words():
    assert keeps_span("It was built between 1887 and 1889.", SPAN, EVIDENCE, QUESTION)
    assert keeps_span("It stands on the Champ de Mars.", "the Champ de Mars in Paris", EVIDENCE, QUESTION) is False
    assert keeps_span("It stands in Paris, on the Champ de Mars.", "the Champ de Mars in Paris", EVIDENCE, QUESTION)


def test_keeps_span_rejects_a_reply_that_drops_the_span():
    assert not keeps_span("The Eiffel Tower was built in Paris.", SPAN, EVIDENCE, QUESTION)
    assert not keeps_span("It was finished in 1889.", SPAN, EVIDENCE, QUESTION)  # 1887 dropped
    assert not keeps_span("It is made of iron.", "wrought iron", "It is made of wrought iron.", "What is it made of?")
    assert not keeps_span("   ", SPAN, EVIDENCE, QUESTION)


def test_keeps_span_rejects_a_reply_adding_a_year_or_name_not_in_evidence_or_question():
    assert not keeps_span("It was built from 1887 to 1889 and opened in 1890.", SPAN, EVIDENCE, QUESTION)
    assert not keeps_span("Napoleon built it from 1887 to 1889.", SPAN, EVIDENCE, QUESTION)
    assert not keeps_span("It was built from 1887 to 1889 by Gustave Eiffel.", SPAN, EVIDENCE, QUESTION)
    # a name from the question, or an ordinary word opening a sentence, is not an addition
    assert keeps_span("The tower was built from 1887 to 1889. It is in Paris.", SPAN, EVIDENCE, QUESTION)
    assert keeps_span("Yes, the Eiffel Tower was built from 1887 to 1889.", SPAN, EVIDENCE, "Was it built then?")


def test_evidence_sentence_picks_the_sentence_holding_the_span():
    start = PASSAGE.index(SPAN)
    assert evidence_sentence(PASSAGE, start, start + len(SPAN)) == EVIDENCE
    start = PASSAGE.index("1925")
    assert evidence_sentence(PASSAGE, start, start + 4) == "Dr. Smith visited it in 1925."  # "Dr." is no end
    start = PASSAGE.index("330 m")
    assert evidence_sentence(PASSAGE, start, start + 5) == "It is 330 m tall."
    assert evidence_sentence("no full stop here", 3, 7) == "no full stop here"
    with pytest.raises(ValueError, match="outside the passage"):
        evidence_sentence(PASSAGE, 5, len(PASSAGE) + 1)


def test_template_answer_contains_the_span_and_its_sentence():
    answer = template_answer(QUESTION, SPAN, EVIDENCE)
    assert answer == f"{SPAN}. (from: “{EVIDENCE}”)"
    assert template_answer("Who?", "Gustave Eiffel's company designed it.", "Gustave Eiffel's company designed it.") == (
        "Gustave Eiffel's company designed it."
    )
    long = "Word " * 100 + EVIDENCE + " More" * 100
    answer = template_answer(QUESTION, SPAN, long)
    assert SPAN in answer and answer.count("…") == 2 and len(answer) < 300


def test_abstention_answer_names_up_to_three_closest_documents():
    text = abstention_answer(["a.pdf", "b.txt", "a.pdf", "c.md", "d.docx"])
    assert text.startswith("I couldn't find that in your documents.")
    assert "“a.pdf”, “b.txt” and “c.md”" in text and "d.docx" not in text
    assert abstention_answer([]) == "I couldn't find that in your documents."


# -- sentences, support and evidence ------------------------------------------------------------------------------
def test_sentences_end_at_stops_blank_lines_and_list_items():
    text = "Use the timeout parameter. Requests waits.\n- one item\n- two\n\nNew part. 第一句。第二句"
    assert [text[s:e] for s, e in sentence_bounds(text)] == [
        "Use the timeout parameter.", "Requests waits.", "- one item", "- two", "New part.", "第一句。", "第二句"]
    assert sentence_cut("One. Two. Three. Four", 3) == len("One. Two. Three.")
    assert sentence_cut("One. Two. Three.", 3) is None  # the third is not known to be finished yet


def test_content_words_drop_stop_words_and_citation_marks():
    assert content_words("Use the `timeout` parameter [1].") == {"use", "timeout", "parameter"}


def test_support_is_the_share_of_the_answers_words_found_in_the_sources():
    assert support("Use the timeout parameter [2].", ["Pass timeout= to stop waiting.", "a parameter"]) == 2 / 3
    assert support("The president is Jean Dupont.", ["The tower is in Paris."]) == pytest.approx(0.0)
    assert support("It is so.", []) == 1.0  # nothing to support


def test_evidence_is_the_readers_span_when_the_answer_holds_it():
    passages = ["Nothing here.", PASSAGE]
    start = PASSAGE.index(SPAN)
    span = (1, start, start + len(SPAN))
    assert supporting_span("It was built from 1887 TO 1889 [2].", passages, span) == span


def test_evidence_is_the_best_supporting_sentence_of_the_cited_passage_otherwise():
    guide = ("ChatQA reads PDF, Word (DOCX), HTML, Markdown and plain-text files. Upload them in the Knowledge tab. "
             "Scanned PDFs cannot be read.")
    other = "Markdown files and plain-text notes are kept in the data directory."
    answer = "You can upload PDF, Word (DOCX), HTML, Markdown and plain-text files [1]."
    wrong_span = (0, guide.index("Knowledge"), guide.index("Knowledge") + 13)
    i, s, e = supporting_span(answer, [guide, other], wrong_span, prefer=[0])
    assert i == 0 and guide[s:e] == "ChatQA reads PDF, Word (DOCX), HTML, Markdown and plain-text files."
    # cited passage preferred even when another passage shares words
    assert supporting_span("Markdown and plain-text files.", [guide, other], None, prefer=[0])[0] == 0
    assert supporting_span("Markdown and plain-text files.", [guide, other], None, prefer=[1])[0] == 1
    assert supporting_span("Nothing matches at all.", [guide], None) is None


def test_evidence_takes_a_neighbouring_sentence_that_adds_words():
    passage = "Set the timeout parameter. It stops waiting after the given seconds. Unrelated words follow."
    i, s, e = supporting_span("The timeout parameter stops waiting after the given seconds.", [passage])
    assert passage[s:e] == "Set the timeout parameter. It stops waiting after the given seconds."
