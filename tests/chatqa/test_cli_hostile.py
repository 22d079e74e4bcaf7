"""The command line against hostile or mistaken input (issue #20): huge numbers, escape sequences in documents and
file names, a folder as export target, rejected questions, unknown conversations and mistyped data directories."""

from __future__ import annotations

import json

import pytest

import chatqa.engine
import knowledge.base
from chatqa.cli import main
from chatqa.log import ConversationLog
from tests.chatqa.test_engine import EIFFEL, FakeReader
from tests.conftest import FakeEmbedder

ESCAPES = "\033[2J\033]0;PWNED\007"


@pytest.fixture(autouse=True)
def fake_models(monkeypatch):
    monkeypatch.setattr(knowledge.base, "Embedder", FakeEmbedder)
    monkeypatch.setattr(chatqa.engine, "ExtractiveReader", lambda *_, **__: FakeReader())


@pytest.fixture
def data_dir(tmp_path, capsys):
    """A data directory holding the Eiffel Tower document."""
    (tmp_path / "eiffel.txt").write_text(EIFFEL)
    assert main(["kb", "add", str(tmp_path / "eiffel.txt"), "--data-dir", str(tmp_path / "data"), "-q"]) == 0
    assert "added     [1] eiffel.txt" in capsys.readouterr().out
    return tmp_path / "data"


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len("error: ") : -1]


def raw_controls(text: str) -> list[str]:
    """Control and bidi-override characters other than newline, as a terminal would receive them."""
    return [c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]


# -- D5: numbers too large for SQLite ---------------------------------------------------------------------------------
def test_huge_ids_and_k_are_one_line_errors(capsys, data_dir):
    code, _, err = run(capsys, "kb", "remove", "99999999999999999999999", "--data-dir", data_dir)
    assert code == 1
    assert one_line_error(err) == (
        "no document with id 99999999999999999999999 in the knowledge base (see `chatqa kb list`)"
    )
    code, _, err = run(capsys, "kb", "search", "x", "--k", "99999999999999999999", "--data-dir", data_dir)
    assert code == 2 and "--k" in one_line_error(err) and "between 1 and 1000" in err
    code, _, err = run(capsys, "ask", "When was it built?", "--k", "99999999999999999999", "--data-dir", data_dir)
    assert code == 2 and "between 1 and 50" in one_line_error(err)
    code, _, err = run(capsys, "eval", "retrieval", "--squad", data_dir / "x.json", "--k", "1,five")
    assert code == 1 and "positive integers" in one_line_error(err)
    code, out, _ = run(capsys, "kb", "list", "--data-dir", data_dir)
    assert code == 0 and "eiffel.txt" in out  # nothing lost


