"""History-aware questions: turn a follow-up ("When was it built?") into a standalone question for retrieval and
reading ("When was the Eiffel Tower built?"), keeping the person's own words for display.

With a :class:`~chatqa.models.rewriter.Rewriter` (a model fine-tuned on CANARD's human rewrites), follow-ups are
rewritten by it; first turns never call it. When it is missing or fails, the rules below rewrite instead (a warning
is logged), and when its rewrite keeps a pronoun of the question that the rules can resolve, the rules' rewrite is
used (:func:`choose_rewrite`). The rules are cheap: pronouns and demonstratives are replaced by what they most likely point to,
and elliptical follow-ups ("And the second one?", "Why?") borrow the previous question.

- "it"/"its": the thing a what/which question just asked for ("What space station…?" "Skylab" → "Where was it
  assembled?" is about Skylab), else the conversation's topic (the latest named subject of its questions);
- "he"/"his"/"him": the answer to a who-question, else the topic; "they"/"them" also a named answer to a
  what/which question; after a what/which question that asked for several things, "they" is its short answer
  ("Which two rivers…?" "the Rhine and the Main") or, for a long one, the things asked for ("Which file types can
  ChatQA read?" → "What happens when they are password-protected?" is about "the file types"); a repeated possessive ("his father" after "Who was Genghis Khan's father?") keeps its owner;
- "this"/"that": a named answer just given, else the topic ("that" as a determiner or conjunction stays).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from knowledge.errors import ChatQAError

logger = logging.getLogger(__name__)

WH_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "in", "on", "at", "during", "by",
            "from", "for", "to", "of", "with", "after", "before", "since", "about", "tell", "me", "describe", "explain",
            "name", "give", "list", "according"}
AUXILIARIES = {"is", "are", "was", "were", "do", "does", "did", "has", "have", "had", "can", "could", "will",
               "would", "should", "may", "might", "must", "shall", "be", "been", "being", "many", "much", "long",
               "old", "far", "year", "years", "type", "kind", "percentage", "number", "the", "a", "an"}
# the people in the chat: "How do I unpack it?" is about unpacking, and "I" is never the topic (capitalised, it
# looked like a name: "Will it overwrite…?" became "Will I overwrite…?")
SPEAKERS = {"i", "we", "you"}
DO = {"do", "does", "did"}  # after do-support, "that" is the subject: "What does that stand for?"
PERSONAL = {"he": "", "him": "", "she": "", "they": "", "them": "", "his": "'s", "her": "'s", "their": "'s",
            "hers": "'s", "theirs": "'s"}
NEUTER = {"it": "", "its": "'s", "this": "", "that": "", "these": "", "those": ""}
ELLIPSIS_STARTS = ("and ", "what about ", "how about ", "also ", "and what about ")
PREPOSITIONS = {"in", "of", "at", "on", "from", "to", "for", "by", "with", "became", "into", "near", "during", "under"}
_SWAP = re.compile(r"^(?:and\s+)?(?:what|how)\s+about\s+(.+?)\s*\??$", re.IGNORECASE)
_TOKEN = re.compile(r"\.?[A-Za-z0-9][\w'’.-]*|[^\w\s]")  # ".bz2" is one word
_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:(?:of|the|de|von|van|and|&)\s+)?(?:[A-Z][\w'’.-]*|\d[\w-]*))*")


@dataclass(frozen=True)
class Exchange:
    """One earlier turn as the dialog manager sees it."""

    question: str  # the standalone question of that turn
    answer: str  # the span the reader found ("" when it abstained)


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text)


def named_subject(question: str) -> str | None:
    """The question's longest name-like phrase (see subject_of), or None when it names nothing."""
    subject = subject_of(question)
    return subject if subject.removeprefix("the ")[:1].isupper() else None


def subject_of(question: str) -> str:
    """The likely subject of a question: its longest name-like phrase, else the words after the wh-word/auxiliaries.

    "When was the Eiffel Tower built?" → "the Eiffel Tower"; "What do penguins eat?" → "penguins eat".
    """
    body = question.strip().rstrip("?.! ")
    body = re.sub(r"^[A-Z][a-z]+ly,\s*", "", body)  # "Historically, what was…": the adverb is not a name
    names = [m.group(0) for m in _NAME.finditer(body) if m.start() > 0 or m.group(0).lower() not in WH_WORDS]
    names = [n for n in names if (n.split()[0].lower() not in WH_WORDS | AUXILIARIES or len(n.split()) > 1)
             and _strip_leading_function_words(n).lower() not in SPEAKERS]  # "Can I…?": not a name
    if names:
        best = re.sub(r"['’]s$", "", max(names, key=lambda n: (len(n.split()), len(n))))
        start = body.find(best)
        article = re.search(r"\b(the|The)\s+$", body[:start])
        return ("the " if article else "") + _strip_leading_function_words(best)
    words = body.split()
    i = 0
    while i < len(words) and words[i].lower() in WH_WORDS | AUXILIARIES | SPEAKERS:
        i += 1
    return " ".join(words[i : i + 4])


