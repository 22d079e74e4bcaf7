"""Errors a user can cause. Each message says what was wrong and what to do; the CLI and UI print it as one line."""

from __future__ import annotations

from pathlib import Path


class ChatQAError(Exception):
    """Base class of every error ChatQA reports to a person instead of a traceback."""


class DocumentError(ChatQAError):
    """A document could not be added. `name` is the file, `reason` a short human explanation."""

    def __init__(self, name: str | Path, reason: str):
        self.name = str(name)
        self.reason = reason
        super().__init__(f"{self.name}: {reason}")


class UnsupportedFileType(DocumentError):
    pass


class FileTooLarge(DocumentError):
    pass


class EmptyDocument(DocumentError):
    pass


class CorruptDocument(DocumentError):
    pass


class EncryptedDocument(DocumentError):
    pass


class MissingFile(DocumentError):
    pass


class UnknownDocument(ChatQAError):
    def __init__(self, doc_id: object):
        self.doc_id = doc_id
        super().__init__(f"no document with id {doc_id!r} in the knowledge base (see `chatqa kb list`)")


class InvalidQuery(ChatQAError):
    pass


class MissingDataDir(ChatQAError):
    """A command that only reads was pointed at a folder that holds no ChatQA data (a mistyped --data-dir)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        super().__init__(
            f"no ChatQA data directory at {self.path} (check --data-dir or $CHATQA_DATA_DIR; `chatqa kb add` creates one)"
        )
