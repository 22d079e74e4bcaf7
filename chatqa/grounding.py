"""How an answer relates to the text it came from: which words of it the passages support, whether it keeps the
reader's span, and which character-exact span of a passage to highlight as its evidence; and the fixed replies
(the extractive template, the abstention). Pure functions, no model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from knowledge.search import STOPWORDS

# -- the span-keeping rule ---------------------------------------------------------------------------------------
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_WORD = re.compile(r"[^\W\d_]+")
# sentence-initial words that are capitalised because they start a sentence, not because they are names
_STARTERS = frozenset(
    "the a an it its this that these those there they he she we you i in on at from by for with to of as after "
    "before during since between about around until yes no and but so however also both each some most many all "
    "here what when where who which why how if while because although then according based".split()
)


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u2013", "-").replace("\u2014", "-")
    return " ".join(text.casefold().split())


def _numbers(text: str) -> set[str]:
    return {m.group().replace(",", "") for m in _NUMBER.finditer(text)}


def _names(text: str) -> list[tuple[str, bool]]:
    """Capitalised words of ``text``, each with whether it starts a sentence."""
    names = []
    for m in _WORD.finditer(text):
        if m.group()[0].isupper():
            before = text[: m.start()].rstrip(" \t\"'“‘([*-")
            names.append((m.group(), not before or before[-1] in ".!?:\n"))
    return names


def unsupported_facts(reply: str, sources: str) -> list[str]:
    """Numbers and capitalised names in ``reply`` that ``sources`` does not hold (compared case-insensitively)."""
    words = {w.casefold() for w in _WORD.findall(sources)}
    extra = sorted(_numbers(reply) - _numbers(sources))
    for name, starts_sentence in _names(reply):
        low = name.casefold()
        if low not in words and low != "i" and not (starts_sentence and low in _STARTERS) and name not in extra:
            extra.append(name)
    return extra


def keeps_span(reply: str, span: str, evidence: str, question: str) -> bool:
    """Whether ``reply`` may be shown for the reader's ``span``: it keeps the span's facts and adds none.

    It keeps them when it contains the span (ignoring case and white space), or else every number and
    capitalised name of the span verbatim (a span with neither must appear itself). It adds none when each
    number and capitalised name of the reply is in the evidence, the question or the span.
    """
    if not reply.strip():
        return False
    if _norm(span) not in _norm(reply):
        span_names = {name for name, _ in _names(span)}
        if not (_numbers(span) or span_names):
            return False
        reply_words = set(_WORD.findall(reply))
        if not (_numbers(span) <= _numbers(reply) and span_names <= reply_words):
            return False
    return not unsupported_facts(reply, f"{evidence}\n{question}\n{span}")


# -- sentences and evidence -------------------------------------------------------------------------------------
# '. ', '! ', '? ' (and CJK full stops); blank lines; a line break before a list item, heading or table row
_SENTENCE_END = re.compile(r"[.!?。！？][\"'”’)\]]*(?=\s)|[。！？]|\n\s*\n|\n(?=\s*(?:[-*•#|>]|\d+[.)]\s))")


def _sentence_ends(passage: str) -> list[int]:
    """Offsets just past each sentence end ('. ', '! ', '? ' not after a common abbreviation; blank lines; line
    breaks that start a list item, heading or table row)."""
    ends = []
    for m in _SENTENCE_END.finditer(passage):
        word = re.search(r"(\S+)\.$", passage[: m.start() + 1])
        if m.group()[0] == "." and word and re.fullmatch(r"(?i)[A-Z]|mrs?|dr|st|jr|sr|vs|etc|e\.g|i\.e", word[1]):
            continue
        ends.append(m.end())
    return ends


def evidence_sentence(passage: str, start: int, end: int) -> str:
    """Return the sentence(s) of ``passage`` that hold the span ``passage[start:end]``, stripped."""
    if not 0 <= start <= end <= len(passage):
        raise ValueError(f"span [{start}, {end}) is outside the passage of {len(passage)} characters")
    ends = _sentence_ends(passage)
    first = max((e for e in ends if e <= start), default=0)
    last = min((e for e in ends if e >= max(end, start + 1)), default=len(passage))
    return passage[first:last].strip()




def sentence_cut(text: str, n: int) -> int | None:
    """The offset just past the end of ``text``'s ``n``-th finished sentence, or None while it has fewer."""
    ends = _sentence_ends(text)
    return ends[n - 1] if len(ends) >= n else None