# -- D6: what documents and file names contain is shown, never obeyed by the terminal ---------------------------------
def test_terminal_safe_escapes_controls_and_bidi_overrides_only():
    from chatqa.terminal import json_safe, terminal_safe

    assert terminal_safe("café naïve 東京タワー — ok") == "café naïve 東京タワー — ok"
    assert terminal_safe(ESCAPES) == "\\x1b[2J\\x1b]0;PWNED\\x07"
    assert terminal_safe("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert terminal_safe("line\nbreak", newlines=True) == "line\nbreak"
    assert terminal_safe("evil\u202etxt.exe \x9b \x7f") == "evil\\u202etxt.exe \\x9b \\x7f"
    assert json_safe('{"name": "a\u202eb\x85"}') == '{"name": "a\\u202eb\\u0085"}'
    assert json.loads(json_safe(json.dumps({"n": "a\u202eb\x85\x1b"}, ensure_ascii=False))) == {"n": "a\u202eb\x85\x1b"}


def test_escape_sequences_in_documents_and_names_are_shown_escaped(capsys, tmp_path, data_dir):
    evil = tmp_path / "evil\nname\u202etxt.txt"
    evil.write_text(f"The launch code is {ESCAPES} PELICAN-42. Penguins guard it.\nSecond line here.")
    code, out, err = run(capsys, "kb", "add", evil, "--data-dir", data_dir, "-q")
    assert code == 0 and raw_controls(out + err) == []
    assert "evil\\nname\\u202etxt.txt" in out

    code, out, _ = run(capsys, "kb", "list", "--data-dir", data_dir)
    assert code == 0 and raw_controls(out) == []
    assert out.count("\n") == 3  # header + two documents: the newline in the name does not break the table
    assert out.splitlines()[-1].endswith(" evil\\nname\\u202etxt.txt")

    code, out, _ = run(capsys, "kb", "list", "--json", "--data-dir", data_dir)
    assert raw_controls(out.replace("\n", "")) == [] and json.loads(out)[1]["name"] == evil.name

    code, out, _ = run(capsys, "kb", "search", "launch code PELICAN", "--data-dir", data_dir)
    assert code == 0 and raw_controls(out) == []
    assert "The launch code is \\x1b[2J\\x1b]0;PWNED\\x07 PELICAN-42. Penguins guard it. Second line here." in out

    code, out, _ = run(capsys, "kb", "search", "launch code PELICAN", "--json", "--data-dir", data_dir)
    assert raw_controls(out.replace("\n", "")) == [] and ESCAPES in json.loads(out)[0]["text"]

    code, out, err = run(capsys, "ask", "What is the launch code?", "--mode", "extractive", "--data-dir", data_dir)
    assert code == 0 and raw_controls(out + err) == []
    assert "evil\\nname\\u202etxt.txt" in out and "\\x1b[2J" in out

    code, _, err = run(capsys, "kb", "add", tmp_path / f"missing{ESCAPES}.pdf", "--data-dir", data_dir, "-q")
    assert code == 1 and raw_controls(err) == [] and "missing\\x1b[2J" in err


# -- D7: a folder as the export target --------------------------------------------------------------------------------
def test_export_to_a_folder_is_a_one_line_error(capsys, tmp_path, data_dir):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "old.json").write_text("keep")
    code, _, err = run(capsys, "export", "--format", "squad", "--out", folder, "--data-dir", data_dir)
    assert code == 1
    assert one_line_error(err).startswith(f"{folder} is a folder; --out needs a file name")
    assert [p.name for p in folder.iterdir()] == ["old.json"] and (folder / "old.json").read_text() == "keep"
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    code, _, err = run(capsys, "export", "--format", "chat", "--out", blocked / "out.jsonl", "--data-dir", data_dir)
    assert code == 1 and one_line_error(err).startswith(f"could not write {blocked / 'out.jsonl'}: ")


# -- D9: rejected questions log nothing; an unknown conversation is an error ------------------------------------------
def test_rejected_questions_leave_nothing_in_the_log(capsys, data_dir):
    for question in ("", "   ", "x" * 2001):
        code, out, err = run(capsys, "ask", question, "--mode", "extractive", "--data-dir", data_dir)
        message = one_line_error(err)
        assert code == 1 and out == ""
        assert message == "Please type a question." or message.startswith("That question is 2,001 characters long")
    with ConversationLog(data_dir) as log:
        assert log.conversations() == []


def test_unknown_conversation_is_an_error_that_says_how_to_list_them(capsys, data_dir):
    code, out, err = run(capsys, "ask", "When was the tower built?", "--conversation", "deadbeef", "--mode",
                         "extractive", "--data-dir", data_dir)
    assert code == 1 and out == ""
    assert one_line_error(err) == (
        "no conversation with id 'deadbeef' in the conversation log; list them with `chatqa conversations`"
    )
    with ConversationLog(data_dir) as log:
        assert log.conversations() == []


