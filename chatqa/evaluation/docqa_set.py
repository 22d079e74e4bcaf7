"""The doc-QA set format (dev and calibration sets, finetune/data/docqa/README.md): loading, validating, and finding
its documents."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from knowledge.errors import ChatQAError

KINDS: tuple[str, ...] = ("how-to", "why", "factoid", "list", "yes-no", "unanswerable")
BUILD_HINT = "python finetune/data/docqa/build_docs.py [--set calibration] DIR"


def load_docqa_set(path: str | Path) -> dict:
    """The dev set in `path`, checked for the fields the evaluation needs. Raises ChatQAError naming the bad item."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChatQAError(f"{path}: no such file") from None
    except ValueError as e:
        raise ChatQAError(f"{path}: not valid JSON ({e})") from None
    try:
        check_docqa_set(data)
    except (KeyError, TypeError, ValueError) as e:
        raise ChatQAError(f"{path}: not a doc-QA set ({e}); see finetune/data/docqa/README.md") from None
    return data


def check_docqa_set(data: dict) -> None:
    """Raise ValueError (or KeyError/TypeError) when the set's structure is wrong."""
    names = {d["name"] for d in data["documents"]}
    for d in data["documents"]:
        for key in ("name", "sha256"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise ValueError(f"document {d.get('name')!r} needs a {key}")
    ids = set()
    for item in all_items(data):
        where = item.get("id", "?")
        if where in ids:
            raise ValueError(f"item id {where!r} is used twice")
        ids.add(where)
        if not str(item.get("question", "")).strip():
            raise ValueError(f"item {where!r} has no question")
        if item.get("kind") not in KINDS:
            raise ValueError(f"item {where!r} has kind {item.get('kind')!r}; use one of {', '.join(KINDS)}")
        if item.get("document") not in names:
            raise ValueError(f"item {where!r} names document {item.get('document')!r}, which is not listed")
        if item["kind"] == "unanswerable":
            if item.get("answer"):
                raise ValueError(f"unanswerable item {where!r} has an answer")
        elif not item.get("answer") or not item.get("reference") or not isinstance(item.get("answer_start"), int):
            raise ValueError(f"answerable item {where!r} needs an answer, its answer_start and a reference")
    for c in data["conversations"]:
        if not c["turns"]:
            raise ValueError(f"conversation {c.get('id')!r} has no turns")
        for turn in c["turns"][1:]:
            if not str(turn.get("standalone", "")).strip():
                raise ValueError(f"a follow-up of conversation {c.get('id')!r} has no standalone question")


def all_items(data: dict) -> Iterator[dict]:
    """Every single question, then every conversation turn (each turn with an id `<conversation id>.<turn>`)."""
    yield from data["questions"]
    for c in data["conversations"]:
        for i, turn in enumerate(c["turns"], 1):
            yield {"id": f"{c['id']}.{i}", **turn}


def document_paths(data: dict, docs_dir: str | Path) -> dict[str, Path]:
    """Each document's file in `docs_dir`, after checking that it is there with the recorded sha256."""
    docs_dir = Path(docs_dir)
    paths = {}
    for d in data["documents"]:
        path = docs_dir / d["name"]
        if not path.is_file():
            raise ChatQAError(f"{path}: missing; build the documents with `{BUILD_HINT}` and pass --docs DIR")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != d["sha256"]:
            raise ChatQAError(
                f"{path}: sha256 {digest[:12]}… is not the recorded {d['sha256'][:12]}…; the gold answers hold for "
                f"that exact file only; rebuild it with `{BUILD_HINT}`"
            )
        paths[d["name"]] = path
    return paths
