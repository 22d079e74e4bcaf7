"""Office documents: Word (.docx), PowerPoint (.pptx), Excel (.xlsx) and OpenDocument text (.odt).

The dispatcher has already checked each file's zip directory (knowledge.loaders.zipguard) before these run.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from typing import TYPE_CHECKING

from knowledge.errors import CorruptDocument

from .common import Heads, Loaded, Section, collapse, first_line, joined, newlines, paged, sections_from
from .data import record_lines

if TYPE_CHECKING:
    from docx.table import Table

logger = logging.getLogger(__name__)


# -- Word ------------------------------------------------------------------------------------------------------------
def load_docx(data: bytes, name: str) -> Loaded:
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
                items.append((newlines(item.text).strip(), style or ""))
    except RecursionError:
        raise
    except Exception as e:  # BadZipFile, KeyError, PackageNotFoundError, XML errors, ...
        logger.debug("python-docx could not read %s", name, exc_info=True)
        raise CorruptDocument(name, f"is not a valid Word .docx file ({first_line(e)})") from None

    items = [(text, style) for text, style in items if text]
    text, starts = joined([t for t, _s in items])
    heads: Heads = []
    title_style = ""
    for (item_text, style), start in zip(items, starts, strict=True):
        if (level := _heading_level(style)) is not None:
            heads.append((collapse(item_text), start, level))
            title_style = title_style or (heads[-1][0] if style == "Title" else "")
    return Loaded(text, title or title_style or (heads[0][0] if heads else ""), sections=sections_from(text, heads))


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
            cells.append(collapse(cell.text))
        if line := " | ".join(c for c in cells if c):
            rows.append(line)
    return rows


# -- PowerPoint ------------------------------------------------------------------------------------------------------
def load_pptx(data: bytes, name: str) -> Loaded:
    """A page per slide: its text boxes and tables (rows as 'cell | cell') top to bottom, then its speaker notes
    ('Notes: ...'). Each slide with a title is a section; the document title is the core title, else the first
    slide's title."""
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(data))
        core_title = (deck.core_properties.title or "").strip()
        slides: list[tuple[str, str]] = []  # (slide title, slide text)
        for slide in deck.slides:
            title_shape = slide.shapes.title
            slide_title = collapse(title_shape.text_frame.text) if title_shape is not None else ""
            parts = [p for p in (_shape_text(s) for s in _shapes(slide.shapes)) if p]
            notes = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
            if notes is not None and (note_text := newlines(notes.text).strip()):
                parts.append(f"Notes: {note_text}")
            slides.append((slide_title, "\n".join(parts)))
    except RecursionError:
        raise
    except Exception as e:
        logger.debug("python-pptx could not read %s", name, exc_info=True)
        raise CorruptDocument(name, f"is not a valid PowerPoint .pptx file ({first_line(e)})") from None
    text, pages = paged([t for _title, t in slides])
    sections = tuple(Section(t, p.start, p.end) for (t, _x), p in zip(slides, pages, strict=True) if t and p.end > p.start)
    return Loaded(text, core_title or next((t for t, _x in slides if t), ""), pages=pages, sections=sections)


