"""HTML and table views of ChatQA's data for the browser app. Pure functions, no Gradio.

Every piece of document text, question and answer goes through :func:`html.escape`: a document that contains
``<script>`` shows as text. The only markup is this module's own. Text for a Markdown component goes through
:func:`md_text`, messages for the Chatbot (which renders its text as HTML) through :func:`chat_messages`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape, unescape
from typing import Protocol

from chatqa.turn import source_numbers
from knowledge.store import DocumentInfo

CSS = """
.chatqa-sources { display: flex; flex-direction: column; gap: 0.6em; }
.chatqa-source { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 0.6em 0.8em; }
.chatqa-source.has-answer { border-color: var(--color-accent); box-shadow: 0 0 0 1px var(--color-accent); }
.chatqa-source header { display: flex; justify-content: space-between; gap: 1em; font-size: 0.9em;
  margin-bottom: 0.3em; }
.chatqa-source header .where { font-weight: 600; overflow-wrap: anywhere; }
.chatqa-source header .score { opacity: 0.7; white-space: nowrap; }
.chatqa-source p { margin: 0; white-space: pre-wrap; font-size: 0.92em; line-height: 1.45; }
.chatqa-source mark { background: #ffe066; color: #111; padding: 0 2px; border-radius: 3px; }
.chatqa-muted { opacity: 0.7; font-size: 0.92em; }
.chatqa-error { color: var(--error-text-color, #b91c1c); }
"""


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\](){}!<>&~|$#])")


def md_text(text: object) -> str:
    """``text`` for a Markdown component, shown as written: the characters that would make links, images, HTML,
    emphasis, code or LaTeX are backslash-escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


_MARKUP = re.compile(r"<(?=[A-Za-z/!?])|&")


def chat_text(text: str) -> str:
    """``text`` as HTML that shows exactly ``text``, changed as little as can be: the Chatbot's copy button copies
    the message as sent, so only what HTML would read as markup is escaped: ``<`` opening a tag, comment or
    declaration, and ``&`` starting a character reference. A ``<`` before anything else and every ``>`` are text to
    an HTML parser, so "a < b" and "R&D" are sent (and copied) unchanged."""

    def escaped(m: re.Match) -> str:
        if m.group() == "<":
            return "&lt;"
        tail = text[m.start() : m.start() + 40]
        return "&amp;" if unescape(tail) != tail else "&"

    return _MARKUP.sub(escaped, text)


def chat_messages(messages: Sequence[dict]) -> list[dict]:
    """The Chatbot's value: each message's text through :func:`chat_text`. The Chatbot puts its text into the page
    as HTML even with ``render_markdown=False``; so escaped, ``<script>…</script>`` and ``<img src=…>`` show as
    text."""
    return [{**m, "content": chat_text(m["content"])} for m in messages]


class Passage(Protocol):
    """What a source needs: a knowledge-base Hit and a logged passage both have these."""

    doc_name: str
    page: int | None
    text: str
    score: float


def where(passage: Passage) -> str:
    return passage.doc_name + (f", page {passage.page}" if passage.page else "")


def highlighted(text: str, start: int, end: int) -> str:
    """``text`` escaped, with ``text[start:end]`` in a <mark>."""
    if not 0 <= start <= end <= len(text):
        return escape(text)
    return f"{escape(text[:start])}<mark>{escape(text[start:end])}</mark>{escape(text[end:])}"


def sources_html(
    passages: Sequence[Passage], evidence: tuple[int, int, int] | None, *, question: str = "",
    abstained: bool = False, turn_id: int | None = None, numbers: dict[int, int] | None = None,
    cited: Sequence[int] = (),
) -> str:
    """The passages a turn read, each with where it comes from, its number and score: the one holding the answer's
    evidence (``(rank, start, end)``, character offsets into that passage) first, with the evidence highlighted,
    then the others by number. ``numbers`` (rank → n) are the [n] the answer cites (see
    :func:`chatqa.turn.source_numbers`), ``cited`` the ranks it cites. ``turn_id`` is written as ``data-turn-id``
    (which turn the panel shows)."""
    if not passages:
        return '<div class="chatqa-muted">No sources yet: ask a question.</div>'
    numbers = source_numbers(len(passages), numbers)
    turn = f' data-turn-id="{int(turn_id)}"' if turn_id is not None else ""
    parts = [f'<div class="chatqa-sources"{turn}>']
    if question:
        note = " — no passage answers it, so ChatQA abstained" if abstained else ""
        parts.append(f'<div class="chatqa-muted">Sources for “{escape(question)}”{note}</div>')
    order = sorted(range(len(passages)), key=lambda r: (evidence is None or r != evidence[0], numbers[r]))
    for rank in order:
        p = passages[rank]
        is_answer = evidence is not None and evidence[0] == rank
        body = highlighted(p.text, evidence[1], evidence[2]) if is_answer else escape(p.text)
        label = "evidence · " if is_answer else ""
        label += "cited · " if rank in cited else ""
        parts.append(
            f'<section class="chatqa-source{" has-answer" if is_answer else ""}" data-rank="{rank}" '
            f'data-number="{numbers[rank]}">'
            f'<header><span class="where">[{numbers[rank]}] {escape(where(p))}</span>'
            f'<span class="score">{label}score {p.score:.3f}</span></header>'
            f"<p>{body}</p></section>"
        )
    parts.append("</div>")
    return "".join(parts)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


_KINDS = {
    "text/plain": "text", "text/markdown": "Markdown", "text/html": "HTML", "application/pdf": "PDF",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "DOCX",
}


# The Models tab's two metric columns per role: (header, where in a version's "new" metrics, format).
VERSION_METRICS = {
    "reader": [("held-out F1", ("heldout", "f1"), "{:.1f}"), ("SQuAD F1", ("squad", "f1"), "{:.1f}")],
    "decoder": [("held-out reply loss", ("heldout_loss",), "{:.3f}"), ("grounding", ("grounding",), "{:.2f}"), ("span kept", ("span_kept",), "{:.0%}")],
}


def metric(metrics: dict, path: tuple[str, ...], fmt: str = "{:.1f}") -> str:
    """One value of a version's metrics, formatted ("" when it has none)."""
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return "" if metrics is None else fmt.format(metrics)


def document_rows(docs: Sequence[DocumentInfo]) -> list[list]:
    """The Knowledge tab's table: id, name, type, size, chunks, added (date and time, UTC)."""
    return [
        [d.id, d.name, _KINDS.get(d.mime, d.mime), human_size(d.size), d.n_chunks, d.added[:16].replace("T", " ")]
        for d in docs
    ]


DOCUMENT_HEADERS = ["id", "name", "type", "size", "chunks", "added (UTC)"]
