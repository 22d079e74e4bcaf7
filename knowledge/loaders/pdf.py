"""PDF text layers, a page per page.

pypdf reports the repairs it makes to damaged files as warnings on its `pypdf` loggers, which a command line's
logging set-up would print between progress lines. They are routed here instead: re-logged at DEBUG on this
module's logger, naming the file being read, never printed on their own.
"""

from __future__ import annotations

import io
import logging
import threading

from knowledge.errors import CorruptDocument, EmptyDocument, EncryptedDocument

from .common import Loaded, first_line, newlines, paged

logger = logging.getLogger(__name__)
_reading = threading.local()  # the name of the file this thread is reading, for the re-logged warnings


class _PypdfToDebug(logging.Handler):
    """Takes pypdf's log records and re-logs them at DEBUG here, with the file's name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not break loading
            message = str(record.msg)
        logger.debug("%s: pypdf: %s", getattr(_reading, "name", "?"), message)


def _route_pypdf_logs() -> None:
    pypdf_logger = logging.getLogger("pypdf")
    if not any(isinstance(h, _PypdfToDebug) for h in pypdf_logger.handlers):
        pypdf_logger.addHandler(_PypdfToDebug())
        pypdf_logger.propagate = False


_route_pypdf_logs()


def load_pdf(data: bytes, name: str) -> Loaded:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    _reading.name = name
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
        page_texts = [newlines(page.extract_text() or "").strip() for page in reader.pages]
    except EncryptedDocument:
        raise
    except RecursionError:
        raise
    except Exception as e:  # pypdf raises many kinds (PdfReadError, ValueError, KeyError, ...) on bad files
        logger.debug("pypdf could not read %s", name, exc_info=True)
        why = f"is not a readable PDF; it may be damaged or incomplete ({first_line(e)})"
        raise CorruptDocument(name, why) from None
    finally:
        _reading.name = "?"
    if page_texts and not any(page_texts):
        raise EmptyDocument(name, "has no text layer (it is probably a scanned image); OCR is not supported")
    text, pages = paged(page_texts)
    try:
        title = str(reader.metadata.title or "") if reader.metadata else ""
    except Exception:  # a broken info dictionary is no reason to reject the text
        title = ""
    return Loaded(text, title, pages=pages)
