"""Tabular and structured data: CSV/TSV rows and JSON/JSONL values, written as 'name: value' lines.

A row (or a JSON record) becomes one block of lines, so a passage keeps each value next to its column name or key
path; pages are ranges of ROWS_PER_PAGE rows or records, each also a section titled with its range.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence

from knowledge.errors import CorruptDocument

from .common import Loaded, Section, decode, first_line, paged

ROWS_PER_PAGE = 50
_JSON_MAX_VALUES = 2_000_000  # scalar values walked in one file


def record_lines(rows: Iterable[Sequence[object]]) -> list[str]:
    """The first non-empty row is the header; each later row becomes 'header: value' lines (empty cells left
    out, cells beyond the header named 'column N'). A table with a single row is given as that row."""
    header: list[str] | None = None
    records = []
    for row in rows:
        cells = ["" if v is None else _cell(v) for v in row]
        if not any(cells):
            continue
        if header is None:
            header = cells
            continue
        lines = []
        for i, value in enumerate(cells):
            if value:
                key = header[i] if i < len(header) and header[i] else f"column {i + 1}"
                lines.append(f"{key}: {value}")
        records.append("\n".join(lines))
    if header is not None and not records:
        return [" | ".join(c for c in header if c)]
    return records


def _cell(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        value = int(value)
    return " ".join(str(value).split())


def _pages_of(records: list[str], unit: str) -> Loaded:
    starts = range(0, len(records), ROWS_PER_PAGE)
    groups = [records[i : i + ROWS_PER_PAGE] for i in starts]
    text, pages = paged(["\n\n".join(g) for g in groups])
    sections = tuple(
        Section(f"{unit} {first + 1}–{first + len(group)}", page.start, page.end)
        for first, group, page in zip(starts, groups, pages, strict=True)
    )
    return Loaded(text, pages=pages, sections=sections)


def load_csv(data: bytes, name: str, *, delimiter: str | None = None) -> Loaded:
    """Comma-separated values (the delimiter sniffed among , ; | and tab unless given); `.tsv` is tab-separated.
    Pages are ranges of ROWS_PER_PAGE data rows, sections titled 'rows 1–50'."""
    text = decode(data, name)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:16384], delimiters=",;|\t").delimiter
        except csv.Error:
            delimiter = ","
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False))
    except csv.Error as e:
        raise CorruptDocument(name, f"is not valid CSV ({first_line(e)})") from None
    return _pages_of(record_lines(rows), "rows")


def load_tsv(data: bytes, name: str) -> Loaded:
    return load_csv(data, name, delimiter="\t")


def load_json(data: bytes, name: str) -> Loaded:
    """Every string, number and true/false value on a line of its own after its key path ('items[2].name: …'). A
    top-level list gives a record per item, an object a record per key; pages are ranges of ROWS_PER_PAGE
    records."""
    try:
        value = json.loads(decode(data, name))
    except json.JSONDecodeError as e:
        raise CorruptDocument(name, f"is not valid JSON ({first_line(e)})") from None
    if isinstance(value, list):
        parts = [(f"[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        parts = [(_key("", k), v) for k, v in value.items()]
    else:
        parts = [("", value)]
    budget = [_JSON_MAX_VALUES]
    records = [r for r in ("\n".join(_flatten(path, v, name, budget)) for path, v in parts) if r]
    return _pages_of(records, "records")


def load_jsonl(data: bytes, name: str) -> Loaded:
    """JSON Lines: a record per line (its values after their key paths within the line); blank lines skipped.
    Pages are ranges of ROWS_PER_PAGE lines' records."""
    records = []
    budget = [_JSON_MAX_VALUES]
    for number, line in enumerate(decode(data, name).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorruptDocument(name, f"line {number} is not valid JSON ({first_line(e)})") from None
        if record := "\n".join(_flatten("", value, name, budget)):
            records.append(record)
    return _pages_of(records, "records")


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _flatten(path: str, value: object, name: str, budget: list[int]) -> list[str]:
    """'path: value' lines for the scalars under `value`, depth first, without recursion."""
    lines: list[str] = []
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        at, item = stack.pop()
        if isinstance(item, dict):
            stack.extend(reversed([(_key(at, k), v) for k, v in item.items()]))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{at}[{i}]", v) for i, v in enumerate(item)]))
        elif item is None or item == "":
            continue
        else:
            budget[0] -= 1
            if budget[0] < 0:
                raise CorruptDocument(name, f"has more than {_JSON_MAX_VALUES:,} values; split it into smaller files")
            text = ("true" if item else "false") if isinstance(item, bool) else str(item).strip()
            lines.append(f"{at}: {text}" if at else text)
    return lines
