"""What every loader shares: the loaded-document dataclasses, text decoding and the small text helpers."""

from __future__ import annotations

import bisect
import codecs
import logging
import unicodedata
from dataclasses import dataclass

from knowledge.errors import CorruptDocument

logger = logging.getLogger(__name__)

_BINARY_RATIO = 0.10  # share of control/replacement characters above which "text" is really binary
Heads = list[tuple[str, int, int]]  # (title, start offset, level) of each heading, in text order


@dataclass(frozen=True)
class Page:
    """A page (a PDF page, a slide, a sheet, a chapter, a range of rows; 1-based `number`) as the character range
    [start, end) of LoadedDocument.text."""

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class Section:
    """A heading and the range it governs: up to the next heading of the same or a higher level, or the end."""

    title: str
    start: int
    end: int
    level: int = 1


@dataclass(frozen=True)
class LoadedDocument:
    text: str
    title: str
    mime: str
    pages: tuple[Page, ...] = ()
    sections: tuple[Section, ...] = ()

    def page_at(self, offset: int) -> int | None:
        """The page holding `offset`; None for unpaged documents or an offset outside the text.
        An offset in the blank separator between two pages belongs to the earlier page."""
        if not self.pages or not 0 <= offset < len(self.text):
            return None
        i = bisect.bisect_right([p.start for p in self.pages], offset) - 1
        return self.pages[max(i, 0)].number


@dataclass(frozen=True)
class Loaded:
    """What a loader returns: the text, a title ('' for none) and its pages or sections."""

    text: str
    title: str = ""
    pages: tuple[Page, ...] = ()
    sections: tuple[Section, ...] = ()


def newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def collapse(text: str) -> str:
    return " ".join(text.split())


def sections_from(text: str, heads: Heads) -> tuple[Section, ...]:
    """Each heading governs the text until the next heading of the same or a higher level (or the end),
    without trailing whitespace."""
    out = []
    for i, (title, start, level) in enumerate(heads):
        stop = next((s for _t, s, lv in heads[i + 1 :] if lv <= level), len(text))
        out.append(Section(title, start, start + len(text[start:stop].rstrip()), level))
    return tuple(out)


def joined(blocks: list[str]) -> tuple[str, list[int]]:
    """The blocks joined by blank lines, and where each block starts."""
    starts, pos = [], 0
    for block in blocks:
        starts.append(pos)
        pos += len(block) + 2
    return "\n\n".join(blocks), starts


def paged(blocks: list[str]) -> tuple[str, tuple[Page, ...]]:
    """Blocks joined by blank lines, each a page numbered from 1 (empty blocks keep their number)."""
    text, starts = joined(blocks)
    return text, tuple(Page(i + 1, s, s + len(b)) for i, (s, b) in enumerate(zip(starts, blocks, strict=True)))


def first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


_WESTERN_PUNCT = set("€‚„…†‡‰‹›‘’“”•–—™«»°£§©®±·¢¥¡¿×÷µ¶ªº¼½¾²\xa0\xad")


def looks_binary(data: bytes) -> bool:
    """A quick sniff of a file's first bytes: NUL bytes or many control characters mean binary, not text."""
    head = data[:8192]
    if head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in head:
        return True
    text = head.decode("utf-8", errors="replace")
    bad = sum(1 for c in text if c == "\ufffd" or (unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v"))
    return bool(text) and bad / len(text) > _BINARY_RATIO and _as_western(head) is None


def decode(data: bytes, name: str) -> str:
    """Bytes of a text file to str: a BOM's encoding, else UTF-8, else Western (cp1252), else
    charset_normalizer's best guess. Binary data is refused."""
    if data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", errors="replace")
    elif b"\x00" in data:
        raise CorruptDocument(name, "looks like binary data, not text")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = _as_western(data) or _guess_encoding(data, name)
    bad = sum(1 for c in text if c == "\ufffd" or (unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v"))
    if text and bad / len(text) > _BINARY_RATIO:
        raise CorruptDocument(name, "looks like binary data, not text")
    return newlines(text)


def _as_western(data: bytes) -> str | None:
    """The bytes as Windows-1252 if they read like Western European text, else None.

    charset_normalizer often takes short French/German/Spanish cp1252 text for a Baltic or Central European
    code page. Text whose non-ASCII characters are all letters or common punctuation, and only a minority
    of its letters, is far more likely cp1252 (Cyrillic or Greek read this way is nearly all accents).
    """
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    high = [c for c in text if ord(c) > 127]
    if any(not c.isalpha() and c not in _WESTERN_PUNCT for c in high):
        return None
    letters = sum(c.isalpha() for c in text)
    return text if letters and sum(c.isalpha() for c in high) <= 0.3 * letters else None


def _guess_encoding(data: bytes, name: str) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise CorruptDocument(name, "is not readable text (its character encoding could not be worked out)")
    logger.debug("%s is not UTF-8; decoding it as %s", name, best.encoding)
    return str(best)
