from __future__ import annotations

import argparse
import json

import pytest

import knowledge.base
from chatqa.cli import build_parser, main
from tests.conftest import REPO, FakeEmbedder

SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "Eiffel_Tower",
            "paragraphs": [
                {
                    "context": "The Eiffel Tower is in Paris. It was designed by the company of Gustave Eiffel.",
                    "qas": [{"id": "q1", "question": "Who designed the Eiffel Tower?",
                             "answers": [{"text": "Gustave Eiffel", "answer_start": 64}]}],
                },
                {
                    "context": "The tower was built from 1887 to 1889 for the World's Fair.",
                    "qas": [{"id": "q2", "question": "When was the tower built?",
                             "answers": [{"text": "1887 to 1889", "answer_start": 25}]}],
                },
            ],
        },
        {
            "title": "Penguin",
            "paragraphs": [
                {
                    "context": "Penguins are flightless birds of the Southern Hemisphere.",
                    "qas": [{"id": "q3", "question": "Where do penguins live?",
                             "answers": [{"text": "Southern Hemisphere", "answer_start": 37}]},
                            {"id": "q4", "question": "Is it raining?", "answers": [], "is_impossible": True}],
                }
            ],
        },
    ],
}


@pytest.fixture(autouse=True)
def fake_models(monkeypatch):
    monkeypatch.setattr(knowledge.base, "Embedder", FakeEmbedder)


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "data")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "eiffel.txt").write_text("The Eiffel Tower was designed by the company of Gustave Eiffel.")
    (tmp_path / "junk.txt").write_bytes(bytes(range(256)) * 4)
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_kb_add_list_search_remove(capsys, data_dir, files):
    code, out, err = run(capsys, "kb", "add", str(files / "eiffel.txt"), str(files / "junk.txt"), "--data-dir", data_dir, "-q")
    assert code == 1  # one file failed
    assert "added     [1] eiffel.txt" in out and "1 added, 0 unchanged, 1 failed" in out
    assert err.strip().splitlines() == [err.strip().splitlines()[0]]  # one line, no traceback
    assert err.startswith("error: junk.txt: ") and "Traceback" not in err

    code, out, _ = run(capsys, "kb", "list", "--data-dir", data_dir)
    assert code == 0 and "eiffel.txt" in out
    code, out, _ = run(capsys, "kb", "list", "--json", "--data-dir", data_dir)
    assert [d["name"] for d in json.loads(out)] == ["eiffel.txt"]

    code, out, _ = run(capsys, "kb", "search", "Who designed the tower?", "--k", "2", "--json", "--data-dir", data_dir)
    hits = json.loads(out)
    assert code == 0 and hits[0]["doc_name"] == "eiffel.txt" and "Gustave Eiffel" in hits[0]["text"]
    code, out, _ = run(capsys, "kb", "search", "Gustave", "--mode", "bm25", "--data-dir", data_dir)
    assert code == 0 and out.startswith("1. [eiffel.txt]")

    code, out, _ = run(capsys, "kb", "reindex", "--data-dir", data_dir)
    assert code == 0 and out.strip() == "re-indexed: 1 chunks"
    code, out, _ = run(capsys, "kb", "remove", "1", "--data-dir", data_dir)
    assert code == 0 and out.startswith("removed [1] eiffel.txt")
    code, out, _ = run(capsys, "kb", "list", "--data-dir", data_dir)
    assert "empty" in out


def test_unknown_id_and_missing_path_are_one_line_errors(capsys, data_dir, tmp_path):
    code, out, err = run(capsys, "kb", "add", str(tmp_path / "nope.pdf"), "--data-dir", data_dir, "-q")
    assert code == 1 and err.startswith("error: ") and "nope.pdf" in err and "Traceback" not in err
    code, out, err = run(capsys, "kb", "remove", "99", "--data-dir", data_dir)
    assert code == 1 and err == "error: no document with id 99 in the knowledge base (see `chatqa kb list`)\n"


