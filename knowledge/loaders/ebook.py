"""EPUB: the chapters in reading order (the package's spine), a page per chapter, read like HTML."""

from __future__ import annotations

import io
import logging
import posixpath
import zipfile
from urllib.parse import unquote

from knowledge.errors import CorruptDocument, DocumentError

from .common import Loaded, Section, collapse, first_line, paged
from .html import load_html
from .office import parse_xml

logger = logging.getLogger(__name__)

_CONTAINER = "urn:oasis:names:tc:opendocument:xmlns:container"
_OPF = "http://www.idpf.org/2007/opf"
_DC = "http://purl.org/dc/elements/1.1/"
_HTML_TYPES = {"application/xhtml+xml", "text/html"}


def load_epub(data: bytes, name: str) -> Loaded:
    """Each chapter (an XHTML item of the spine) is a page; its headings are sections (offsets into the whole
    text); chapters without text are left out. The title is the package's dc:title."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            container = parse_xml(archive.read("META-INF/container.xml"))
            rootfile = container.find(f".//{{{_CONTAINER}}}rootfile")
            if rootfile is None or not rootfile.get("full-path"):
                raise ValueError("META-INF/container.xml names no package file")
            opf_path = rootfile.get("full-path")
            package = parse_xml(archive.read(opf_path))
            folder = posixpath.dirname(opf_path)
            manifest = {
                item.get("id"): (item.get("href") or "", item.get("media-type") or "")
                for item in package.iter(f"{{{_OPF}}}item")
            }
            chapters = []
            for ref in package.iter(f"{{{_OPF}}}itemref"):
                href, media = manifest.get(ref.get("idref"), ("", ""))
                if href and media in _HTML_TYPES:
                    member = posixpath.normpath(posixpath.join(folder, unquote(href.split("#")[0])))
                    chapters.append((member, archive.read(member)))
            title_el = package.find(f".//{{{_DC}}}title")
    except RecursionError:
        raise
    except Exception as e:  # BadZipFile, KeyError (a missing member), XML errors, ...
        logger.debug("could not read %s as EPUB", name, exc_info=True)
        raise CorruptDocument(name, f"is not a valid EPUB file ({first_line(e)})") from None

    loaded: list[Loaded] = []
    for member, raw in chapters:
        try:
            chapter = load_html(raw, f"{name}:{member}")
        except DocumentError as e:
            logger.debug("%s: chapter %s left out (%s)", name, member, e.reason)
            continue
        if chapter.text.strip():
            loaded.append(chapter)
    text, pages = paged([c.text for c in loaded])
    sections = tuple(
        Section(s.title, page.start + s.start, page.start + s.end, s.level)
        for chapter, page in zip(loaded, pages, strict=True)
        for s in chapter.sections
    )
    title = collapse(title_el.text or "") if title_el is not None else ""
    return Loaded(text, title, pages=pages, sections=sections)
