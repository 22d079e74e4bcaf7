"""Text formats kept as written: plain text and logs, Markdown and reStructuredText (headings become sections)."""

from __future__ import annotations

import logging
import re

from .common import Heads, Loaded, decode, sections_from

logger = logging.getLogger(__name__)


def load_text(data: bytes, name: str) -> Loaded:
    """Plain text, `.log` files and text files without an extension: the decoded text (binary is refused)."""
    return Loaded(decode(data, name))


_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


def load_markdown(data: bytes, name: str) -> Loaded:
    """The Markdown source stays the text. ATX headings outside fenced code become sections, starting at the
    heading line (a section's text begins with '## Title'); the title is the first level-1 heading."""
    text = decode(data, name)
    heads: Heads = []
    fence = ""
    offset = 0
    for line in text.splitlines(keepends=True):
        if m := _FENCE.match(line.rstrip("\n")):
            mark, rest = m.groups()
            if not fence:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence) and not rest.strip():
                fence = ""
        elif not fence and (h := _ATX.fullmatch(line.rstrip("\n"))) and (title := (h.group(2) or "").strip()):
            heads.append((title, offset, len(h.group(1))))
        offset += len(line)
    return Loaded(text, next((t for t, _s, lv in heads if lv == 1), ""), sections=sections_from(text, heads))


_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1+[ \t]*")
_RST_SETTINGS = {
    "report_level": 5,  # quiet: a document with markup mistakes is still text worth adding
    "halt_level": 5,
    "file_insertion_enabled": False,  # `.. include::` must not read other files of this machine
    "raw_enabled": False,
    "doctitle_xform": False,  # keep the top heading a section of its own
    "warning_stream": False,
}


def load_rst(data: bytes, name: str) -> Loaded:
    """The reStructuredText source stays the text; its section headings (found by docutils' parser, nested as
    the adornments say) become sections starting at the heading (its overline, if any). The title is the first
    top-level heading."""
    from docutils import nodes
    from docutils.core import publish_doctree

    text = decode(data, name)
    try:
        doctree = publish_doctree(text, settings_overrides=_RST_SETTINGS)
    except Exception:  # docutils gave up on the markup; the text is still worth adding, without sections
        logger.debug("docutils could not parse %s; adding it as plain text", name, exc_info=True)
        return Loaded(text)
    lines = text.splitlines(keepends=True)
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line))
    heads: Heads = []
    for section in doctree.findall(nodes.section):
        title = section.next_node(nodes.title)
        if title is None or title.line is None:
            continue
        depth = sum(1 for n in _ancestors(section) if isinstance(n, nodes.section))
        start = _heading_line(lines, title.line - 1, title.astext())
        if start is not None:
            heads.append((" ".join(title.astext().split()), line_starts[start], depth))
    heads.sort(key=lambda h: h[1])
    return Loaded(text, next((t for t, _s, lv in heads if lv == 1), ""), sections=sections_from(text, heads))


def _ancestors(node):
    while node is not None:
        yield node
        node = node.parent


def _heading_line(lines: list[str], underline: int, title: str) -> int | None:
    """The 0-based line where a heading starts (its overline, else its title line), given the 0-based index of
    the underline that docutils reports; None when the source does not show it there."""
    first_word = title.split()[0] if title.split() else ""
    if not (0 < underline < len(lines)) or not _ADORNMENT.fullmatch(lines[underline].rstrip("\n")):
        return None
    at = underline - 1
    if first_word and first_word not in lines[at]:
        return None
    if at > 0 and _ADORNMENT.fullmatch(lines[at - 1].rstrip("\n")):
        return at - 1
    return at