def _shapes(shapes) -> list:
    """The slide's shapes, groups opened (without recursion), in reading order: top to bottom, left to right."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    out, stack = [], list(shapes)[::-1]
    while stack:
        shape = stack.pop()
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            stack.extend(list(shape.shapes)[::-1])
        else:
            out.append(shape)
    return sorted(out, key=lambda s: (s.top or 0, s.left or 0))


def _shape_text(shape) -> str:
    if shape.has_text_frame:
        return newlines(shape.text_frame.text).strip()
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = (" | ".join(c for c in (collapse(cell.text) for cell in row.cells) if c) for row in shape.table.rows)
        return "\n".join(r for r in rows if r)
    return ""


# -- Excel -----------------------------------------------------------------------------------------------------------
def load_xlsx(data: bytes, name: str) -> Loaded:
    """A page per sheet (a section titled with the sheet's name): its first row as headers and every other row
    as 'header: value' lines, a blank line between rows. Formulas give their last computed values."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            title = (book.properties.title or "").strip() if book.properties is not None else ""
            sheets = [(ws.title, [list(row) for row in ws.iter_rows(values_only=True)]) for ws in book.worksheets]
        finally:
            book.close()
    except RecursionError:
        raise
    except Exception as e:  # InvalidFileException, BadZipFile, KeyError, XML errors, ...
        logger.debug("openpyxl could not read %s", name, exc_info=True)
        raise CorruptDocument(name, f"is not a valid Excel .xlsx file ({first_line(e)})") from None
    blocks = []
    for sheet, rows in sheets:
        body = "\n\n".join(record_lines(rows))
        blocks.append(f"{sheet}\n\n{body}" if body else "")
    text, pages = paged(blocks)
    sections = tuple(Section(s, p.start, p.end) for (s, _r), p in zip(sheets, pages, strict=True) if p.end > p.start)
    return Loaded(text, title, pages=pages, sections=sections)


# -- OpenDocument text -----------------------------------------------------------------------------------------------
_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_DC = "http://purl.org/dc/elements/1.1/"


def load_odt(data: bytes, name: str) -> Loaded:
    """Headings and paragraphs in order, table rows as 'cell | cell'; text:h outline levels give sections; the
    title from meta.xml, else the first level-1 heading."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            body = parse_xml(archive.read("content.xml")).find(f"{{{_OFFICE}}}body")
            meta = parse_xml(archive.read("meta.xml")) if "meta.xml" in archive.namelist() else None
        if body is None:
            raise ValueError("content.xml has no office:body")
    except RecursionError:
        raise
    except Exception as e:
        logger.debug("could not read %s as OpenDocument", name, exc_info=True)
        raise CorruptDocument(name, f"is not a valid OpenDocument .odt file ({first_line(e)})") from None

    items: list[tuple[str, int | None]] = []  # (text, heading level or None)
    stack = [body]
    while stack:
        node = stack.pop()
        tag = node.tag
        if tag == f"{{{_TEXT}}}h":
            level = node.get(f"{{{_TEXT}}}outline-level") or "1"
            items.append((collapse(odf_text(node)), int(level) if level.isdigit() and int(level) > 0 else 1))
        elif tag == f"{{{_TEXT}}}p":
            items.append((newlines(odf_text(node)).strip(), None))
        elif tag == f"{{{_TABLE}}}table-row":
            cells = (collapse(odf_text(c)) for c in node if c.tag == f"{{{_TABLE}}}table-cell")
            items.append((" | ".join(c for c in cells if c), None))
        else:
            stack.extend(reversed(node))
    items = [(t, lv) for t, lv in items if t]
    text, starts = joined([t for t, _lv in items])
    heads: Heads = [(t, s, lv) for (t, lv), s in zip(items, starts, strict=True) if lv is not None]
    title = ""
    if meta is not None and (el := meta.find(f".//{{{_DC}}}title")) is not None:
        title = collapse(el.text or "")
    return Loaded(text, title or next((t for t, _s, lv in heads if lv == 1), ""), sections=sections_from(text, heads))


def odf_text(node) -> str:
    """The text of an OpenDocument element: text:s as spaces, text:tab as a tab, text:line-break as a newline;
    notes (footnote bodies) left out. Iterative, so deep nesting cannot exhaust the stack."""
    out: list[str] = []
    stack: list = [node]  # elements, and strings (texts and tails) in document order
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        tag = item.tag
        if not isinstance(tag, str) or tag in (f"{{{_TEXT}}}note", f"{{{_OFFICE}}}annotation"):
            continue  # processing instructions, footnotes, comments
        if tag == f"{{{_TEXT}}}s":
            out.append(" " * int(item.get(f"{{{_TEXT}}}c") or 1))
        elif tag == f"{{{_TEXT}}}tab":
            out.append("\t")
        elif tag == f"{{{_TEXT}}}line-break":
            out.append("\n")
        else:
            pending: list = [item.text] if item.text else []
            for child in item:
                pending.append(child)
                if child.tail:
                    pending.append(child.tail)
            stack.extend(reversed(pending))
    return "".join(out)


def parse_xml(raw: bytes):
    """Parse XML from inside a document without resolving entities or reaching the network."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
    return etree.fromstring(raw, parser)