def _strip_leading_function_words(phrase: str) -> str:
    words = phrase.split()
    while len(words) > 1 and words[0].lower() in WH_WORDS | AUXILIARIES | SPEAKERS:
        words = words[1:]
    return " ".join(words)


def asks_for_a_thing(question: str) -> bool:
    """True when a what/which question asks for the thing it is about: "What space station supported three manned
    missions?", "What is the highest court in the United Methodist denomination?" (its only name modifies a common
    noun inside a prepositional phrase). Its answer is then what a following "it" points to. False when the question
    names its subject: "What is the Eiffel Tower made of?", "Which NFL team represented the AFC at Super Bowl 50?"."""
    body = re.sub(r"^[A-Z][a-z]+ly,\s*", "", question.strip()).rstrip("?.! ")
    if not body.lower().startswith(("what ", "which ")):
        return False
    named = named_subject(body)
    if named is None:
        return True
    name = named.removeprefix("the ")
    at = body.find(name)
    before = body[:at].lower().split()
    while before and before[-1] in ("the", "a", "an"):
        before.pop()
    after = body[at + len(name) :].split()
    return bool(before) and before[-1] in PREPOSITIONS and bool(after) and after[0].isalpha() and after[0].islower()


def asks_for_several(question: str) -> str | None:
    """The plural noun phrase a what/which question asks for ("file types" in "Which file types can ChatQA read?",
    "two rivers" in "What two rivers meet there?"), or None when it asks for something else."""
    words = question.strip().lower().split()
    if len(words) < 3 or words[0] not in ("what", "which"):
        return None
    for i, word in enumerate(words[1:4], start=1):
        if word in AUXILIARIES or word == "of" or not word.isalnum():
            return None
        if word.endswith("s") and not word.endswith(("ss", "us", "is")):
            singular_verb = i + 1 < len(words) and words[i + 1] in ("is", "was", "has", "does")  # "What series is…"
            return None if singular_verb else " ".join(words[1 : i + 1])
    return None


def _is_thing(answer: str) -> bool:
    """A short answer that names a thing (not a number, date or clause) and can stand where "it" stood."""
    words = answer.split()
    return 0 < len(words) <= 5 and not any(c.isdigit() for c in answer) and not answer.rstrip().endswith(",")


def _owner_of(noun: str, question: str) -> str | None:
    """The name that owned ``noun`` in ``question`` ("Genghis Khan" for "father" in "Who was Genghis Khan's
    father?"): a possessive that repeats it ("his father") points to the same owner."""
    if not noun.isalpha():
        return None
    match = re.search(rf"({_NAME.pattern})['’]s\s+{re.escape(noun)}\b", question)
    return match.group(1) if match else None


def _is_name(text: str) -> bool:
    words = text.split()
    return 0 < len(words) <= 6 and all(w[:1].isupper() or w.lower() in {"of", "the", "de", "von", "van"} for w in words)


UNRESOLVED = frozenset({"it", "its", "they", "them", "their", "he", "him", "his", "she", "her"})


def choose_rewrite(question: str, model_rewrite: str, rules_rewrite) -> str:
    """The model's rewrite, unless it is empty or kept a pronoun of the question that the rules can resolve
    ("What happens when they are password-protected?" returned as asked): then the rules' rewrite.
    ``rules_rewrite`` is called only when needed (a callable returning the rules' rewrite)."""
    model_rewrite = " ".join(model_rewrite.split())
    if not model_rewrite:
        return rules_rewrite()
    kept = {w.lower() for w in _words(question)} & {w.lower() for w in _words(model_rewrite)} & UNRESOLVED
    if kept:
        rules = rules_rewrite()
        if rules != " ".join(question.split()):
            return rules
    return model_rewrite


class QuestionRewriter(Protocol):
    """What the dialog manager needs of a rewriter model (:class:`chatqa.models.rewriter.Rewriter`)."""

    def rewrite(self, question: str, history: Sequence[str]) -> str: ...


