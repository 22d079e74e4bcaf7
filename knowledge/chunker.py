"""Cut a document's text into passages sized for the embedder and the reader.

Passages are measured in the embedder's tokens, end at paragraph or sentence boundaries where possible, overlap by
a few sentences, and keep their character offsets into the document text: `text[chunk.start:chunk.end] == chunk.text`
always holds, so an answer span found in a chunk maps back to the exact place in the source.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

# Where a passage may be cut: a paragraph break, a sentence end (., !, ? and closing quotes or brackets) followed by
# white space, or a line break before a list item, heading or quote.
_BREAK = re.compile(
    r"(?P<para>\n[ \t]*\n\s*)"
    r"|(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])"
    r"|(?P<item>\n(?=[ \t]*(?:[-*+#>]|\d+[.)])\s))"
)


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets into the document text
    end: int
    n_tokens: int


@dataclass(frozen=True)
class ChunkerConfig:
    """Sizes in embedder tokens (all-MiniLM-L6-v2 reads at most 256, two of them special)."""

    max_tokens: int = 250  # a chunk never has more (unless a single word is longer)
    min_tokens: int = 120  # a paragraph break ends a chunk only once it has at least this many
    overlap_tokens: int = 48  # sentences carried over from the end of the previous chunk, at most this many tokens

    def __post_init__(self) -> None:
        if self.max_tokens < 16:
            raise ValueError(f"max_tokens must be at least 16, got {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError("min_tokens must be between 0 and max_tokens")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError("overlap_tokens must be non-negative and less than half of max_tokens")


@dataclass(frozen=True)
class _Unit:
    """A sentence (or a piece of an over-long sentence) with its token count."""

    start: int
    end: int
    n_tokens: int
    opens_paragraph: bool


TokenOffsets = Callable[[str], list[tuple[int, int]]]


def split_units(text: str) -> list[tuple[int, int, bool]]:
    """Sentence ranges (start, end, opens_paragraph) covering the non-blank text, in order, without edge spaces."""
    units: list[tuple[int, int, bool]] = []
    pos, new_paragraph = 0, True
    for m in _BREAK.finditer(text):
        if text[pos : m.start()].strip():
            units.append((pos, m.start(), new_paragraph))
            new_paragraph = False
        pos = m.end()
        if m.group("para") is not None or m.group("item") is not None:
            new_paragraph = True
    units.append((pos, len(text), new_paragraph))
    result = []
    for start, end, para in units:
        while start < end and text[start].isspace():
            start += 1
        end = _rstrip_end(text, start, end)
        if end > start:
            result.append((start, end, para))
    return result


def _rstrip_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


class Chunker:
    """Packs sentences into chunks of at most `max_tokens` embedder tokens, with sentence overlap.

    `token_offsets(text)` returns the character span of every token of `text` (no special tokens), e.g. a fast
    tokenizer's offset mapping. The text is tokenized once; every count is read off those offsets.
    """

    def __init__(self, token_offsets: TokenOffsets, config: ChunkerConfig | None = None):
        self.token_offsets = token_offsets
        self.config = ChunkerConfig() if config is None else config

    def chunk(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        offsets = self.token_offsets(text)
        token_starts = [s for s, _ in offsets]
        token_ends = [e for _, e in offsets]

        def count(start: int, end: int) -> int:
            return bisect.bisect_left(token_starts, end) - bisect.bisect_left(token_ends, start + 1)

        units: list[_Unit] = []
        for start, end, para in split_units(text):
            units.extend(self._fit(text, start, end, para, count, token_starts))
        return self._pack(text, units, count)

    def _fit(self, text, start, end, opens_paragraph, count, token_starts) -> list[_Unit]:
        """Split a sentence longer than max_tokens at token boundaries (preferring white space)."""
        n = count(start, end)
        limit = self.config.max_tokens
        if n <= limit:
            return [_Unit(start, end, n, opens_paragraph)]
        pieces = []
        while start < end:
            first = bisect.bisect_left(token_starts, start)
            cut_token = first + limit
            if cut_token >= len(token_starts) or token_starts[cut_token] >= end:
                cut = end
            else:
                cut = token_starts[cut_token]
                space = text.rfind(" ", start, cut)
                if space > start and count(start, space) >= limit // 2:
                    cut = space
            piece_end = _rstrip_end(text, start, cut)
            pieces.append(_Unit(start, piece_end, count(start, piece_end), opens_paragraph and not pieces))
            start = cut
            while start < end and text[start].isspace():
                start += 1
        return pieces

    def _pack(self, text: str, units: list[_Unit], count) -> list[Chunk]:
        cfg = self.config
        chunks: list[Chunk] = []
        i = 0
        while i < len(units):
            j, total = i, 0
            while j < len(units):
                span_tokens = count(units[i].start, units[j].end)
                if j > i and span_tokens > cfg.max_tokens:
                    break
                if j > i and units[j].opens_paragraph and total >= cfg.min_tokens:
                    # Prefer to end at a paragraph break unless the whole next paragraph would still fit.
                    k = j
                    while k + 1 < len(units) and not units[k + 1].opens_paragraph:
                        k += 1
                    if count(units[i].start, units[k].end) > cfg.max_tokens:
                        break
                total = span_tokens
                j += 1
            start, end = units[i].start, units[j - 1].end
            chunks.append(Chunk(text[start:end], start, end, total))
            if j >= len(units):
                break
            # Overlap: step back over trailing sentences of this chunk that fit in the overlap budget.
            back = j
            while back - 1 > i and count(units[back - 1].start, units[j - 1].end) <= cfg.overlap_tokens:
                back -= 1
            i = back if back < j else j
        return chunks


def tokenizer_offsets(tokenizer) -> TokenOffsets:
    """Adapter: a Hugging Face fast tokenizer → `token_offsets` for Chunker."""

    def offsets(text: str) -> list[tuple[int, int]]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
        return [tuple(o) for o in enc["offset_mapping"]]

    return offsets