def test_kb_add_lists_each_skip_and_takes_a_size_limit(capsys, data_dir, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "manual.rst").write_text("Manual\n======\n\nPress the red button.")
    (folder / "big.txt").write_text("word " * 300_000)  # 1.4 MB
    (folder / ".cache").write_text("hidden")
    (folder / "logo.svg").write_text("<svg/>")
    code, out, err = run(capsys, "kb", "add", str(folder), "--max-file-mb", "1", "--data-dir", data_dir, "-q")
    assert code == 0 and err == ""  # skips are not failures
    lines = out.splitlines()
    assert lines[0] == "added     [1] manual.rst (1 chunks)"
    assert lines[1] == f"skipped   {folder / '.cache'}: hidden file"
    assert lines[2].startswith(f"skipped   {folder / 'big.txt'}: too large: is 1.4 MB, larger than the 1.0 MB limit")
    assert lines[3].startswith(f"skipped   {folder / 'logo.svg'}: unsupported type '.svg'")
    assert lines[4] == "1 added, 0 unchanged, 0 failed, 3 skipped"
    code, out, _ = run(capsys, "kb", "add", str(folder / "big.txt"), "--max-file-mb", "1.5", "--data-dir", data_dir, "-q")
    assert code == 0 and out.startswith("added     [2] big.txt")
    with pytest.raises(SystemExit):
        main(["kb", "add", str(folder), "--max-file-mb", "0"])
    assert "--max-file-mb: must be a positive number of megabytes, got 0" in capsys.readouterr().err


def test_max_file_mb_from_the_environment(monkeypatch):
    from knowledge.base import KnowledgeBase
    from knowledge.errors import ChatQAError

    monkeypatch.setenv("CHATQA_MAX_FILE_MB", "2.5")
    assert KnowledgeBase("unused").max_file_bytes == int(2.5 * 1024 * 1024)
    assert KnowledgeBase("unused", max_file_bytes=10).max_file_bytes == 10
    monkeypatch.setenv("CHATQA_MAX_FILE_MB", "lots")
    with pytest.raises(ChatQAError, match="CHATQA_MAX_FILE_MB must be a positive number of megabytes, got 'lots'"):
        KnowledgeBase("unused")


def test_data_dir_from_environment(capsys, monkeypatch, tmp_path, files):
    monkeypatch.setenv("CHATQA_DATA_DIR", str(tmp_path / "env-data"))
    code, _, _ = run(capsys, "kb", "add", str(files / "eiffel.txt"), "-q")
    assert code == 0 and (tmp_path / "env-data" / "chatqa.db").exists()


def test_eval_retrieval_json(capsys, tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(SQUAD))
    code, out, _ = run(capsys, "eval", "retrieval", "--squad", str(path), "--k", "1,2", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["questions"] == 3 and report["documents"] == 2 and report["chunks"] == 2  # q4 is unanswerable
    assert report["recall@1"] == pytest.approx(1.0) and report["recall@2"] == pytest.approx(1.0)
    assert {"seconds", "mode"} <= report.keys()


def test_eval_retrieval_bad_file(capsys, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(capsys, "eval", "retrieval", "--squad", str(tmp_path / "bad.json"))
    assert code == 1 and "not valid JSON" in err
    code, _, err = run(capsys, "eval", "retrieval", "--squad", str(tmp_path / "bad.json"), "--k", "0,5")
    assert code == 1 and "positive integers" in err


def _leaf_commands(parser: argparse.ArgumentParser, prefix: str = "chatqa"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_commands(sub, f"{prefix} {name}")
            return
    yield prefix, parser


def test_every_command_has_help_and_is_in_the_readme(capsys):
    readme = (REPO / "README.md").read_text()
    commands = list(_leaf_commands(build_parser()))
    assert len(commands) >= 6
    for command, parser in commands:
        assert parser.description or parser.format_help()
        assert f"`{command}" in readme, f"{command} is not documented in README.md"
        with pytest.raises(SystemExit) as exit_info:
            main(command.split()[1:] + ["--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out
