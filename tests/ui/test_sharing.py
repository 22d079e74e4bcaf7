"""A shared app (issue #20, S2 and D8): users each see only their own conversations, only admins change what
everyone shares, an exposed address needs sign-in, and uploads are not left behind for Gradio to serve.

Handlers are called as Gradio calls them, with a ``gr.Request`` stand-in that names the signed-in user; the HTTP
checks start the real Gradio app over the fake engine on a free port.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
import pytest
from gradio.utils import get_upload_folder

import run
from chatqa.auth import OpenWithoutSignIn, UserStore
from chatqa.service import ChatService
from tests.ui.browser import free_port
from tests.ui.test_app import _is_skip
from ui.app import ChatQAApp, new_session
from ui.layout import _permissions

LAUNCH = run.launch
ALICE, BOB = SimpleNamespace(username="alice"), SimpleNamespace(username="bob")  # alice is an admin, bob is not


@pytest.fixture(scope="module")
def users() -> UserStore:
    return UserStore.from_spec("alice:alice-password:admin,bob:bob-password")


@pytest.fixture
def app(fake_engine, users):
    app = ChatQAApp(ChatService(fake_engine, users=users))
    app.ready.set()
    return app


def _ask(app, question, request, session=None):
    outputs = list(app.answer(question, session or new_session(), "extractive", 5, 0.0, request))
    return outputs[-1]


def _choices(dropdown) -> list[str]:
    return [value for _, value in dropdown.constructor_args["choices"]]


def _upload(tmp_path: Path, name: str, text: str) -> Path:
    """A file where Gradio puts an upload: its temporary folder."""
    folder = Path(get_upload_folder()) / f"chatqa-test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    path = folder / name
    path.write_text(text)
    return path


def test_each_user_sees_and_opens_only_their_own_conversations(app):
    alice = _ask(app, "When was the Eiffel Tower built?", ALICE)
    bob = _ask(app, "What do penguins eat?", BOB)
    alice_id, bob_id = alice[4]["conversation"], bob[4]["conversation"]
    assert _choices(alice[5]) == [alice_id] and _choices(bob[5]) == [bob_id]
    assert _choices(app.past_conversations(ALICE)) == [alice_id]
    assert _choices(app.past_conversations(BOB)) == [bob_id]
    assert _choices(app.new_conversation(new_session(), BOB)[3]) == [bob_id]

    # bob calls the "Open" event with alice's id: refused like an id that does not exist
    with pytest.warns(UserWarning, match=f"no conversation with id '{alice_id}'"):
        out = app.open_conversation(alice_id, new_session(), BOB)
    assert _is_skip(out[0]) and out[3]["conversation"] is None
    messages, sources, *_ = app.open_conversation(alice_id, new_session(), ALICE)
    assert messages[0]["content"] == "When was the Eiffel Tower built?" and "1887 to 1889" in sources

    # a follow-up continues the caller's own conversation
    follow = _ask(app, "Who designed it?", ALICE, alice[4])
    assert follow[4]["conversation"] == alice_id and _choices(follow[5]) == [alice_id]
    assert [c.owner for c in app.log.conversations()] == ["alice", "bob"]


def test_an_event_from_someone_not_signed_in_is_refused(app):
    with pytest.raises(gr.Error, match="sign in"):
        app.past_conversations(SimpleNamespace(username="mallory"))
    with pytest.raises(gr.Error, match="sign in"):
        list(app.answer("What do penguins eat?", new_session(), "extractive", 5, 0.0, None))
    assert app.log.conversations() == []


def test_only_admins_change_what_everyone_shares(app, tmp_path):
    from chatqa.registry import SHIPPED, ModelRegistry

    app.engine.registry = ModelRegistry(tmp_path / "data")
    (tmp_path / "m").mkdir()
    app.engine.registry.add(tmp_path / "m", parent=SHIPPED, promoted=True, reason="better", metrics={})
    docs = app.kb.list_documents()
    upload = _upload(tmp_path, "lighthouse.txt", "The lighthouse was built in 1911 by Mirela Quanz.")

    for call in (lambda: app.add_files([str(upload)], BOB), lambda: app.remove_document(docs[0].id, BOB),
                 lambda: app.reindex(BOB), lambda: app.activate_version("reader", SHIPPED, BOB),
                 lambda: app.prepare_export("", BOB)):
        with pytest.warns(UserWarning, match="Only an admin"):
            out = call()
        assert not any(isinstance(v, gr.DownloadButton) for v in out)
    assert app.kb.list_documents() == docs and app.engine.registry.active().id == "r1"
    assert not upload.exists()  # the refused upload is not left behind either

    message, rows, *_ = app.remove_document(docs[0].id, ALICE)
    assert message.startswith("Removed eiffel.txt") and len(rows) == 1
    rows, choice, _ = app.activate_version("reader", SHIPPED, ALICE)
    assert app.engine.registry.active().id == SHIPPED
    summary, squad, chat = app.prepare_export("", ALICE)
    assert squad.constructor_args["visible"] is True


def test_admin_controls_are_hidden_from_non_admins(app):
    admin = _permissions(app, 3)(ALICE)
    other = _permissions(app, 3)(BOB)
    assert [u["visible"] for u in admin] == [True, True, True, False, False, False]
    assert [u["visible"] for u in other] == [False, False, False, True, True, True]


def test_without_sign_in_one_person_sees_everything_as_before(fake_engine):
    app = ChatQAApp(ChatService(fake_engine))
    app.ready.set()
    old = app.log.new_conversation()  # e.g. from before sign-in existed
    owned = app.log.new_conversation(owner="alice")
    first = _ask(app, "When was the Eiffel Tower built?", None)
    assert set(_choices(first[5])) == {old, owned, first[4]["conversation"]}
    assert app.open_conversation(owned, new_session(), None)[3]["conversation"] == owned
    assert _permissions(app, 2)(None) == (gr.update(visible=True),) * 2 + (gr.update(visible=False),) * 3
    assert app.remove_document(app.kb.list_documents()[0].id, None)[0].startswith("Removed")


# -- run.py: which addresses need sign-in ---------------------------------------------------------------------------
@pytest.fixture
def launched(monkeypatch):
    calls = []
    monkeypatch.setattr(run, "launch", lambda *a, **kw: calls.append(kw))
    monkeypatch.delenv("CHATQA_AUTH", raising=False)
    return calls


def test_an_exposed_address_without_sign_in_is_refused(tmp_path, launched, capsys):
    data = tmp_path / "data"
    assert run.main(["--host", "0.0.0.0", "--data-dir", str(data)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --host 0.0.0.0 lets other machines reach ChatQA") and "--no-auth" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert launched == [] and not data.exists()
    assert run.main(["--host", "192.168.1.20", "--data-dir", str(data)]) == 1
    with pytest.raises(OpenWithoutSignIn):
        LAUNCH(data, host="::")  # the library refuses too, before it opens anything
    assert not data.exists()


def test_an_exposed_address_with_sign_in_or_no_auth_starts(tmp_path, launched, monkeypatch, capsys):
    assert run.main(["--host", "0.0.0.0", "--no-auth"]) == 0
    assert launched[-1]["users"] is None and launched[-1]["no_auth"] is True
    assert run.main(["--host", "0.0.0.0", "--auth", "alice:alice-password:admin"]) == 0
    assert [u.name for u in launched[-1]["users"].users()] == ["alice"]
    monkeypatch.setenv("CHATQA_AUTH", "bob:bob-password")
    assert run.main(["--host", "0.0.0.0"]) == 0
    assert launched[-1]["users"].authenticate("bob", "bob-password").name == "bob"
    assert run.main([]) == 0 and launched[-1]["host"] == "127.0.0.1"  # the desktop case needs nothing
    assert run.main(["--auth", str(tmp_path / "missing.json")]) == 1
    assert "no users file at" in capsys.readouterr().err
    assert len(launched) == 4


# -- over HTTP, with the real Gradio app -----------------------------------------------------------------------------
def _serve(app):
    from ui.server import serve

    port = free_port()
    demo = serve(app, port=port, block=False)
    return demo, f"http://127.0.0.1:{port}"


def test_over_http_nothing_is_served_before_sign_in(app):
    demo, url = _serve(app)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            page = client.get("/")
            assert page.status_code == 200 and page.headers["x-content-type-options"] == "nosniff"
            nonce = re.search(r"script-src 'self' 'nonce-([^']+)'", page.headers["content-security-policy"]).group(1)
            assert page.text.count("<script") == page.text.count(f'<script nonce="{nonce}"') >= 3
            assert nonce not in client.get("/").headers["content-security-policy"]  # a fresh one each time
            assert "Eiffel" not in page.text and "penguins" not in page.text  # no config of the app's own
            for method, path in (("GET", "/config"), ("GET", "/gradio_api/info"), ("POST", "/gradio_api/queue/join"),
                                 ("POST", "/gradio_api/upload"), ("GET", "/gradio_api/file=/etc/hostname")):
                response = client.request(method, path)
                assert response.status_code == 401, (path, response.status_code)
            assert client.post("/login", data={"username": "bob", "password": "alice-password"}).status_code == 400
            assert client.get("/config").status_code == 401
            assert client.post("/login", data={"username": "bob", "password": "bob-password"}).status_code == 200
            config = client.get("/config")
            assert config.status_code == 200 and len(config.json()["components"]) > 10
    finally:
        demo.close()


def test_over_http_an_added_upload_is_no_longer_served(fake_engine, tmp_path):
    app = ChatQAApp(ChatService(fake_engine))
    app.ready.set()
    demo, url = _serve(app)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post("/gradio_api/upload", files={"files": ("lighthouse.txt", b"The lighthouse was "
                                                                           b"built in 1911 by Mirela Quanz.")})
            [path] = response.json()
            assert client.get(f"/gradio_api/file={path}").text.startswith("The lighthouse")
            _, report, rows, *_ = app.add_files([path])
            assert "<b>added</b> lighthouse.txt" in report
            assert not Path(path).exists()
            assert client.get(f"/gradio_api/file={path}").status_code in (403, 404)
            doc = next(d for d in app.kb.list_documents() if d.name == "lighthouse.txt")
            app.remove_document(doc.id)
            assert client.get(f"/gradio_api/file={path}").status_code in (403, 404)
    finally:
        demo.close()
        shutil.rmtree(Path(path).parent, ignore_errors=True)


def test_a_file_of_ones_own_is_not_deleted_when_added(app, tmp_path):
    own = tmp_path / "lighthouse.txt"
    own.write_text("The lighthouse was built in 1911 by Mirela Quanz.")
    app.add_files([str(own)], ALICE)
    assert own.exists()


def test_over_http_one_user_cannot_list_or_open_anothers_conversation(app):
    from gradio_client import Client

    alice_id = _ask(app, "When was the Eiffel Tower built?", ALICE)[4]["conversation"]
    demo, url = _serve(app)
    try:
        bob = Client(url, auth=("bob", "bob-password"), verbose=False, download_files=False)
        assert alice_id not in str(bob.predict(api_name="/past_conversations"))
        try:
            opened = bob.predict(alice_id, api_name="/open_conversation")
        except Exception as e:  # refused by Gradio (not one of bob's choices) or by the app
            opened = e
        assert "Eiffel" not in str(opened) and "1887" not in str(opened)

        alice = Client(url, auth=("alice", "alice-password"), verbose=False, download_files=False)
        assert alice_id in str(alice.predict(api_name="/past_conversations"))
        opened = alice.predict(alice_id, api_name="/open_conversation")
        assert "When was the Eiffel Tower built?" in str(opened[0]) and "1887 to 1889" in str(opened[1])
    finally:
        demo.close()
