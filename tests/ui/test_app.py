"""The browser app's handlers without a browser: a real ChatEngine, knowledge base and conversation log over the fake
embedder and reader of the engine tests; Gradio's update objects are inspected as plain values."""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from chatqa.service import ChatService
from tests.chatqa.test_engine import EIFFEL
from ui.app import ChatQAApp, new_session
from ui.render import sources_html


@pytest.fixture
def app(fake_engine):
    app = ChatQAApp(ChatService(fake_engine))
    app.ready.set()
    return app


def _final(app, question, session, mode="extractive", k=5, strictness=0.0):
    outputs = list(app.answer(question, session, mode, k, strictness))
    return outputs, outputs[-1]


def _is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


def test_a_turn_streams_then_shows_sources_and_logs_the_turn(app):
    outputs, (messages, sources, note, box, session, past) = _final(app, "When was the Eiffel Tower built?", new_session())
    assert messages[-2] == {"role": "user", "content": "When was the Eiffel Tower built?"}
    assert "1887 to 1889" in messages[-1]["content"]
    assert outputs[0][3] == ""  # the question box is cleared at once
    assert "<mark>1887 to 1889</mark>" in sources and "eiffel.txt" in sources
    [turn_id] = session["turn_ids"]
    assert f'data-turn-id="{turn_id}"' in sources
    assert app.log.turn(turn_id).question == "When was the Eiffel Tower built?"
    assert [c[1] for c in past.constructor_args["choices"]] == [session["conversation"]]


def test_follow_up_uses_the_sessions_conversation_and_sessions_stay_apart(app):
    _, first = _final(app, "Who designed the Eiffel Tower?", new_session())
    session = first[4]
    _, second = _final(app, "When was it built?", session)
    assert "1887 to 1889" in second[0][-1]["content"]
    assert second[2].startswith("Searched for:")
    assert len(second[4]["turn_ids"]) == 2
    _, other = _final(app, "What do penguins eat?", new_session())
    assert other[4]["conversation"] != session["conversation"]
    assert len(other[0]) == 2 and len(session["messages"]) == 2  # the first session's state was not mutated


@pytest.mark.parametrize("question", ["", "   ", "x" * 2001])
def test_bad_questions_give_a_warning_and_no_turn(app, question):
    with pytest.warns(UserWarning):
        outputs = list(app.answer(question, new_session(), "extractive", 5, 0.0))
    assert len(outputs) == 1 and all(_is_skip(v) for v in outputs[0])
    assert app.log.conversations() == []


def test_thumbs_up_and_down_are_stored_and_down_opens_the_correction(app):
    _, (_, _, _, _, session, _) = _final(app, "When was the Eiffel Tower built?", new_session())
    turn_id = session["turn_ids"][0]
    up = app.on_like(session, SimpleNamespace(index=1, liked=True))
    assert app.log.turn(turn_id).feedback.rating == "up"
    assert up[1].constructor_args["visible"] is False

    session, panel, choice, text, *_ = app.on_like(session, SimpleNamespace(index=1, liked=False))
    assert app.log.turn(turn_id).feedback.rating == "down"
    assert panel.constructor_args["visible"] is True and session["correcting"] == turn_id
    assert text.constructor_args["value"] == EIFFEL  # the passage that gave the answer is shown first

    start = EIFFEL.index("Gustave Eiffel")
    message, session = app.select_span(choice.constructor_args["value"], session,
                                       SimpleNamespace(index=[start - 1, start + 14], value=EIFFEL[start - 1 : start + 14]))
    assert message == "Selected: “Gustave Eiffel”"  # the white space a mouse picks up is trimmed
    app.save_correction("", "wrong question", session)
    feedback = app.log.turn(turn_id).feedback
    assert (feedback.rating, feedback.corrected_text, feedback.comment) == ("down", "Gustave Eiffel", "wrong question")


def test_a_selection_from_an_edited_passage_box_is_refused(app):
    _, (_, _, _, _, session, _) = _final(app, "When was the Eiffel Tower built?", new_session())
    session = app.on_like(session, SimpleNamespace(index=1, liked=False))[0]
    message, session = app.select_span(0, session, SimpleNamespace(index=[0, 9], value="not there"))
    assert "not in the passage" in message and session["selection"] is None
    with pytest.warns(UserWarning, match="Select the right answer"):
        app.save_correction("", "", session)


def test_feedback_on_an_unlogged_message_is_refused(app):
    with pytest.warns(UserWarning, match="not logged"):
        app.on_like(new_session(), SimpleNamespace(index=7, liked=True))


def test_reopening_a_conversation_restores_its_turns_and_unknown_ids_are_refused(app):
    _, (_, _, _, _, session, _) = _final(app, "When was the Eiffel Tower built?", new_session())
    messages, sources, _, reopened, *_ = app.open_conversation(session["conversation"], new_session())
    assert messages == session["messages"] and reopened["turn_ids"] == session["turn_ids"]
    assert "<mark>1887 to 1889</mark>" in sources
    with pytest.warns(UserWarning, match="no conversation"):
        out = app.open_conversation("no-such-id", new_session())
    assert _is_skip(out[0])


