"""Turn a user's file (a path or uploaded bytes) into plain text with page and section ranges.

Every failure a user can cause becomes a `DocumentError` subclass with a one-line reason; nothing from
the parsing libraries escapes as a traceback. One module per kind of format:

    text.py     plain text, logs and extension-less text (sniffed), Markdown, reStructuredText
    html.py     HTML          pdf.py     PDF          ebook.py    EPUB
    office.py   DOCX, PPTX, XLSX, ODT (their zip directories checked first by zipguard.py)
    data.py     CSV, TSV, JSON, JSON Lines
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from knowledge.errors import CorruptDocument, EmptyDocument, FileTooLarge, MissingFile, UnsupportedFileType

from .common import Loaded, LoadedDocument, Page, Section, looks_binary
from .data import load_csv, load_json, load_jsonl, load_tsv
from .ebook import load_epub
from .html import load_html
from .office import load_docx, load_odt, load_pptx, load_xlsx
from .pdf import load_pdf
from .text import load_markdown, load_rst, load_text
from .zipguard import MAX_UNPACKED_BYTES, open_zip

__all__ = [
    "DEFAULT_MAX_BYTES", "SUPPORTED_SUFFIXES", "LoadedDocument", "Page", "Section", "check_size", "is_supported",
    "load_bytes", "load_document", "looks_binary", "max_unpacked_bytes",
]

logger = logging.getLogger(__name__)

Loader = Callable[[bytes, str], Loaded]
_WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# suffix → (MIME type, loader, the format's name in messages when it is a zip package, else "")
_FORMATS: dict[str, tuple[str, Loader, str]] = {
    ".txt": ("text/plain", load_text, ""),
    ".log": ("text/plain", load_text, ""),
    "": ("text/plain", load_text, ""),  # files without an extension: text is accepted, binary refused
    ".md": ("text/markdown", load_markdown, ""),
    ".markdown": ("text/markdown", load_markdown, ""),
    ".rst": ("text/x-rst", load_rst, ""),
    ".html": ("text/html", load_html, ""),
    ".htm": ("text/html", load_html, ""),
    ".pdf": ("application/pdf", load_pdf, ""),
    ".docx": (_WORD, load_docx, "Word .docx"),
    ".pptx": (_PPTX, load_pptx, "PowerPoint .pptx"),
    ".xlsx": (_XLSX, load_xlsx, "Excel .xlsx"),
    ".odt": ("application/vnd.oasis.opendocument.text", load_odt, "OpenDocument .odt"),
    ".epub": ("application/epub+zip", load_epub, "EPUB"),
    ".csv": ("text/csv", load_csv, ""),
    ".tsv": ("text/tab-separated-values", load_tsv, ""),
    ".json": ("application/json", load_json, ""),
    ".jsonl": ("application/jsonl", load_jsonl, ""),
}
SUPPORTED_SUFFIXES: dict[str, str] = {suffix: mime for suffix, (mime, _l, _z) in _FORMATS.items() if suffix}
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

_MB = 1024 * 1024


def is_supported(name: str) -> bool:
    """Whether a file of this name has a loader (files without an extension do: they are sniffed as text)."""
    return _suffix(name) in _FORMATS


def load_document(path: str | Path, *, max_bytes: int | None = None) -> LoadedDocument:
    """Load a file from disk. Raises a DocumentError subclass for anything a user can get wrong."""
    path = Path(path)
    try:
        if not path.is_file():
            raise MissingFile(path, "is a folder, not a file" if path.is_dir() else "does not exist")
        _check_suffix(path.name)
        check_size(path.name, path.stat().st_size, max_bytes)
        data = path.read_bytes()
    except OSError as e:
        raise MissingFile(path, f"could not be read ({e.strerror or e})") from None
    return load_bytes(data, path.name, max_bytes=max_bytes)


def load_bytes(data: bytes, name: str, *, max_bytes: int | None = None) -> LoadedDocument:
    """Load uploaded bytes; `name` (the uploaded file's name) decides the type and the fallback title."""
    name = Path(name).name or name
    suffix = _check_suffix(name)
    check_size(name, len(data), max_bytes)
    mime, loader, zip_kind = _FORMATS[suffix]
    data = bytes(data)
    if zip_kind:
        open_zip(data, name, zip_kind, max_unpacked=max_unpacked_bytes(max_bytes)).close()
    try:
        loaded = loader(data, name)
    except RecursionError:  # nesting deeper than Python's stack allows, in our walk or in a parsing library
        why = "is nested too deeply to read (thousands of levels of elements); simplify it or save it as plain text"
        raise CorruptDocument(name, why) from None
    if not loaded.text.strip():
        raise EmptyDocument(name, "contains no text")
    doc = LoadedDocument(loaded.text, loaded.title.strip() or Path(name).stem, mime, loaded.pages, loaded.sections)
    logger.debug("loaded %s: %d chars, %d pages, %d sections", name, len(doc.text), len(doc.pages), len(doc.sections))
    return doc


def max_unpacked_bytes(max_bytes: int | None) -> int:
    """What a zip-based document may unpack to: MAX_UNPACKED_BYTES, or 4× the file size limit if that is more."""
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    return max(MAX_UNPACKED_BYTES, 4 * limit)


def _suffix(name: str) -> str:
    return Path(name).suffix.lower()


def _check_suffix(name: str) -> str:
    suffix = _suffix(name)
    if suffix not in _FORMATS:
        raise UnsupportedFileType(name, f"'{suffix}' files are not supported; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return suffix


def check_size(name: str, size: int, max_bytes: int | None) -> None:
    """Raise FileTooLarge when `size` bytes exceed `max_bytes` (DEFAULT_MAX_BYTES when None)."""
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    if size > limit:
        why = f"is {_mb(size)}, larger than the {_mb(limit)} limit; split it or raise the limit (--max-file-mb)"
        raise FileTooLarge(name, why)


def _mb(n: int) -> str:
    return f"{n / _MB:.1f} MB" if n >= _MB // 10 else f"{n / _MB:.2f} MB ({n:,} bytes)"
