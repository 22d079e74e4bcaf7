"""Hostile documents and questions in the real app, in Chromium: everything a person or a document supplies shows as
text, nothing runs, and the page requests nothing but its own server (issue #20, S1).

A document added from the terminal has a file name that is an HTML tag; an uploaded Markdown file holds an <img>
pointing at a little HTTP server on another port that counts every request it gets; the questions hold HTML and a
Markdown image too. The test listens for dialogs (an ``alert`` that ran), for requests to any other origin and for
Content-Security-Policy violations.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO
from tests.ui.browser import CHROMIUM, App, ask, bot_messages, launch_browser, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.browser]

HOSTILE_NAME = "<img src=x onerror=alert(3)> codes.txt"
LAUNCH = """Launch codes

The launch code of the Zorblax east gate is <script>alert(2)</script> PELICAN-42.
<img src=x onerror=alert(1)>
"""
TRACKER = """# Harbour tracker

The colour of the Quinbury harbour tracker is VERMILION-7 <img src="{leak}/leak.png?doc=tracker"> as noted.
"""
QUESTION = "What is the launch code of the Zorblax east gate? <img src=x onerror=alert(1)>"


class _Counter(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def leak_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    _Counter.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Counter.hits
    finally:
        server.shutdown()
        server.server_close()


def test_hostile_documents_and_questions_show_as_text_and_nothing_leaves(tmp_path, leak_server, monkeypatch):
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    leak, hits = leak_server
    data = tmp_path / "data"
    named = tmp_path / HOSTILE_NAME
    named.write_text(LAUNCH)
    tracker = tmp_path / "tracker.md"
    tracker.write_text(TRACKER.format(leak=leak))
    subprocess.run([sys.executable, "-m", "chatqa.cli", "kb", "add", str(named), "--data-dir", str(data), "-q"],
                   cwd=REPO, check=True, timeout=600, capture_output=True)

    uploads = tmp_path / "gradio"  # Gradio's temporary folder for this app: uploads land here
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    app = App(data, tmp_path / "app.log", "--mode", "extractive")
    dialogs, foreign, violations = [], [], []
    try:
        app.wait_listening()
        with sync_api.sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: foreign.append(r.url) if _origin(r.url) not in (None, _origin(app.url))
                    else None)
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            response = page.goto(app.url)
            csp = response.headers.get("content-security-policy", "")
            wait_status(page)

            page.get_by_role("tab", name="Knowledge").click()
            page.locator("#chatqa-upload input[type=file]").set_input_files([str(tracker)])
            page.locator("#chatqa-add").click()
            page.locator("#chatqa-add-report").get_by_text("tracker.md (1 passage)").wait_for(timeout=60_000)
            left_behind = [p.name for p in uploads.rglob("*") if p.is_file()]  # D8: the upload's copy is gone
            page.wait_for_function(  # the file name as text in the documents table
                "t => document.querySelector('#chatqa-documents').innerText.includes(t)", arg=HOSTILE_NAME,
                timeout=10_000,
            )

            page.get_by_role("tab", name="Chat").click()
            user = page.locator('#chatqa-chat [data-testid="user"]')
            first = ask(page, QUESTION)
            first_question = user.last.inner_text().strip()
            sources = page.inner_text("#chatqa-sources")
            past = page.locator("#chatqa-past input").input_value()

            question = f"What is the colour of the Quinbury harbour tracker? ![pixel]({leak}/question.png)"
            second = ask(page, question)
            second_question = user.last.inner_text().strip()
            elements = page.locator("#chatqa-chat img").count()
            n_answers = bot_messages(page).count()
            page.wait_for_timeout(1000)  # time for any late request
            own_violations = list(violations)

            # belt and braces: markup that did reach the page would still not run
            page.evaluate("""() => { const d = document.createElement('div');
                d.innerHTML = '<img src=x onerror="window.__ran = 1">'; document.body.appendChild(d); }""")
            page.wait_for_timeout(500)
            injected_ran = page.evaluate("() => window.__ran === 1")
            browser.close()
    finally:
        output = app.stop()
    assert "Traceback" not in output, output
    assert dialogs == []
    assert foreign == [] and hits == []
    assert "tracker.md" not in left_behind, left_behind
    assert elements == 0 and n_answers == 2  # no element came from the text
    assert first_question == QUESTION and second_question == question
    assert "PELICAN-42" in first and "<script>alert(2)</script>" in first, first
    assert "VERMILION-7" in second and f'<img src="{leak}/leak.png?doc=tracker">' in second, second
    assert f"[1] {HOSTILE_NAME}" in sources, sources
    assert past.startswith(QUESTION[:70] + " · 1 turn"), past  # the list shows the first 70 characters
    assert own_violations == []  # the page works within its own policy
    assert not injected_ran and any("inline event handler" in v for v in violations), violations
    assert "default-src 'self'" in csp and "img-src 'self' data: blob:" in csp


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        return None  # data:, blob: and the like stay in the page
    return f"{parts.scheme.replace('ws', 'http')}://{parts.netloc}"


def test_signing_in_works_within_the_policy_and_hides_admin_controls(tmp_path):
    """With --auth: Gradio's login page works under the Content-Security-Policy, a wrong password is refused, and a
    user who is not an admin does not get the controls that change what everyone shares (issue #20, S2)."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    app = App(tmp_path / "data", tmp_path / "app.log", "--mode", "extractive",
              "--auth", "alice:alice-password:admin,bob:bob-password")
    violations = []
    try:
        app.wait_listening()
        with sync_api.sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(app.url)
            password = page.locator("input[type=password]")
            password.wait_for(timeout=30_000)
            page.locator("input:not([type=password])").first.fill("bob")
            password.fill("alice-password")
            password.press("Enter")
            page.get_by_text("Incorrect").first.wait_for(timeout=10_000)
            page.locator("input:not([type=password])").first.fill("bob")
            password.fill("bob-password")
            password.press("Enter")
            wait_status(page)
            answer = ask(page, "Which file types can ChatQA read?")
            page.get_by_role("tab", name="Knowledge").click()
            page.get_by_text("only an admin can add").wait_for(timeout=10_000)
            bob_sees_upload = page.locator("#chatqa-upload").is_visible()
            bob_sees_remove = page.locator("#chatqa-remove").is_visible()
            browser.close()
    finally:
        output = app.stop()
    assert "Traceback" not in output, output
    assert "PDF" in answer, answer
    assert not bob_sees_upload and not bob_sees_remove
    assert violations == []
