"""Refuse zip-based documents (DOCX, PPTX, XLSX, ODT, EPUB) that would unpack to too much, before reading them.

The check reads only the zip's central directory (each member's declared sizes); no member is decompressed. The
declared size also bounds what is later read: Python's zipfile stops at a member's declared size and fails its CRC
check when the data goes on, so a zip that lies about its sizes cannot inflate past them either.
"""

from __future__ import annotations

import io
import zipfile

from knowledge.errors import CorruptDocument, FileTooLarge

from .common import first_line

MAX_UNPACKED_BYTES = 512 * 1024 * 1024  # what a zip's members may add up to, uncompressed
MAX_MEMBERS = 50_000
MAX_RATIO = 200  # a member may not declare more than this many times its compressed size (above 1 MB)


def open_zip(data: bytes, name: str, kind: str, *, max_unpacked: int = MAX_UNPACKED_BYTES) -> zipfile.ZipFile:
    """The zip archive of a document, after checking its declared sizes. `kind` names the format in messages
    ("Word .docx"). Raises CorruptDocument for a file that is not a zip, FileTooLarge for a zip bomb."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as e:
        raise CorruptDocument(name, f"is not a valid {kind} file ({first_line(e)})") from None
    check_members(members, name, max_unpacked=max_unpacked)
    return archive


def check_members(members: list[zipfile.ZipInfo], name: str, *, max_unpacked: int = MAX_UNPACKED_BYTES) -> None:
    """Raise FileTooLarge when the members' declared sizes add up to more than `max_unpacked`, when there are
    more than MAX_MEMBERS of them, or when one declares an implausible compression ratio."""
    if len(members) > MAX_MEMBERS:
        raise FileTooLarge(name, f"holds {len(members):,} files, more than the {MAX_MEMBERS:,} allowed; it may be a zip bomb")
    total = sum(m.file_size for m in members)
    if total > max_unpacked:
        why = (f"would unpack to {total / 2**20:,.0f} MB, more than the {max_unpacked / 2**20:,.0f} MB allowed; "
               "it may be a zip bomb, so it was not opened")
        raise FileTooLarge(name, why)
    for m in members:
        if m.file_size > 2**20 and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            why = (f"has a member ({m.filename}) that would grow {m.file_size // max(m.compress_size, 1):,} times "
                   "when unpacked; it may be a zip bomb, so it was not opened")
            raise FileTooLarge(name, why)