def test_uploads_report_each_bad_file_and_add_the_rest(app, tmp_path):
    good = tmp_path / "lighthouse.md"
    good.write_text("# Lighthouse\n\nThe lighthouse was built in 1911 by Mirela Quanz.")
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 not a pdf")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cleared, report, rows, choices, summary = app.add_files([str(good), str(bad), str(empty)])
    assert cleared is None
    assert "<b>added</b> lighthouse.md" in report
    assert report.count("not added") == 2 and "broken.pdf" in report and "empty.txt" in report
    assert [r[1] for r in rows] == ["eiffel.txt", "penguins.txt", "lighthouse.md"]
    assert summary.startswith("3 documents")
    with pytest.warns(UserWarning, match="Choose one or more files"):
        app.add_files([])


def test_the_upload_report_lists_each_skipped_file_with_its_reason(app, tmp_path):
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "tide.rst").write_text("Tides\n=====\n\nHigh tide is at 6 <b>sharp</b>.")
    (folder / ".draft.txt").write_text("hidden")
    (folder / "chart<1>.png").write_bytes(b"\x89PNG")
    _cleared, report, *_ = app.add_files([str(folder)])
    lines = report.split("<br>")
    assert lines[0] == "<b>added</b> tide.rst (1 passage)"
    assert len(lines) == 3 and lines[1] == "<b>skipped</b> .draft.txt: hidden file"
    assert lines[2].startswith("<b>skipped</b> chart&lt;1&gt;.png: unsupported type &#x27;.png&#x27; (supported: .txt,")


def test_remove_and_reindex(app):
    doc = app.kb.list_documents()[0]
    message, rows, *_ = app.remove_document(doc.id)
    assert message.startswith(f"Removed {doc.name}") and len(rows) == 1
    with pytest.warns(UserWarning, match="no document"):
        app.remove_document(doc.id)
    message, rows, *_ = app.reindex()
    assert message == "Re-indexed 1 documents: 1 passages."


