"""Text from documents, file names and questions, made safe to print to a terminal.

A document may contain escape sequences (`\\x1b[2J` clears the screen, `\\x1b]0;…\\x07` sets the window title) and a
file name may contain a newline or a right-to-left override (U+202E) that makes `evil\\u202etxt.exe` read as
`evilexe.txt`. Every line the command line prints passes what it did not write itself through `terminal_safe`,
which shows such characters as Python-style escapes; ordinary text, accents and CJK are unchanged.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, the bidi embeddings, overrides, isolates and marks, and lone surrogates (undecodable
# bytes of a file name), which cannot even be encoded for the terminal.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")
_UNSAFE_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f{_BIDI}\ud800-\udfff]")  # json.dumps escapes the C0 controls itself
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def terminal_safe(text: object, *, newlines: bool = False) -> str:
    """`text` with control and bidi-control characters escaped (`\\x1b`, `\\n`, `\\u202e`); `newlines=True` keeps
    line breaks as they are (for multi-line text such as an answer)."""
    return (_UNSAFE_BUT_NEWLINE if newlines else _UNSAFE).sub(_escape, str(text))


def json_safe(dumped: str) -> str:
    """JSON text (from `json.dumps(..., ensure_ascii=False)`) with the characters json.dumps leaves raw but a
    terminal obeys written as `\\uXXXX` escapes: the same JSON value, safe to print."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)
