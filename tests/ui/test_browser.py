"""The browser app end to end: `python run.py` with the real models on a fresh data directory, driven by Playwright
in Debian's Chromium (installed by `make test`; the test skips where no Chromium is found).

One scripted session, step by step, with a screenshot after each step in docs/screenshots/ (or
$CHATQA_SCREENSHOT_DIR): ask about the bundled guide and watch the generative answer stream in, never replaced, with
a citation whose passage shows the highlighted evidence, ask a
follow-up, upload a document (with a corrupt one beside it) and ask about it, give 👎 and select the right span,
download the SQuAD export and find that span in it. A second browser session keeps its own conversation. The Models
tab lists the reader's and the decoder's versions.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.ui.browser import CHROMIUM, App, ask, bot_messages, launch_browser, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SCREENSHOTS = Path(os.environ.get("CHATQA_SCREENSHOT_DIR") or REPO / "docs" / "screenshots")
NEW_DOCUMENT = """Zorblax Harbour

The Zorblax lighthouse was built in 1911 by the engineer Mirela Quanz. It stands 42 metres tall on the northern
breakwater and its lamp can be seen 30 kilometres out at sea. The lighthouse was automated in 1987.
"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium)")
    pytest.importorskip("playwright.sync_api")
    data = tmp_path_factory.mktemp("app-data")
    app = App(data, data.parent / "app.log")
    try:
        app.wait_listening()
        yield app.url
    finally:
        output = app.stop()
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        yield browser
        browser.close()


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_the_whole_session_in_a_browser(app_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(app_url)
    wait_status(page, "Ready.")  # the decoder too, so the answer streams token by token

    # 1. A question about the bundled guide: the answer streams in, its source is highlighted.
    page.evaluate("""() => {
        window.__answerStates = new Set();
        new MutationObserver(() => {
            const bots = document.querySelectorAll('#chatqa-chat [data-testid="bot"]');
            if (bots.length) window.__answerStates.add(bots[bots.length - 1].innerText);
        }).observe(document.querySelector('#chatqa-chat'), {subtree: true, childList: true, characterData: true});
    }""")
    answer = ask(page, "Which file types can ChatQA read?")
    states = [s.strip() for s in page.evaluate("() => [...window.__answerStates]") if s.strip()]
    assert "PDF" in answer and "Markdown" in answer, answer
    assert len(states) >= 2, f"the answer did not stream: {states}"
    assert all(answer.strip().startswith(s) for s in states), f"a streamed draft was replaced: {states}"
    cited = re.findall(r"\[(\d)\]", answer)
    assert cited, f"no citation in {answer!r}"
    evidence = page.locator("#chatqa-sources .chatqa-source.has-answer")
    assert evidence.get_attribute("data-number") == cited[0]  # the cited passage holds the highlighted evidence
    assert "PDF" in evidence.locator("mark").inner_text()
    assert "chatqa-user-guide.md" in page.inner_text("#chatqa-sources")
    _shot(page, "1-answer-with-highlighted-source")

    # 2. A follow-up that needs the first turn.
    answer = ask(page, "What happens when they are password-protected?")
    assert "Searched for:" in page.inner_text("#chatqa-note")
    # the passage that answers it is read and shown ("Password-protected PDFs must be unlocked before…"); whether the
    # 0.5B decoder then uses it is answer quality, measured by `chatqa eval docs`, not asserted here
    assert "must be unlocked" in " ".join(page.inner_text("#chatqa-sources").split()), answer
    _shot(page, "2-follow-up")

    # 3. Upload a new document together with a corrupt PDF: the bad one is reported, the good one is added.
    page.get_by_role("tab", name="Knowledge").click()
    good, bad = tmp_path / "zorblax-harbour.txt", tmp_path / "broken.pdf"
    good.write_text(NEW_DOCUMENT)
    bad.write_bytes(b"%PDF-1.4\nthis is not really a PDF")
    page.locator("#chatqa-upload input[type=file]").set_input_files([str(good), str(bad)])
    page.locator("#chatqa-add").click()
    report = page.locator("#chatqa-add-report")
    report.get_by_text("zorblax-harbour.txt (1 passage)").wait_for(timeout=60_000)
    assert "added zorblax-harbour.txt" in report.inner_text()
    assert "not added broken.pdf" in report.inner_text()
    page.locator("#chatqa-documents").get_by_text("zorblax-harbour.txt").wait_for()
    _shot(page, "3-knowledge-upload")

    page.get_by_role("tab", name="Chat").click()
    answer = ask(page, "Who built the Zorblax lighthouse?")
    assert "Mirela Quanz" in answer, answer
    assert "zorblax-harbour.txt" in page.inner_text("#chatqa-sources")

    # 4. 👎 on an answer, then select the right span in its passage and save.
    ask(page, "How tall is it?")
    page.get_by_role("button", name="Dislike").last.click()
    box = page.locator("#chatqa-correction-text textarea")
    box.wait_for(state="visible", timeout=10_000)
    text = box.input_value()
    start = text.find("42 metres")
    assert start >= 0, text  # the passage the answer came from is shown first
    box.evaluate(f"el => {{ el.focus(); el.setSelectionRange({start}, {start + len('42 metres')}); }}")
    page.locator("#chatqa-selection").get_by_text("42 metres").wait_for(timeout=10_000)
    page.locator("#chatqa-comment textarea").fill("testing the correction flow")
    _shot(page, "4-correction")
    page.locator("#chatqa-save-correction").click()
    page.get_by_text("your correction is saved").first.wait_for(timeout=10_000)

    # 5. The SQuAD export has that span as the answer of that question.
    page.get_by_role("tab", name="Export").click()
    page.locator("#chatqa-prepare-export").click()
    page.locator("#chatqa-export-counts").get_by_text("rated turn").wait_for(timeout=30_000)
    with page.expect_download() as download:
        page.locator("#chatqa-download-squad").click()
    exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    _shot(page, "5-export")
    qas = [qa for article in exported["data"] for p in article["paragraphs"] for qa in p["qas"]]
    corrected = [qa for qa in qas if qa["source"] == "corrected_span"]
    assert len(corrected) == 1
    assert "Zorblax" in corrected[0]["question"]  # the standalone question of "How tall is it?"
    [gold] = corrected[0]["answers"]
    assert gold["text"] == "42 metres"
    context = next(p["context"] for a in exported["data"] for p in a["paragraphs"] if p["qas"][0] is corrected[0])
    assert context[gold["answer_start"] : gold["answer_start"] + len(gold["text"])] == "42 metres"

    # 6. An empty question gets a message, not a turn and not a traceback.
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chatqa-question textarea").press("Enter")
    page.get_by_text("Please type a question.").first.wait_for(timeout=10_000)
    assert bot_messages(page).count() == 4

    # 7. Another browser session has its own, empty conversation and does not disturb this one.
    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.goto(app_url)
    wait_status(other)
    assert bot_messages(other).count() == 0
    ask(other, "Where does ChatQA keep its data?")
    assert bot_messages(other).count() == 1
    assert bot_messages(page).count() == 4
    other.close()

    # 8. The Models tab lists the reader's and the decoder's versions; the shipped ones are active.
    page.get_by_role("tab", name="Models").click()
    for role in ("reader", "decoder"):
        page.locator(f"#chatqa-{role}-versions").get_by_text("shipped (active)").filter(visible=True).first.wait_for(timeout=10_000)
    _shot(page, "6-models")
    page.close()
