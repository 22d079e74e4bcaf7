"""The decoder's prompt: passage windows, numbering, the reader's span, history, and citations."""

from __future__ import annotations

from dataclasses import dataclass

from chatqa.prompt import SYSTEM_PROMPT, PromptPassage, citations, prompt_messages, prompt_passages, window


@dataclass
class P:
    text: str
    doc_name: str = "guide.md"
    page: int | None = None


LONG = " ".join(f"Sentence {i} is about topic {i}." for i in range(40)) + " The timeout parameter stops waiting."


def test_a_short_passage_is_shown_whole():
    assert window("Short text.", 100, None) == (0, 11)


def test_the_window_is_centred_on_the_span_and_cut_at_sentences():
    focus = (LONG.index("Sentence 20"), LONG.index("Sentence 20") + 11)
    s, e = window(LONG, 120, focus)
    assert s <= focus[0] and focus[1] <= e and e - s <= 120
    assert LONG[s:e].startswith("Sentence") and LONG[s:e].endswith(".")


def test_without_a_span_the_window_holds_the_sentence_sharing_most_words_with_the_question():
    s, e = window(LONG, 80, None, "How do I stop waiting with a timeout?")
    assert "timeout parameter stops waiting" in LONG[s:e] and e - s <= 80


def test_one_long_sentence_is_cut_around_the_focus():
    text = "word " * 200 + "ANSWER " + "word " * 200
    at = text.index("ANSWER")
    s, e = window(text, 100, (at, at + 6))
    assert s <= at and at + 6 <= e and e - s == 100


def test_passages_are_numbered_best_first_and_the_span_passage_is_always_shown():
    passages = [P("First passage."), P("Second one.", "b.pdf", 3), P("Third."), P("Fourth holds the answer.")]
    shown = prompt_passages(passages, "q", (3, 17, 23), budgets=(100, 100))
    assert [(p.number, p.index) for p in shown] == [(1, 3), (2, 0)]
    assert shown[0].span == (17, 23) and shown[0].text[17:23] == "answer"
    assert prompt_passages(passages, "q", None, budgets=(100, 100, 100))[1].where == "b.pdf, page 3"


def test_messages_hold_rules_passages_on_one_line_recent_history_and_the_question():
    text = "Line one.\n\n## Heading\nLine two holds it."
    at = text.index("holds")
    shown = [PromptPassage(1, 0, "guide.md", text, 0, 40, (at, at + 5)),
             PromptPassage(2, 4, "b.pdf, page 3", "Other text.", 0, 11)]
    history = [("first?", "one"), ("second?", "two " * 100), ("third?", "three")]
    system, user = prompt_messages("What holds it?", shown, history)
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    text = user["content"]
    assert "[1] (guide.md) Line one. ## Heading Line two holds it.\n[2] (b.pdf, page 3) Other text." in text
    assert "first?" not in text and "second?" in text and "third?" in text and "**" not in text
    assert text.endswith("Question: What holds it?")
    marked = prompt_messages("What holds it?", shown, mark_span=True)
    assert "two **holds** it." in marked[1]["content"] and "marked **like this**" in marked[0]["content"]


def test_citations_map_numbers_to_passage_indices_and_ignore_unknown_ones():
    shown = [PromptPassage(1, 3, "a", "x", 0, 1), PromptPassage(2, 0, "b", "y", 0, 1)]
    assert citations("Use it [2]. Also [1, 2] and [7].", shown) == [0, 3]
    assert citations("No citation.", shown) == []