def test_conversations_lists_and_continues(capsys, data_dir):
    code, out, _ = run(capsys, "conversations", "--data-dir", data_dir)
    assert code == 0 and out == "No conversations yet. Ask one with `chatqa ask QUESTION`.\n"
    code, out, _ = run(capsys, "ask", "When was the Eiffel Tower built?", "--mode", "extractive", "--data-dir", data_dir)
    assert code == 0 and "1887 to 1889" in out
    conversation = out.strip().splitlines()[-1].split("--conversation ")[1].rstrip(")")
    code, out, _ = run(capsys, "ask", "Who designed it?", "--conversation", conversation, "--mode", "extractive",
                       "--data-dir", data_dir)
    assert code == 0 and "Gustave Eiffel" in out

    code, out, _ = run(capsys, "conversations", "--data-dir", data_dir)
    header, row = out.splitlines()
    assert header.split() == ["id", "turns", "updated", "title"]
    assert row.startswith(conversation) and " 2 " in row and row.endswith("When was the Eiffel Tower built?")
    code, out, _ = run(capsys, "conversations", "--json", "--data-dir", data_dir)
    [listed] = json.loads(out)
    assert listed["id"] == conversation and listed["n_turns"] == 2
    assert listed["title"] == "When was the Eiffel Tower built?"


def test_chat_logs_nothing_for_rejected_questions(capsys, monkeypatch, data_dir):
    lines = iter(["x" * 2001, "/new", "x" * 3000, ""])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(lines))
    code, out, _ = run(capsys, "chat", "--mode", "extractive", "--data-dir", data_dir)
    assert code == 0 and out.count("error: That question is") == 2
    with ConversationLog(data_dir) as log:
        assert log.conversations() == []

    lines = iter(["When was the Eiffel Tower built?", "Who designed it?", ""])
    code, out, _ = run(capsys, "chat", "--mode", "extractive", "--data-dir", data_dir)
    assert code == 0 and "1887 to 1889" in out and "Gustave Eiffel" in out
    with ConversationLog(data_dir) as log:
        assert [c.n_turns for c in log.conversations()] == [2]


# -- D10: a mistyped --data-dir ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["kb", "list"],
        ["kb", "search", "tower"],
        ["kb", "remove", "1"],
        ["kb", "reindex"],
        ["export", "--format", "squad", "--out", "OUT"],
        ["conversations"],
        ["ask", "When was it built?", "--conversation", "abc"],
    ],
)
def test_commands_that_only_read_refuse_a_missing_data_dir(capsys, tmp_path, argv):
    missing = tmp_path / "chatqa-dta"
    argv = [str(tmp_path / "out.json") if a == "OUT" else a for a in argv]
    code, out, err = run(capsys, *argv, "--data-dir", missing)
    assert code == 1 and out == ""
    assert one_line_error(err) == (
        f"no ChatQA data directory at {missing} (check --data-dir or $CHATQA_DATA_DIR; "
        "`chatqa kb add` creates one)"
    )
    assert not missing.exists() and not (tmp_path / "out.json").exists()


def test_a_folder_without_chatqa_data_is_not_taken_for_one(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("my own files")
    code, _, err = run(capsys, "kb", "list", "--data-dir", tmp_path)
    assert code == 1 and f"no ChatQA data directory at {tmp_path}" in one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_commands_that_write_create_the_data_dir(capsys, tmp_path):
    (tmp_path / "eiffel.txt").write_text(EIFFEL)
    code, out, _ = run(capsys, "kb", "add", tmp_path / "eiffel.txt", "--data-dir", tmp_path / "new", "-q")
    assert code == 0 and (tmp_path / "new" / "chatqa.db").exists()
    code, out, err = run(capsys, "ask", "What is ChatQA?", "--mode", "extractive", "--data-dir", tmp_path / "fresh")
    assert code == 0 and (tmp_path / "fresh" / "chatqa.db").exists()
    assert err == f"note: created the data directory {tmp_path / 'fresh'}, with the bundled guide to ChatQA\n"
