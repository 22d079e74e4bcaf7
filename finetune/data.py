"""Training examples for the reader: SQuAD-format positives and built "no answer" negatives.

No SQuAD 2.0 training file is available, so unanswerable examples are built the way the reader meets them:

- `removed`: the question's own paragraph with the sentence(s) holding the answer cut out. The passage stays on
  topic and close to the question, as SQuAD 2.0's unanswerable questions are.
- `neighbour`: the paragraph of the same article that shares the most content words with the question (what
  retrieval puts in front of the reader) when it does not contain the answer.

Context-side negatives alone teach "abstain when the answer sentence is missing", but SQuAD 2.0's unanswerable
questions keep the paragraph and change the question (Rajpurkar et al. 2018 sort them into entity swap 21%,
antonym 20%, mutual exclusion 15%, negation 9%, ...). So the question's own paragraph is also paired with:

- `swapped`: the question with one name or number that its paragraph mentions replaced by another name or number
  of the same article (of the same paragraph when it has one): "When did Tesla move to Paris?" → "When did Edison
  move to Paris?".
- `antonym`: the question with one word replaced by its opposite ("first" → "last", "largest" → "smallest").
- `negated`: the question with its auxiliary verb negated ("When did he leave?" → "When didn't he leave?").
- `replaced`: the question with one of its nouns that its paragraph shares replaced by a noun of the same article
  that the paragraph never uses: "How many people live in the city?" → "How many soldiers live in the city?"
  (SQuAD 2.0's swaps of common nouns and its questions about things the paragraph does not mention). A noun here
  is a lower-case word found between "the", "a", "its", ... and "of", "in", "was", "," ... somewhere in the
  article; both words end alike (-s or not) so the question keeps its grammar.

These are built by rule, so a few of them are still answerable.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatqa.metrics import normalize_answer
from chatqa.squad import load_squad
from knowledge.chunker import split_units
from knowledge.search import STOPWORDS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    question: str
    context: str
    answer: tuple[int, int] | None  # character span in context; None = no answer
    kind: str = "positive"  # "positive" or one of NEGATIVE_KINDS
    group: str = ""  # article title (or conversation id): examples of one group stay on one side of a split


def load_examples(paths: Iterable[str | Path]) -> list[TrainExample]:
    """Every question of the files, with its first answer (None for SQuAD 2.0 unanswerables)."""
    examples = []
    for path in paths:
        squad = load_squad(path)
        for ex in squad.examples():
            if ex.is_impossible or not ex.answers:
                examples.append(TrainExample(ex.question, ex.context, None, "removed", ex.title))
            else:
                a = ex.answers[0]
                examples.append(TrainExample(ex.question, ex.context, (a.start, a.end), "positive", ex.title))
        logger.info("%s: %d examples", Path(path).name, len(examples))
    return examples


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS and len(w) > 1}


def _contains(context: str, answer_text: str) -> bool:
    needle = normalize_answer(answer_text)
    return bool(needle) and needle in normalize_answer(context)


def removed_sentence_negative(example: TrainExample) -> TrainExample | None:
    """The context without the sentences that overlap the answer; None when too little is left or the answer
    text still occurs elsewhere."""
    if example.answer is None:
        return None
    start, end = example.answer
    units = split_units(example.context)
    kept = [(s, e) for s, e, _ in units if e <= start or s >= end]
    if len(kept) < 2 or len(kept) == len(units):
        return None
    context = " ".join(example.context[s:e] for s, e in kept)
    if _contains(context, example.context[start:end]):
        return None
    return TrainExample(example.question, context, None, "removed", example.group)


_PAIRS = """first last, earliest latest, early late, earlier later, before after, largest smallest, large small,
biggest smallest, big small, highest lowest, high low, higher lower, most least, more less, maximum minimum,
longest shortest, long short, oldest youngest, older younger, old new, best worst, better worse, increase decrease,
increased decreased, won lost, win lose, major minor, north south, east west, northern southern, eastern western,
above below, inside outside, public private, positive negative, success failure, successful unsuccessful, top bottom,
begin end, began ended, start end, started ended, rise fall, strongest weakest, strong weak, fastest slowest,
richest poorest, cheapest most expensive, heaviest lightest, deepest shallowest, wettest driest, hottest coldest,
warmest coldest, common rare, allowed forbidden, legal illegal, accepted rejected, open closed, male female,
ancient modern, upper lower, internal external, domestic foreign, majority minority, include exclude,
always never, same different, true false, able unable, possible impossible, agree disagree, support oppose"""


def _both_ways(pairs: str) -> dict[str, str]:
    """{"first": "last", "last": "first", ...}; a word in several pairs keeps its first opposite."""
    out: dict[str, str] = {}
    for a, b in (pair.split(maxsplit=1) for pair in pairs.replace("\n", " ").split(",")):
        out.setdefault(a, b)
        out.setdefault(b, a)
    return out


ANTONYMS = _both_ways(_PAIRS)

_AUXILIARIES = {"is": "is not", "was": "was not", "are": "are not", "were": "were not", "can": "cannot",
                "could": "could not", "will": "will not", "would": "would not", "should": "should not",
                "has": "has not", "have": "have not", "had": "had not", "did": "didn't", "does": "doesn't",
                "do": "don't", "must": "must not", "might": "might not"}
# A name: capitalised words (inner "of"/"the"/"de"/"and" allowed); a number: digits with , or . inside.
_NAME = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:(?:of|the|de|and|von|van)\s+)?[A-Z][\w'’-]*)*")
_NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")


def _mentions(text: str) -> dict[str, list[str]]:
    """The names and numbers of a text, by kind, without duplicates, in order."""
    names = [
        m.group() for m in _NAME.finditer(text)
        if m.group().lower() not in STOPWORDS
        # a single capitalised word opening a sentence is usually just a word ("Historians believe ...")
        and not (" " not in m.group() and re.search(r"(?:^|[.!?:;]\s+)$", text[: m.start()]))
    ]
    return {"name": list(dict.fromkeys(names)), "number": list(dict.fromkeys(_NUMBER.findall(text)))}


def _question_negative(example: TrainExample, question: str, kind: str) -> TrainExample | None:
    if question == example.question:
        return None
    return TrainExample(question, example.context, None, kind, example.group)


def swapped_negative(
    example: TrainExample, article: dict[str, list[str]], rng: random.Random
) -> TrainExample | None:
    """The question with a name or number of its paragraph replaced by another one of the same kind: one of the
    paragraph's own when it has another, else one of the `article`'s (its mentions by kind)."""
    if example.answer is None:
        return None
    answer = example.context[example.answer[0] : example.answer[1]]
    asked = _mentions(example.question)
    in_paragraph = _mentions(example.context)
    options = [
        (kind, m) for kind, found in asked.items() for m in found
        if m in example.context and m.split()[0] != example.question.split()[0]  # not the question word
    ]
    if not options:
        return None
    kind, old = rng.choice(options)

    def fits(new: str) -> bool:
        return new != old and new not in old and old not in new and new not in answer and answer not in new

    candidates = [m for m in in_paragraph[kind] if fits(m)] or [m for m in article.get(kind, []) if fits(m)]
    if not candidates:
        return None
    return _question_negative(example, example.question.replace(old, rng.choice(candidates), 1), "swapped")


def antonym_negative(example: TrainExample) -> TrainExample | None:
    """The question with its first lower-case word that has an opposite in ANTONYMS replaced by that opposite."""
    if example.answer is None:
        return None
    for m in re.finditer(r"\b[a-z]+\b", example.question):
        opposite = ANTONYMS.get(m.group())
        if opposite:
            question = example.question[: m.start()] + opposite + example.question[m.end() :]
            return _question_negative(example, question, "antonym")
    return None


def negated_negative(example: TrainExample) -> TrainExample | None:
    """The question with its first auxiliary verb negated; None when it has none or is already negative."""
    if example.answer is None or re.search(r"\b(?:not|never|no)\b|n't\b", example.question, re.IGNORECASE):
        return None
    m = re.search(r"\b(" + "|".join(_AUXILIARIES) + r")\b", example.question)
    if m is None:
        return None
    question = example.question[: m.start()] + _AUXILIARIES[m.group()] + example.question[m.end() :]
    return _question_negative(example, question, "negated")


# A noun, roughly: a lower-case word between a determiner and a preposition, conjunction, verb "to be" or punctuation.
_NOUN = re.compile(
    r"\b(?i:the|a|an|its|his|her|their|this|these|those|many|several|some|each)\s+([a-z]{4,})"
    r"(?=[,.;:)]|\s+(?:of|in|on|at|to|for|and|or|with|by|from|that|which|was|were|is|are)\b)"
)


def replaced_negative(example: TrainExample, nouns: Sequence[str], rng: random.Random) -> TrainExample | None:
    """The question with one of the article's `nouns` that it and its paragraph use (and the answer does not)
    replaced by another that the paragraph does not use, ending alike (-s or not)."""
    if example.answer is None:
        return None
    known = set(nouns)
    paragraph = set(re.findall(r"\b[a-z]+\b", example.context))
    answer = example.context[example.answer[0] : example.answer[1]].lower()
    options = [m for m in re.finditer(r"\b[a-z]+\b", example.question)
               if m.group() in known and m.group() in paragraph and m.group() not in answer]
    if not options:
        return None
    old = rng.choice(options)
    plural = old.group().endswith("s")
    candidates = [n for n in nouns if n not in paragraph and n.endswith("s") == plural]
    if not candidates:
        return None
    question = example.question[: old.start()] + rng.choice(candidates) + example.question[old.end() :]
    return _question_negative(example, question, "replaced")


def article_nouns(examples: Sequence[TrainExample]) -> dict[str, list[str]]:
    """Per group: the nouns (see _NOUN) of its paragraphs, without stop words or duplicates, in order."""
    out: dict[str, dict[str, None]] = {}
    for ex in examples:
        found = (n for n in _NOUN.findall(ex.context) if n not in STOPWORDS)
        out.setdefault(ex.group, {}).update(dict.fromkeys(found))
    return {g: list(nouns) for g, nouns in out.items()}


def article_mentions(examples: Sequence[TrainExample]) -> dict[str, dict[str, list[str]]]:
    """Per group: the names and numbers of all its paragraphs."""
    out: dict[str, dict[str, list[str]]] = {}
    seen: set[str] = set()
    for ex in examples:
        if ex.context in seen:
            continue
        seen.add(ex.context)
        group = out.setdefault(ex.group, {"name": [], "number": []})
        for kind, found in _mentions(ex.context).items():
            group[kind].extend(found)
    return {g: {k: list(dict.fromkeys(v)) for k, v in kinds.items()} for g, kinds in out.items()}


def neighbour_negatives(examples: Sequence[TrainExample], indices: Iterable[int]) -> dict[int, TrainExample]:
    """For the positive examples at `indices`: the most word-similar other paragraph of the same group, when it
    does not contain the answer."""
    paragraphs: dict[str, dict[str, set[str]]] = {}
    for ex in examples:
        group = paragraphs.setdefault(ex.group, {})
        if ex.context not in group:
            group[ex.context] = _content_words(ex.context)
    out = {}
    for i in indices:
        ex = examples[i]
        if ex.answer is None:
            continue
        q = _content_words(ex.question)
        best, best_overlap = None, 0
        for p, p_words in paragraphs[ex.group].items():
            overlap = len(q & p_words)
            if p != ex.context and overlap > best_overlap:
                best, best_overlap = p, overlap
        if best is not None and not _contains(best, ex.context[ex.answer[0] : ex.answer[1]]):
            out[i] = TrainExample(ex.question, best, None, "neighbour", ex.group)
    return out


NEGATIVE_KINDS = ("removed", "neighbour", "swapped", "antonym", "negated", "replaced")


def with_negatives(
    examples: Sequence[TrainExample], ratio: float, seed: int = 0, kinds: Sequence[str] = NEGATIVE_KINDS
) -> list[TrainExample]:
    """The examples plus up to `ratio` × positives built negatives, the positives chosen for them shared evenly
    among `kinds` (a kind that does not apply to a question builds nothing), in a seeded shuffle."""
    if ratio < 0:
        raise ValueError(f"negative ratio must be >= 0, got {ratio}")
    unknown = set(kinds) - set(NEGATIVE_KINDS)
    if unknown or not kinds:
        raise ValueError(f"negative kinds must be among {', '.join(NEGATIVE_KINDS)}, got {', '.join(kinds) or 'none'}")
    rng = random.Random(seed)
    positives = [i for i, ex in enumerate(examples) if ex.answer is not None]
    want = round(ratio * len(positives))
    chosen = rng.sample(positives, min(len(positives), want))
    share = {kind: chosen[k :: len(kinds)] for k, kind in enumerate(kinds)}
    mentions = article_mentions(examples) if "swapped" in share else {}
    nouns = article_nouns(examples) if "replaced" in share else {}
    built = {
        "removed": lambda i: removed_sentence_negative(examples[i]),
        "swapped": lambda i: swapped_negative(examples[i], mentions.get(examples[i].group, {}), rng),
        "antonym": lambda i: antonym_negative(examples[i]),
        "negated": lambda i: negated_negative(examples[i]),
        "replaced": lambda i: replaced_negative(examples[i], nouns.get(examples[i].group, []), rng),
    }
    negatives = []
    for kind, indices in share.items():
        if kind == "neighbour":
            negatives += list(neighbour_negatives(examples, indices).values())
        else:
            negatives += [n for n in map(built[kind], indices) if n is not None]
    counts = {kind: sum(n.kind == kind for n in negatives) for kind in kinds}
    logger.info("built %d negatives for %d positives (ratio %.2f): %s", len(negatives), len(positives), ratio,
                ", ".join(f"{k} {v}" for k, v in counts.items()))
    out = list(examples) + negatives
    rng.shuffle(out)
    return out
