"""The doc-QA dev and calibration sets (finetune/data/docqa/): their structure and counts, their gold answers against
the built documents, that they share no document, and the script that builds them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from chatqa.evaluation import KINDS, all_items, load_docqa_set
from knowledge.loaders import SUPPORTED_SUFFIXES, load_document
from tests.conftest import REPO

DOCQA = REPO / "finetune" / "data" / "docqa"
DEV_SET = DOCQA / "docqa-dev.json"
CALIBRATION_SET = DOCQA / "docqa-calibration.json"


@pytest.fixture(scope="module")
def devset() -> dict:
    return load_docqa_set(DEV_SET)  # also runs the format checks of chatqa.evaluation.docqa_set


@pytest.fixture(scope="module")
def calibration() -> dict:
    return load_docqa_set(CALIBRATION_SET)


def _build_docs_module():
    spec = importlib.util.spec_from_file_location("build_docs", DOCQA / "build_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_and_kinds(devset):
    questions = devset["questions"]
    kinds = Counter(q["kind"] for q in questions)
    assert len(questions) >= 60
    assert kinds["unanswerable"] >= 8
    assert set(kinds) == set(KINDS), f"kinds present: {sorted(kinds)}"
    assert kinds["how-to"] >= 0.4 * len(questions)  # about half are "How do I …?"
    conversations = devset["conversations"]
    assert len(conversations) >= 8
    assert all(3 <= len(c["turns"]) <= 4 for c in conversations)


def test_every_item_is_complete(devset):
    items = list(all_items(devset))
    assert len({item["id"] for item in items}) == len(items)
    assert len({q["question"].lower() for q in devset["questions"]}) == len(devset["questions"])
    for item in items:
        if item["kind"] == "unanswerable":
            assert item["answer"] == "" and item["answer_start"] is None, item["id"]
        else:
            assert item["answer"].strip() and isinstance(item["answer_start"], int), item["id"]
            assert item["reference"].strip().endswith((".", "?", "!")), item["id"]  # one sentence, as a person says it
    for c in devset["conversations"]:
        for turn in c["turns"]:
            assert turn["standalone"].strip(), c["id"]
        follow_ups = c["turns"][1:]
        assert all(t["standalone"] != t["question"] for t in follow_ups), f"{c['id']}: a follow-up that needs no history"


def test_documents_are_recorded_with_their_origin(devset):
    documents = devset["documents"]
    assert 3 <= len(documents) <= 5
    suffixes = {Path(d["name"]).suffix for d in documents}
    assert suffixes <= set(SUPPORTED_SUFFIXES)
    assert ".pdf" in suffixes and suffixes & {".html", ".md", ".txt"}
    for d in documents:
        assert re.fullmatch(r"[0-9a-f]{64}", d["sha256"]), d["name"]
        assert d["source"] in ("pypi", "debian") and d["package"] and d["version"] and d["path"] and d["licence"]
    used = Counter(item["document"] for item in all_items(devset))
    assert all(used[d["name"]] >= 8 for d in documents), used


def _built_docs(variable: str = "CHATQA_DOCQA_DOCS", default: str = "docqa-docs", build_args: str = "") -> Path:
    folder = Path(os.environ.get(variable, REPO / default))
    if not folder.is_dir():
        pytest.skip(f"the documents are not built at {folder}: run python finetune/data/docqa/build_docs.py"
                    f"{build_args} (or set {variable} to where they are)")
    return folder


def _check_gold_answers(docqa_set: dict, folder: Path) -> int:
    """Assert that every gold answer sits at its answer_start in the text the loaders extract; returns how many."""
    texts = {}
    for d in docqa_set["documents"]:
        path = folder / d["name"]
        assert path.is_file(), f"{path} is missing: build the documents again"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == d["sha256"], f"{path} is not the recorded file"
        texts[d["name"]] = load_document(path).text  # as the knowledge base loads it
    checked = 0
    for item in all_items(docqa_set):
        if item["kind"] == "unanswerable":
            continue
        text, answer, start = texts[item["document"]], item["answer"], item["answer_start"]
        assert answer in text, item["id"]
        assert text[start : start + len(answer)] == answer, f"{item['id']}: not at answer_start {start}"
        checked += 1
    return checked


def test_gold_answers_are_exact_substrings_of_the_extracted_text(devset):
    assert _check_gold_answers(devset, _built_docs()) >= 52


# --- the calibration set: for fitting the abstention policy, so that the dev set stays a clean test set ---


def test_calibration_set_counts_and_kinds(calibration):
    questions = calibration["questions"]
    kinds = Counter(q["kind"] for q in questions)
    answerable = len(questions) - kinds["unanswerable"]
    assert answerable >= 50 and kinds["unanswerable"] >= 30, kinds
    assert set(kinds) == set(KINDS), f"kinds present: {sorted(kinds)}"
    assert kinds["how-to"] >= 0.4 * answerable  # mostly "How do I …?", as in the dev set
    assert len({q["question"].lower() for q in questions}) == len(questions)
    for q in questions:
        if q["kind"] == "unanswerable":
            assert q["answer"] == "" and q["answer_start"] is None, q["id"]
        else:
            assert q["answer"].strip() and isinstance(q["answer_start"], int), q["id"]
            assert q["reference"].strip().endswith((".", "?", "!")), q["id"]
    used = Counter((q["document"], q["kind"] == "unanswerable") for q in questions)
    for d in calibration["documents"]:  # every document has answerable and unanswerable questions
        assert used[d["name"], False] >= 8 and used[d["name"], True] >= 5, (d["name"], used)


def test_calibration_documents_are_recorded_with_their_origin(calibration):
    documents = calibration["documents"]
    assert 3 <= len(documents) <= 5
    suffixes = {Path(d["name"]).suffix for d in documents}
    assert suffixes <= set(SUPPORTED_SUFFIXES) and ".pdf" in suffixes
    for d in documents:
        assert re.fullmatch(r"[0-9a-f]{64}", d["sha256"]), d["name"]
        assert d["source"] in ("pypi", "debian") and d["package"] and d["version"] and d["path"] and d["licence"]


def test_calibration_set_shares_nothing_with_the_dev_set(calibration, devset):
    def origins(s: dict) -> set:
        return {(d["package"], d["path"]) for d in s["documents"]}

    assert not {d["name"] for d in calibration["documents"]} & {d["name"] for d in devset["documents"]}
    assert not {d["sha256"] for d in calibration["documents"]} & {d["sha256"] for d in devset["documents"]}
    assert not origins(calibration) & origins(devset)
    assert not {d["package"] for d in calibration["documents"]} & {d["package"] for d in devset["documents"]}
    assert not {q["question"].lower() for q in calibration["questions"]} & {q["question"].lower() for q in devset["questions"]}
    ids = {item["id"] for item in all_items(devset)}
    assert not ids & {q["id"] for q in calibration["questions"]}  # decision logs can name a question unambiguously


def test_calibration_gold_answers_are_exact_substrings_of_the_extracted_text(calibration):
    folder = _built_docs("CHATQA_DOCQA_CALIBRATION_DOCS", "docqa-calibration-docs", " --set calibration")
    assert _check_gold_answers(calibration, folder) >= 50


def test_build_docs_keeps_a_good_file_and_refuses_a_wrong_one(tmp_path, monkeypatch):
    build_docs = _build_docs_module()
    good, bad = b"The manual.\n", b"Another manual.\n"
    dev_set = tmp_path / "set.json"
    dev_set.write_text(json.dumps({"documents": [
        {"name": "manual.txt", "source": "pypi", "package": "pkg", "version": "1.0", "path": "doc/manual.txt",
         "sha256": hashlib.sha256(good).hexdigest()},
    ]}))
    out = tmp_path / "docs"
    fetched = []
    monkeypatch.setitem(build_docs.FETCHERS, "pypi", lambda doc, tmp: fetched.append(doc["name"]) or bad)
    with pytest.raises(build_docs.BuildError, match="has sha256"):
        build_docs.build(out, dev_set)
    assert not (out / "manual.txt").exists() and list(out.iterdir()) == []  # nothing half-written

    monkeypatch.setitem(build_docs.FETCHERS, "pypi", lambda doc, tmp: fetched.append(doc["name"]) or good)
    assert build_docs.build(out, dev_set) == {"manual.txt": "written"}
    assert (out / "manual.txt").read_bytes() == good
    assert build_docs.build(out, dev_set) == {"manual.txt": "present"}  # idempotent: not fetched again
    assert fetched == ["manual.txt", "manual.txt"]


def test_build_docs_chooses_the_set_and_a_separate_folder_for_each(tmp_path, monkeypatch):
    build_docs = _build_docs_module()
    assert build_docs.resolve_set("dev") == DEV_SET and build_docs.resolve_set("calibration") == CALIBRATION_SET
    assert build_docs.default_out(DEV_SET) == Path("docqa-docs")
    assert build_docs.default_out(CALIBRATION_SET) == Path("docqa-calibration-docs")  # its own kb/ for eval docs
    names = [d["name"] for d in build_docs.load_documents(CALIBRATION_SET)]
    assert names == [d["name"] for d in load_docqa_set(CALIBRATION_SET)["documents"]]

    built = []
    monkeypatch.setattr(build_docs, "build", lambda out, docqa_set: built.append((out, docqa_set)) or {})
    monkeypatch.chdir(tmp_path)
    assert build_docs.main(["--set", "calibration"]) == 0
    assert build_docs.main([str(tmp_path / "elsewhere")]) == 0
    assert built == [(Path("docqa-calibration-docs"), CALIBRATION_SET), (tmp_path / "elsewhere", DEV_SET)]
    assert build_docs.main(["--set", str(tmp_path / "missing.json")]) == 2 and len(built) == 2
