from __future__ import annotations

import io
import json
import re
import stat

import pytest

from chatqa.auth import (
    AuthError,
    OpenWithoutSignIn,
    UnknownUser,
    User,
    UserStore,
    check_host,
    hash_password,
    is_loopback,
    verify_password,
)
from chatqa.cli import main


def test_password_hashes_are_salted_and_verified():
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", a) and not verify_password("correct hors", a)
    assert not verify_password("correct horse", "md5$whatever")


def test_a_users_file_holds_only_hashes_and_authenticates(tmp_path):
    path = tmp_path / "users.json"
    store = UserStore.load(path, missing_ok=True)
    store.add("alice", "alice-password-1", admin=True)
    store.add("bob", "bob-password-22")
    store.save()
    text = path.read_text()
    assert "alice-password-1" not in text and "bob-password-22" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(text)["users"]["alice"]["admin"] is True

    store = UserStore.load(path)
    assert store.authenticate("alice", "alice-password-1") == User("alice", admin=True)
    assert store.authenticate("bob", "bob-password-22") == User("bob", admin=False)
    assert store.authenticate("bob", "alice-password-1") is None  # another user's password
    assert store.authenticate("bob", "") is None
    assert store.authenticate("carol", "bob-password-22") is None
    assert store.authenticate(None, None) is None  # type: ignore[arg-type]


def test_api_keys_are_stored_hashed_and_can_be_revoked(tmp_path):
    path = tmp_path / "users.json"
    store = UserStore.load(path, missing_ok=True)
    store.add("alice", "alice-password-1")
    key = store.new_key("alice")
    store.save()
    assert key.startswith("cqa_") and key not in path.read_text()
    store = UserStore.load(path)
    assert store.user_for_key(key) == User("alice", admin=False)
    assert store.user_for_key(key + "x") is None and store.user_for_key("") is None
    [info] = store.keys("alice")
    store.revoke_key("alice", info["id"])
    assert store.user_for_key(key) is None


def test_user_rules_are_named_errors(tmp_path):
    store = UserStore(tmp_path / "users.json")
    with pytest.raises(AuthError, match="at least 8"):
        store.add("alice", "short")
    with pytest.raises(AuthError, match="user name"):
        store.add("al ice", "long enough password")
    store.add("alice", "long enough password")
    with pytest.raises(AuthError, match="exists already"):
        store.add("alice", "another password")
    with pytest.raises(UnknownUser, match="chatqa users list"):
        store.remove("bob")
    with pytest.raises(AuthError, match="no users file"):
        UserStore.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AuthError, match="cannot read the users file"):
        UserStore.load(tmp_path / "bad.json")


def test_inline_spec_and_file_spec(tmp_path):
    store = UserStore.from_spec("alice:a-password:admin, bob:b:pass")
    assert store.authenticate("alice", "a-password") == User("alice", admin=True)
    assert store.authenticate("bob", "b:pass") == User("bob", admin=False)  # a colon inside a password is kept
    with pytest.raises(AuthError, match="NAME:PASSWORD"):
        UserStore.from_spec("alice:")
    with pytest.raises(AuthError, match="no users file"):
        UserStore.from_spec(str(tmp_path / "users.json"))
    file_store = UserStore(tmp_path / "users.json")
    file_store.add("carol", "carol-password")
    file_store.save()
    assert UserStore.from_spec(str(tmp_path / "users.json")).authenticate("carol", "carol-password").name == "carol"


def test_users_commands(tmp_path, monkeypatch, capsys):
    path = tmp_path / "data" / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("alice-password-1\n"))
    assert main(["users", "add", "alice", "--admin", "--password-stdin", "--data-dir", str(tmp_path / "data")]) == 0
    assert "added admin user alice" in capsys.readouterr().out
    assert "alice-password-1" not in path.read_text()
    assert UserStore.load(path).authenticate("alice", "alice-password-1") == User("alice", admin=True)

    assert main(["users", "key", "alice", "--users-file", str(path)]) == 0
    key = capsys.readouterr().out.strip()
    assert UserStore.load(path).user_for_key(key) == User("alice", admin=True)

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "bob", "--password-stdin", "--users-file", str(path)]) == 1
    assert capsys.readouterr().err.strip() == "error: a password needs at least 8 characters"
    assert main(["users", "list", "--users-file", str(path)]) == 0
    assert capsys.readouterr().out.startswith("alice (admin)  API keys: ")
    assert main(["users", "remove", "bob", "--users-file", str(path)]) == 1
    assert "no user 'bob'" in capsys.readouterr().err


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True),
                                            ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.20", False), ("chatqa.example.org", False)])
def test_which_hosts_need_sign_in(host, loopback):
    assert is_loopback(host) is loopback
    if loopback:
        check_host(host, auth=False)
    else:
        with pytest.raises(OpenWithoutSignIn, match=f"--host {re.escape(host)} lets other machines reach ChatQA"):
            check_host(host, auth=False)
    check_host(host, auth=True)
    check_host(host, auth=False, no_auth=True)
    with pytest.raises(AuthError, match="contradict"):
        check_host(host, auth=True, no_auth=True)


def test_users_add_at_a_terminal_asks_twice(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO())
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter(["carol-password", "carol-passwort"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert main(["users", "add", "carol", "--users-file", str(path)]) == 1
    assert capsys.readouterr().err.strip() == "error: the two passwords differ; nothing was changed"
    assert not path.exists()

    def eof(prompt):
        raise EOFError

    monkeypatch.setattr("getpass.getpass", eof)
    assert main(["users", "add", "carol", "--users-file", str(path)]) == 1
    assert capsys.readouterr().err.strip() == "error: no password given; nothing was changed"
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["users", "add", "carol", "--users-file", str(path)]) == 1
    assert "--password-stdin" in capsys.readouterr().err


def test_a_running_app_sees_the_users_file_change(tmp_path):
    path = tmp_path / "users.json"
    cli = UserStore(path)
    cli.add("alice", "alice-password", admin=True)
    cli.save()
    running = UserStore.load(path)  # what the app read when it started
    other = UserStore.load(path)  # `chatqa users key alice` in another process
    key = other.new_key("alice")
    other.add("bob", "bob-password")
    other.save()
    assert running.user_for_key(key).name == "alice"
    assert running.authenticate("bob", "bob-password").name == "bob"
    other.remove("bob")
    other.revoke_key("alice", other.keys("alice")[0]["id"])
    other.save()
    assert running.user_for_key(key) is None and running.get("bob") is None
    path.write_text("{not json")  # a half-written or broken file keeps the users as they were
    assert running.authenticate("alice", "alice-password").name == "alice"
