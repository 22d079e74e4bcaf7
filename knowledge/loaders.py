"""Turn a user's file (a path or uploaded bytes) into plain text with page and section ranges.

Every failure a user can cause becomes a `DocumentError` subclass with a one-line reason; nothing from
the parsing libraries escapes as a traceback.
"""

from __future__ import annotations

import bisect
import codecs
import io
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    FileTooLarge,
    MissingFile,
    UnsupportedFileType,
)

if TYPE_CHECKING:
    from docx.table import Table

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

_MB = 1024 * 1024
_BINARY_RATIO = 0.10  # share of control/replacement characters above which "text" is really binary
Heads = list[tuple[str, int, int]]  # (title, start offset, level) of each heading, in text order


@dataclass(frozen=True)
class Page:
    """A PDF page (1-based `number`) as the character range [start, end) of LoadedDocument.text."""

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


def load_document(path: str | Path, *, max_bytes: int | None = None) -> LoadedDocument:
    """Load a file from disk. Raises a DocumentError subclass for anything a user can get wrong."""
    path = Path(path)
    try:
        if not path.is_file():
            raise MissingFile(path, "is a folder, not a file" if path.is_dir() else "does not exist")
        suffix = _check_suffix(path.name)
        check_size(path.name, path.stat().st_size, max_bytes)
        data = path.read_bytes()
    except OSError as e:
        raise MissingFile(path, f"could not be read ({e.strerror or e})") from None
    return _load(data, path.name, suffix)


def load_bytes(data: bytes, name: str, *, max_bytes: int | None = None) -> LoadedDocument:
    """Load uploaded bytes; `name` (the uploaded file's name) decides the type and the fallback title."""
    name = Path(name).name or name
    suffix = _check_suffix(name)
    check_size(name, len(data), max_bytes)
    return _load(bytes(data), name, suffix)


def _check_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        what = f"'{suffix}' files are" if suffix else "files without an extension are"
        raise UnsupportedFileType(name, f"{what} not supported; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return suffix


def check_size(name: str, size: int, max_bytes: int | None) -> None:
    """Raise FileTooLarge when `size` bytes exceed `max_bytes` (DEFAULT_MAX_BYTES when None)."""
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    if size > limit:
        why = f"is {_mb(size)}, larger than the {_mb(limit)} limit; split it or raise the limit"
        raise FileTooLarge(name, why)


def _mb(n: int) -> str:
    return f"{n / _MB:.1f} MB" if n >= _MB // 10 else f"{n / _MB:.2f} MB ({n:,} bytes)"


def _load(data: bytes, name: str, suffix: str) -> LoadedDocument:
    pages: tuple[Page, ...] = ()
    if suffix == ".pdf":
        text, title, pages = _load_pdf(data, name)
        sections: tuple[Section, ...] = ()
    elif suffix == ".docx":
        text, title, sections = _load_docx(data, name)
    elif suffix in (".html", ".htm"):
        text, title, sections = _load_html(_decode(data, name))
    elif suffix in (".md", ".markdown"):
        text, title, sections = _load_markdown(_decode(data, name))
    else:
        text, title, sections = _decode(data, name), "", ()
    if not text.strip():
        raise EmptyDocument(name, "contains no text")
    mime = SUPPORTED_SUFFIXES[suffix]
    doc = LoadedDocument(text, title.strip() or Path(name).stem, mime, pages, sections)
    logger.debug("loaded %s: %d chars, %d pages, %d sections", name, len(text), len(pages), len(sections))
    return doc


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _sections(text: str, heads: Heads) -> tuple[Section, ...]:
    """Each heading governs the text until the next heading of the same or a higher level (or the end),
    without trailing whitespace."""
    out = []
    for i, (title, start, level) in enumerate(heads):
        stop = next((s for _t, s, lv in heads[i + 1 :] if lv <= level), len(text))
        out.append(Section(title, start, start + len(text[start:stop].rstrip()), level))
    return tuple(out)


def _joined(blocks: list[str]) -> tuple[str, list[int]]:
    """The blocks joined by blank lines, and where each block starts."""
    starts, pos = [], 0
    for block in blocks:
        starts.append(pos)
        pos += len(block) + 2
    return "\n\n".join(blocks), starts


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


_WESTERN_PUNCT = set("€‚„…†‡‰‹›‘’“”•–—™«»°£§©®±·¢¥¡¿×÷µ¶ªº¼½¾²\xa0\xad")


def _decode(data: bytes, name: str) -> str:
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
    return _newlines(text)


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


_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


def _load_markdown(text: str) -> tuple[str, str, tuple[Section, ...]]:
    """The Markdown source stays the text. ATX headings outside fenced code become sections, starting at the
    heading line (a section's text begins with '## Title'); the title is the first level-1 heading."""
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
    return text, next((t for t, _s, lv in heads if lv == 1), ""), _sections(text, heads)


_DROP = ["title", "script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside", "form"]  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = {"p", "li", "td", "th", "blockquote", "div", "section", "article", "main", "ul", "ol", "dl", "dt",
           "dd", "table", "thead", "tbody", "tfoot", "caption", "figure", "figcaption", "address", "hr",
           "body", "html", "details", "summary"}  # fmt: skip


def _load_html(raw: str) -> tuple[str, str, tuple[Section, ...]]:
    """Main text only, block by block with blank lines between; sections from h1-h6; table rows as
    'cell | cell'; <pre> kept verbatim; the title from <title>, else the first h1."""
    from bs4 import BeautifulSoup, NavigableString, Tag
    from bs4.element import PreformattedString

    soup = BeautifulSoup(raw, "html.parser")
    title = _collapse(soup.title.get_text()) if soup.title else ""
    for tag in soup.find_all(_DROP) + soup.find_all(attrs={"role": "navigation"}):
        if not tag.decomposed:
            tag.decompose()
    root = soup.find("main") or soup.find("article") or soup

    blocks: list[str] = []
    heads: Heads = []  # start = block index until the offsets are known
    lines: list[str] = []
    buf: list[str] = []

    def end_line() -> None:
        if line := _collapse("".join(buf)):
            lines.append(line)
        buf.clear()

    def end_block(text: str = "") -> None:
        end_line()
        if lines:
            blocks.append("\n".join(lines))
            lines.clear()
        if text.strip():
            blocks.append(text)

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, PreformattedString):  # comments, CDATA, doctype, processing instructions
                continue
            if isinstance(child, NavigableString):
                buf.append(str(child))
            elif not isinstance(child, Tag):
                continue
            elif child.name == "br":
                end_line()
            elif child.name in _HEADINGS:
                if text := _collapse(child.get_text(" ")):
                    end_block()
                    heads.append((text, len(blocks), _HEADINGS[child.name]))
                    end_block(text)
            elif child.name == "pre":
                end_block(_newlines(child.get_text()).strip("\n").rstrip())
            elif child.name == "tr":
                cells = (_collapse(c.get_text(" ")) for c in child.find_all(["td", "th"], recursive=False))
                end_block(" | ".join(c for c in cells if c))
            elif child.name in _BLOCKS:
                end_block()
                walk(child)
                end_block()
            else:
                walk(child)

    walk(root)
    end_block()
    text, starts = _joined(blocks)
    title = title or next((t for t, _i, lv in heads if lv == 1), "")
    return text, title, _sections(text, [(t, starts[i], lv) for t, i, lv in heads])