def sentence_bounds(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, white space trimmed, empty ones left out."""
    bounds, start = [], 0
    for end in [*_sentence_ends(text), len(text)]:
        s, e = start, end
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            bounds.append((s, e))
        start = end
    return bounds or [(0, len(text))]


_TOKEN = re.compile(r"\w+", re.UNICODE)
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")


def content_words(text: str) -> set[str]:
    """The lower-cased words of ``text`` that carry content (no stop words, no citation marks like [2])."""
    return {w for w in (t.casefold() for t in _TOKEN.findall(_CITATION.sub(" ", text))) if w not in STOPWORDS}


def support(answer: str, sources: Sequence[str]) -> float:
    """The share of ``answer``'s content words found in ``sources`` (1.0 for an answer without any)."""
    words = content_words(answer)
    if not words:
        return 1.0
    found = set().union(*(content_words(s) for s in sources)) if sources else set()
    return len(words & found) / len(words)


def contains_span(answer: str, span: str) -> bool:
    """Whether ``answer`` holds ``span`` (ignoring case, white space and dash variants)."""
    return bool(span.strip()) and _norm(span) in _norm(answer)


def supporting_span(
    answer: str, passages: Sequence[str], reader_span: tuple[int, int, int] | None = None,
    prefer: Sequence[int] = (),
) -> tuple[int, int, int] | None:
    """The character-exact evidence of ``answer`` as ``(passage index, start, end)``: the reader's span when the
    answer contains it; else the sentence of a ``prefer``-red (cited) passage, or of any passage when none is cited
    or none shares a word, that holds most of the answer's content words, extended by a neighbouring sentence when
    that adds at least two more. None when no sentence shares a content word with the answer."""
    if reader_span is not None:
        i, s, e = reader_span
        if 0 <= i < len(passages) and contains_span(answer, passages[i][s:e]):
            return reader_span
    words = content_words(answer)
    if not words:
        return None
    best: tuple[int, int, int, set[str]] | None = None
    for pool in ([i for i in prefer if 0 <= i < len(passages)], range(len(passages))):
        for i in pool:
            for s, e in sentence_bounds(passages[i]):
                found = words & content_words(passages[i][s:e])
                if found and (best is None or len(found) > len(best[3])):
                    best = (i, s, e, found)
        if best is not None:
            break
    if best is None:
        return None
    i, s, e, found = best
    sentences = sentence_bounds(passages[i])
    at = sentences.index((s, e))
    for j in (at + 1, at - 1):
        if 0 <= j < len(sentences):
            more = (words & content_words(passages[i][slice(*sentences[j])])) - found
            if len(more) >= 2:
                s, e = min(s, sentences[j][0]), max(e, sentences[j][1])
                found |= more
    return i, s, e


# -- fixed replies ----------------------------------------------------------------------------------------------
def template_answer(question: str, span: str, evidence_sentence: str) -> str:
    """The answer when the decoder is off or its draft broke the rule: the span, then the sentence it came from.

    ``"1887 to 1889. (from: “The tower was built from 1887 to 1889.”)"``; the quote is left out when it adds
    nothing to the span, and shortened around the span when long. Always contains ``span`` verbatim.
    """
    if not span.strip():
        raise ValueError("template_answer needs the reader's span; use abstention_answer when there is none")
    answer = span.strip() if span.strip()[-1] in ".!?" else span.strip() + "."
    if len(_norm(span)) >= 0.8 * len(_norm(evidence_sentence)):
        return answer  # the quote would repeat the span
    return f"{answer} (from: “{_cut(evidence_sentence, 240, span)}”)"


def _cut(text: str, limit: int, around: str = "") -> str:
    """``text`` with white space collapsed, cut to ``limit`` characters around ``around`` (marked with …)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    at = max(text.casefold().find(" ".join(around.split()).casefold()), 0) if around else 0
    lo = max(min(at - limit // 3, len(text) - limit), 0)
    return ("…" if lo else "") + text[lo : lo + limit].strip() + ("…" if lo + limit < len(text) else "")


def abstention_answer(closest: Sequence[str]) -> str:
    """The reply when the reader abstains, naming up to three of the ``closest`` documents or passages."""
    names = list(dict.fromkeys(n.strip() for n in closest if n and n.strip()))[:3]
    text = "I couldn't find that in your documents."
    if not names:
        return text
    listed = ", ".join(f"“{n}”" for n in names[:-1]) + (" and " if len(names) > 1 else "") + f"“{names[-1]}”"
    return f"{text} The closest passages I found are in {listed}."