class DialogManager:
    """Rewrites follow-up questions with the help of the conversation so far: by ``rewriter`` when given, by the rules
    when not (or when it fails)."""

    def __init__(self, max_history: int = 3, rewriter: QuestionRewriter | None = None):
        if max_history < 1:
            raise ValueError(f"max_history must be at least 1, got {max_history}")
        self.max_history = max_history
        self.rewriter = rewriter
        self._warned = False

    def condense(self, question: str, history: Sequence[Exchange]) -> str:
        """The standalone form of `question`; unchanged when there is no history or nothing to resolve."""
        question = " ".join(question.split())
        if not history or not question:
            return question  # a first turn: nothing to resolve, and no model call
        if self.rewriter is not None:
            try:
                rewritten = " ".join(self.rewriter.rewrite(question, [e.question for e in history]).split())
            except (ChatQAError, RuntimeError, OSError, ValueError) as e:
                if not self._warned:  # once per dialog manager: the failure repeats on every follow-up
                    logger.warning("the question rewriter failed (%s); the rules rewrite follow-ups instead", e)
                    self._warned = True
            else:
                return choose_rewrite(question, rewritten, lambda: self.condense_by_rules(question, history))
        return self.condense_by_rules(question, history)

    def condense_by_rules(self, question: str, history: Sequence[Exchange]) -> str:
        """The rule-based rewrite (the fallback, and the baseline `chatqa eval rewrites` compares with)."""
        question = " ".join(question.split())
        if not history or not question:
            return question
        previous = history[-1]
        lower = question.lower()
        words = _words(question)
        lowered = [w.lower() for w in words]
        pronouns = [w for w in lowered if w in PERSONAL or w in NEUTER]
        topic = self.topic(history)
        if pronouns:
            return self._replace_pronouns(words, previous, topic)
        names_something = any(w[:1].isupper() or w[:1].isdigit() for w in words[1:])
        if lower.startswith(ELLIPSIS_STARTS) or (len(lowered) <= 4 and not names_something):
            return self._fill_ellipsis(question, previous)
        return question

    def topic(self, history: Sequence[Exchange]) -> str:
        """What the conversation is about: the latest named subject of its questions, else the first one's subject.

        A rewritten follow-up ("How many membranes does apicoplast have?") names no new subject, so the topic
        carries over instead of being re-read from the rewrite.
        """
        for exchange in reversed(history[-self.max_history :]):
            named = named_subject(exchange.question)
            if named:
                return named
        return subject_of(history[0].question)

    def _replace_pronouns(self, words: list[str], previous: Exchange, topic: str) -> str:
        asked = previous.question.strip().lower()
        asked_who = asked.startswith(("who", "whom", "whose"))
        # "he", "his": the answer to a who-question; "they", "them": also a named answer to a which/what question
        # ("Which NFL team…?" "Denver Broncos" "Who coached them?"), never a place or a date
        person = previous.answer if previous.answer and asked_who else None
        group = previous.answer if previous.answer and (
            asked_who or (_is_name(previous.answer) and asked.startswith(("which", "what")))
        ) else None
        several = asks_for_several(previous.question)
        if several and previous.answer and not group:
            group = previous.answer if len(previous.answer.split()) <= 6 else f"the {several}"
        thing = previous.answer if _is_thing(previous.answer) and asks_for_a_thing(previous.question) else None
        out, replaced = [], False
        for i, word in enumerate(words):
            lower = word.lower()
            target = None
            if lower in PERSONAL and not replaced:
                following = words[i + 1] if i + 1 < len(words) else ""
                owner = _owner_of(following, previous.question) if PERSONAL[lower] else None
                if owner:
                    target = owner + "'s"  # "his father" after "Who was Genghis Khan's father?"
                else:
                    target = ((group if lower in ("they", "them", "their", "theirs") else person) or topic) \
                        + PERSONAL[lower]
            elif lower in NEUTER and not replaced:
                following = words[i + 1].lower() if i + 1 < len(words) else ""
                preceding = words[i - 1].lower() if i else ""
                demonstrative = lower in ("this", "that", "these", "those")
                # "that" as a conjunction or "this year" as a determiner is left alone, but after an auxiliary
                # ("What does that stand for?") it is the subject
                if demonstrative and following.isalpha() and following not in AUXILIARIES and preceding not in DO:
                    target = None
                elif demonstrative and previous.answer and _is_name(previous.answer):
                    target = previous.answer  # "that" points at the answer just given
                elif not demonstrative and thing is not None:
                    target = thing + NEUTER[lower]  # "it" is the thing the previous question asked for
                else:
                    target = topic + NEUTER[lower]
            if target:
                out.append(target)
                replaced = True
            else:
                out.append(word)
        text = " ".join(out)
        return re.sub(r"\s+([?.!,;:'’])(?=\s|$)", r"\1", text).replace(" 's", "'s")

    def _fill_ellipsis(self, question: str, previous: Exchange) -> str:
        """'What about Good Morning America?' after 'When did General Hospital begin airing?' → 'When did Good
        Morning America begin airing?' (the new subject takes the named subject's place). Otherwise the previous
        question rides along in brackets: 'And the 1990s?' → 'And the 1990s? (Who won in the 1980s?)'.
        """
        swap = _SWAP.match(question.strip())
        subject = subject_of(previous.question)
        named = subject.removeprefix("the ")
        if swap and named and named[:1].isupper() and named in previous.question:
            new = swap.group(1).strip().rstrip("?").strip()
            return previous.question.strip().replace(named, new.removeprefix("the ") if subject != named else new, 1)
        return f"{question.rstrip()} ({previous.question.strip()})"

    def search_query(self, question: str, standalone: str, history: Sequence[Exchange]) -> str:
        """What to search for: the standalone question, plus the previous question when this one leaned on it
        (it was rewritten, or it names no subject of its own: "When was the deal called off?").

        The reader gets the standalone question alone; retrieval also gets the words of the turn it depends on, which
        keeps it in the same document and section when the rewrite could not name everything.
        """
        if not history:
            return standalone
        rewritten = standalone != " ".join(question.split())
        if not rewritten and named_subject(question):
            return standalone  # names its own subject: a new topic, or a full question
        return f"{standalone} {history[-1].question}"