def test_export_files_hold_the_feedback(app):
    _, (_, _, _, _, session, _) = _final(app, "When was the Eiffel Tower built?", new_session())
    app.on_like(session, SimpleNamespace(index=1, liked=True))
    summary, squad, chat = app.prepare_export("")
    assert "1 answer example," in summary
    data = json.loads(Path(squad.constructor_args["value"]).read_text())
    [qa] = [qa for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
    assert qa["answers"][0]["text"] == "1887 to 1889" and qa["source"] == "thumbs_up"
    [line] = Path(chat.constructor_args["value"]).read_text().splitlines()
    assert json.loads(line)["messages"][-1]["role"] == "assistant"
    with pytest.warns(UserWarning, match="--since"):
        app.prepare_export("last tuesday")
    first = Path(squad.constructor_args["value"]).parent
    assert first.stat().st_mode & 0o077 == 0  # everyone's questions: private to this user
    _, again, _ = app.prepare_export("")
    assert not first.exists() and Path(again.constructor_args["value"]).exists()  # only the latest export is kept
    other = ChatQAApp(app.service)
    latest = Path(other.prepare_export("")[1].constructor_args["value"]).parent
    del other
    gc.collect()
    assert not latest.exists()  # and it goes with the app


def test_models_tab_names_the_models(app):
    text = app.models_markdown()
    assert "fake-reader" in text and "Embedder" in text


def test_sources_escape_document_text():
    passage = SimpleNamespace(doc_name="<img src=x onerror=alert(1)>.html", page=3, score=0.5,
                              text="before <script>alert('x')</script> after")
    html = sources_html([passage], (0, 7, 34), question="<b>q</b>", turn_id=4)
    assert "<script>" not in html and "<img" not in html and "<b>q" not in html
    assert "<mark>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</mark>" in html
    assert "page 3" in html and 'data-turn-id="4"' in html


def test_sources_are_numbered_as_the_answer_cites_them_with_the_evidence_first():
    passages = [SimpleNamespace(doc_name=f"d{i}.md", page=None, score=1.0 - i / 10, text=f"Passage {i} text.")
                for i in range(4)]
    html = sources_html(passages, (2, 8, 9), numbers={2: 1, 0: 2}, cited=[2])  # the decoder saw rank 2 as [1]
    sections = re.findall(r'data-rank="(\d)" data-number="(\d)"', html)
    assert sections == [("2", "1"), ("0", "2"), ("1", "3"), ("3", "4")]
    assert "[1] d2.md" in html and "evidence · cited · score" in html and "Passage <mark>2</mark> text." in html
    plain = sources_html(passages, None)
    assert re.findall(r'data-rank="(\d)" data-number="(\d)"', plain) == [(str(i), str(i + 1)) for i in range(4)]


def test_a_gradio_update_is_what_the_tests_think_it_is():
    assert _is_skip(gr.skip())


def test_models_tab_lists_versions_and_switches_back(app, tmp_path):
    from chatqa.registry import SHIPPED, ModelRegistry

    assert app.versions("reader")[0] == []  # a fixed checkpoint: no registry
    app.engine.registry = ModelRegistry(tmp_path / "data")
    (tmp_path / "m").mkdir()
    app.engine.registry.add(tmp_path / "m", parent=SHIPPED, promoted=True, reason="held-out F1 50.00 → 60.00",
                            metrics={"new": {"heldout": {"f1": 60.0}, "squad": {"f1": 75.5}}})
    rows, choice = app.versions("reader")
    assert [r[0] for r in rows] == [SHIPPED, "r1 (active)"] and rows[1][4:6] == ["60.0", "75.5"]
    rows, choice, _ = app.activate_version("reader", SHIPPED)
    assert rows[0][0] == f"{SHIPPED} (active)" and app.engine.registry.active().id == SHIPPED
    with pytest.warns(UserWarning, match="no model version"):
        app.activate_version("reader", "r7")


def test_models_tab_lists_decoder_versions_with_their_own_metrics(app, tmp_path):
    from chatqa.decoder import decoder_registry
    from chatqa.registry import SHIPPED

    assert app.versions("decoder")[0] == []  # the engine was opened without a decoder
    app.engine.decoder_registry = decoder_registry(tmp_path / "data")
    (tmp_path / "d").mkdir()
    app.engine.decoder_registry.add(
        tmp_path / "d", parent=SHIPPED, promoted=False, reason="held-out loss 1.200 → 1.300: not lower",
        metrics={"new": {"heldout_loss": 1.3, "grounding": 0.824, "span_kept": 0.75}},
    )
    rows, choice = app.versions("decoder")
    assert [r[0] for r in rows] == [f"{SHIPPED} (active)", "r1"] and rows[1][4:7] == ["1.300", "0.82", "75%"]
    assert rows[0][4:7] == ["", "", ""]  # the shipped decoder has no metrics
    rows, choice, _ = app.activate_version("decoder", "r1")
    assert rows[1][0] == "r1 (active)" and app.engine.decoder_registry.active().id == "r1"
    assert app.engine.registry is None  # the reader's versions were not touched


def test_questions_and_answers_reach_the_chat_as_escaped_text(app):
    """The Chatbot puts its text into the page as HTML: what a person or a document wrote must arrive escaped, so
    that it shows exactly as written (issue #20, S1). The log keeps the text as it was."""
    question = "When was the Eiffel Tower built? <img src=x onerror=alert(1)> & why"
    _, (messages, sources, _, _, session, past) = _final(app, question, new_session())
    assert messages[-2]["content"] == "When was the Eiffel Tower built? &lt;img src=x onerror=alert(1)> & why"
    assert "<img" not in sources and "&lt;img src=x onerror=alert(1)&gt;" in sources
    assert app.log.turn(session["turn_ids"][0]).question == question
    assert session["messages"][-2]["content"] == question
    assert past.constructor_args["choices"][0][0].startswith(question)  # the dropdown shows its labels as text

    _, second = _final(app, "When was it built? <b>now</b>", session)
    note = second[2]
    assert note.startswith("Searched for:") and "<" not in note and "&lt; b &gt; now" in note  # the rewriter spaced it
    reopened = app.open_conversation(session["conversation"], new_session())[0]
    assert reopened[0]["content"] == messages[-2]["content"]


def test_markdown_text_and_chat_messages_show_as_written():
    from ui.render import chat_messages, chat_text, md_text

    assert md_text("![pixel](http://127.0.0.1:9/x.png) <b>a</b> & $$x$$") == (
        r"\!\[pixel\]\(http://127.0.0.1:9/x.png\) \<b\>a\</b\> \& \$\$x\$\$"
    )
    assert chat_messages([{"role": "assistant", "content": "<script>x</script> PELICAN-42"}]) == [
        {"role": "assistant", "content": "&lt;script>x&lt;/script> PELICAN-42"}
    ]
    # only markup is escaped, so the copy button copies ordinary text as it is
    assert chat_text("R&D costs < 5 € & AT&T said 3>2 <3") == "R&D costs < 5 € & AT&T said 3>2 <3"
    assert chat_text("&amp; &copy2026 &#60; <!-- x --> <?x> <b>") == (
        "&amp;amp; &amp;copy2026 &amp;#60; &lt;!-- x --> &lt;?x> &lt;b>"
    )


@pytest.mark.parametrize("text", ["<img src=x onerror=alert(1)>", "a<b>c</b>&amp;&lt;&copy;&#x41;&", "<<</>>&&#",
                                  "1 < 2 && 3 > 2", "&notin; &notit; &not", "<!DOCTYPE x><?php ?>"])
def test_chat_text_parses_back_to_the_text(text):
    """An HTML parser given chat_text(text) finds no markup, only ``text`` itself."""
    from html.parser import HTMLParser

    from ui.render import chat_text

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.text, self.markup = "", []

        def handle_data(self, data):
            self.text += data

        def found_markup(self, *what):
            self.markup.append(what)

        handle_starttag = handle_endtag = handle_startendtag = found_markup
        handle_comment = handle_decl = handle_pi = unknown_decl = found_markup

    parser = Collect()
    parser.feed(chat_text(text))
    parser.close()
    assert parser.markup == [] and parser.text == text