def _load_pdf(data: bytes, name: str) -> tuple[str, str, tuple[Page, ...]]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except DependencyError:
                why = "is encrypted in a way this installation cannot open; remove the encryption and upload it again"
                raise EncryptedDocument(name, why) from None
            if not opened:
                why = "is password-protected; remove the password and upload it again"
                raise EncryptedDocument(name, why)
        page_texts = [_newlines(page.extract_text() or "").strip() for page in reader.pages]
    except EncryptedDocument:
        raise
    except Exception as e:  # pypdf raises many kinds (PdfReadError, ValueError, KeyError, ...) on bad files
        logger.debug("pypdf could not read %s", name, exc_info=True)
        why = f"is not a readable PDF; it may be damaged or incomplete ({_first_line(e)})"
        raise CorruptDocument(name, why) from None
    if page_texts and not any(page_texts):
        raise EmptyDocument(name, "has no text layer (it is probably a scanned image); OCR is not supported")
    text, starts = _joined(page_texts)
    pages = tuple(Page(i + 1, s, s + len(t)) for i, (s, t) in enumerate(zip(starts, page_texts, strict=True)))
    try:
        title = str(reader.metadata.title or "") if reader.metadata else ""
    except Exception:  # a broken info dictionary is no reason to reject the text
        title = ""
    return text, title, pages


def _load_docx(data: bytes, name: str) -> tuple[str, str, tuple[Section, ...]]:
    """Paragraphs and table rows ('cell | cell') in document order; Title/Heading N styles give sections."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        title = (document.core_properties.title or "").strip()
        items: list[tuple[str, str]] = []  # (text, style name)
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                items.extend((row, "") for row in _table_rows(item))
            else:
                style = item.style.name if item.style is not None else ""
                items.append((_newlines(item.text).strip(), style or ""))
    except Exception as e:  # BadZipFile, KeyError, PackageNotFoundError, XML errors, ...
        logger.debug("python-docx could not read %s", name, exc_info=True)
        raise CorruptDocument(name, f"is not a valid Word .docx file ({_first_line(e)})") from None

    items = [(text, style) for text, style in items if text]
    text, starts = _joined([t for t, _s in items])
    heads: Heads = []
    title_style = ""
    for (item_text, style), start in zip(items, starts, strict=True):
        if (level := _heading_level(style)) is not None:
            heads.append((_collapse(item_text), start, level))
            title_style = title_style or (heads[-1][0] if style == "Title" else "")
    return text, title or title_style or (heads[0][0] if heads else ""), _sections(text, heads)


def _heading_level(style: str) -> int | None:
    if style == "Title":
        return 1
    m = re.fullmatch(r"Heading\s*(\d*)", style.strip(), flags=re.IGNORECASE)
    return (max(1, int(m.group(1))) if m.group(1) else 1) if m else None


def _table_rows(table: Table) -> list[str]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        seen: list[object] = []
        for cell in row.cells:
            if any(cell._tc is tc for tc in seen):  # a merged cell is listed once per grid column it spans
                continue
            seen.append(cell._tc)
            cells.append(_collapse(cell.text))
        if line := " | ".join(c for c in cells if c):
            rows.append(line)
    return rows
