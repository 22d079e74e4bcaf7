"""The browser app: a thin Gradio adapter over ChatEngine, KnowledgeBase, ConversationLog and chatqa.export.

No model or SQL code lives here. :class:`ChatQAApp` holds the handlers (plain methods, testable without a browser);
:func:`build` lays them out as Blocks; :func:`launch` is what ``python run.py`` starts.

Each browser session keeps its own conversation in a ``gr.State`` (a dict: conversation id, the logged turn id of
every answer shown, the span being corrected). Everything that touches the models or the knowledge base runs under
one concurrency id, one event at a time, because the FAISS index and the models are shared by all sessions.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from functools import partial
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from chatqa.engine import ChatEngine, EngineSettings, check_question, open_engine
from chatqa.export import feedback_examples, plural, render
from chatqa.log import LoggedTurn
from chatqa.turn import ANSWER_MODES
from knowledge.device import cpu_supports_bf16
from knowledge.errors import ChatQAError
from knowledge.loaders import SUPPORTED_SUFFIXES
from ui.render import CSS, DOCUMENT_HEADERS, document_rows, human_size, sources_html

logger = logging.getLogger(__name__)

ENGINE = "chatqa-engine"  # concurrency id of every event that uses the models or changes the knowledge base
NO_SOURCES = sources_html([], None)


def new_session() -> dict[str, Any]:
    return {"conversation": None, "messages": [], "turn_ids": [], "correcting": None, "selection": None}


@dataclass
class Correction:
    """The 👎 panel's content for one turn."""

    turn_id: int
    choices: list[tuple[str, int]]  # (label, passage rank)
    rank: int  # the passage shown first: the one that gave the wrong answer, else the best-ranked
    text: str


class ChatQAApp:
    def __init__(self, engine: ChatEngine, *, warm_decoder: bool = True):
        self.engine = engine
        self.warm_decoder = warm_decoder and engine.decoder is not None
        self.ready = threading.Event()  # knowledge base seeded, embedder and reader loaded: questions can be answered
        self.warm_done = threading.Event()  # everything, the decoder included, is loaded (or failed)
        self.status = "Loading the models…"

    @property
    def log(self):
        return self.engine.log

    @property
    def kb(self):
        return self.engine.kb

    # -- warming up ------------------------------------------------------------------------------------------------
    def start_warm_up(self) -> threading.Thread:
        thread = threading.Thread(target=self._warm_up, name="chatqa-warm-up", daemon=True)
        thread.start()
        return thread

    def _warm_up(self) -> None:
        from knowledge.bundle import seed_bundled_documents

        try:
            self.status = "Loading the embedder and the reader…"
            seed_bundled_documents(self.kb.open())
            self.engine.warm_up(decoder=False)
        except Exception as e:  # the app stays up and says what is wrong
            logger.exception("warm-up failed")
            self.status = f"Could not load the models: {e}"
            self.ready.set()
            self.warm_done.set()
            return
        self.ready.set()
        if self.warm_decoder:
            self.status = "Ready (extractive answers). Loading the generative decoder…"
            try:
                self.engine.decoder.warm_up()
            except Exception as e:
                logger.warning("decoder unavailable: %s", e)
                self.status = f"Ready (extractive answers only: the decoder could not be loaded: {e})"
                self.warm_done.set()
                return
        self.status = "Ready."
        self.warm_done.set()

    def status_update(self):
        """Timer tick: the status line, and the timer stops once everything is loaded."""
        return self.status, gr.Timer(active=not self.warm_done.is_set())

    # -- chat ------------------------------------------------------------------------------------------------------
    def answer(self, question: str, session: dict, mode: str, k: float, strictness: float):
        """Stream one turn: yields (chatbot, sources, status, question box, session, conversation list)."""
        skip = gr.skip()
        try:
            question = check_question(question)
        except ChatQAError as e:
            gr.Warning(str(e))
            yield skip, skip, skip, skip, skip, skip
            return
        session = {**session, "messages": list(session["messages"]), "turn_ids": list(session["turn_ids"])}
        messages = session["messages"]
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        if not self.ready.is_set():
            messages[-1]["content"] = "(loading the models…)"
            yield messages, skip, self.status, "", session, skip
            self.ready.wait()
            messages[-1]["content"] = ""
        if session["conversation"] is None:
            session["conversation"] = self.log.new_conversation()
        yield messages, skip, "Searching…", "", session, skip

        result, text = None, ""
        try:
            for event in self.engine.stream(question, session["conversation"], mode=mode, k=int(k),
                                            strictness=float(strictness)):
                if event.kind == "status":
                    yield skip, skip, event.text, skip, skip, skip
                    continue
                if event.kind == "token":
                    text += event.text
                elif event.kind in ("replace", "final"):
                    text = event.text
                    result = event.result
                messages[-1] = {"role": "assistant", "content": text}
                yield messages, skip, skip, skip, skip, skip
        except ChatQAError as e:
            messages[-2:] = []
            gr.Warning(str(e))
            yield messages, skip, "", question, session, skip
            return
        except Exception as e:
            logger.exception("answering %r failed", question)
            messages[-2:] = []
            raise gr.Error(f"Something went wrong while answering ({type(e).__name__}: {e}). "
                           "Your documents and earlier turns are safe; details are in the app's log.") from None
        assert result is not None
        session["turn_ids"].append(result.turn_id)
        span = None if result.span is None else (result.span.passage_index, result.span.start, result.span.end)
        note = f"Searched for: {result.standalone_question}" if result.standalone_question != question else ""
        sources = sources_html(result.passages, span, question=result.standalone_question, abstained=result.abstained,
                               turn_id=result.turn_id)
        yield messages, sources, note, skip, session, self.conversation_choices(session["conversation"])

    def new_conversation(self, session: dict):
        return [], NO_SOURCES, "", self.conversation_choices(None), *self.hide_correction(new_session())

    def conversation_choices(self, selected: str | None = None):
        choices = [
            (f"{c.title[:70] or '(empty)'} · {c.n_turns} turn{'s' * (c.n_turns != 1)} · {c.updated[:16].replace('T', ' ')}",
             c.id)
            for c in self.log.conversations(limit=50)
        ]
        return gr.Dropdown(choices=choices, value=selected if any(v == selected for _, v in choices) else None)

    def open_conversation(self, conversation_id: str | None, session: dict):
        if not conversation_id:
            gr.Warning("Choose a conversation to open.")
            return (gr.skip(),) * 3 + self.hide_correction(session)
        try:
            turns = self.log.history(conversation_id)
        except ChatQAError as e:
            gr.Warning(str(e))
            return (gr.skip(),) * 3 + self.hide_correction(session)
        session = new_session()
        session["conversation"] = conversation_id
        for t in turns:
            session["messages"] += [{"role": "user", "content": t.question}, {"role": "assistant", "content": t.answer}]
            session["turn_ids"].append(t.id)
        sources = self.turn_sources(turns[-1]) if turns else NO_SOURCES
        return session["messages"], sources, "", *self.hide_correction(session)

    def turn_sources(self, turn: LoggedTurn) -> str:
        span = None if turn.span_rank is None else (turn.span_rank, turn.span_start, turn.span_end)
        return sources_html(turn.passages, span, question=turn.standalone_question, abstained=turn.abstained,
                            turn_id=turn.id)

    def _turn_of_message(self, session: dict, index) -> int | None:
        i = index[0] if isinstance(index, (list, tuple)) else index
        turn = int(i) // 2
        ids = session["turn_ids"]
        return ids[turn] if 0 <= turn < len(ids) else None

    def show_message_sources(self, session: dict, evt: gr.SelectData):
        turn_id = self._turn_of_message(session, evt.index)
        if turn_id is None:
            return gr.skip()
        try:
            return self.turn_sources(self.log.turn(turn_id))
        except ChatQAError:
            return gr.skip()

    # -- feedback --------------------------------------------------------------------------------------------------
    def on_like(self, session: dict, evt: gr.LikeData):
        """👍 stores 'up'; 👎 stores 'down' and opens the correction panel for that answer."""
        turn_id = self._turn_of_message(session, evt.index)
        if turn_id is None:
            gr.Warning("This answer was not logged, so feedback on it cannot be stored.")
            return self.hide_correction(session)
        if evt.liked is True:
            self.log.feedback(turn_id, "up")
            gr.Info("Thanks: marked as right.")
            return self.hide_correction(session)
        if evt.liked is not False:
            return self.hide_correction(session)
        self.log.feedback(turn_id, "down")
        correction = self.correction(turn_id)
        session = {**session, "correcting": turn_id, "selection": None}
        return (
            session, gr.Column(visible=True), gr.Radio(choices=correction.choices, value=correction.rank),
            gr.Textbox(value=correction.text), "Select the right answer in the passage with the mouse, or type it.",
            gr.Textbox(value=""), gr.Textbox(value=""),
        )

    def hide_correction(self, session: dict):
        session = {**session, "correcting": None, "selection": None}
        return session, gr.Column(visible=False), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def correction(self, turn_id: int) -> Correction:
        turn = self.log.turn(turn_id)
        choices = [(f"[{p.rank + 1}] {p.doc_name}" + (f", page {p.page}" if p.page else ""), p.rank)
                   for p in turn.passages]
        rank = turn.span_rank if turn.span_rank is not None else (turn.passages[0].rank if turn.passages else 0)
        text = next((p.text for p in turn.passages if p.rank == rank), "")
        return Correction(turn_id, choices, rank, text)

    def choose_passage(self, rank: int | None, session: dict):
        if session.get("correcting") is None or rank is None:
            return gr.skip(), gr.skip(), session
        turn = self.log.turn(session["correcting"])
        text = next((p.text for p in turn.passages if p.rank == rank), "")
        return text, "Select the right answer in the passage with the mouse, or type it.", {**session, "selection": None}

    def select_span(self, rank: int | None, session: dict, evt: gr.SelectData):
        """The person selected text in the passage box: keep its offsets into the logged passage."""
        if session.get("correcting") is None or rank is None:
            return gr.skip(), session
        start, end = (int(i) for i in evt.index)
        turn = self.log.turn(session["correcting"])
        passage = next((p.text for p in turn.passages if p.rank == rank), "")
        if passage[start:end] != evt.value:  # the box was edited: find the selected words in the real passage
            at = passage.find(evt.value) if evt.value else -1
            if at < 0 or passage.find(evt.value, at + 1) >= 0:
                return "That selection is not in the passage as it was read (was the text edited?). Choose the " \
                       "passage again and select the answer without editing it.", {**session, "selection": None}
            start, end = at, at + len(evt.value)
        # trim the white space a mouse selection picks up
        while start < end and passage[start].isspace():
            start += 1
        while end > start and passage[end - 1].isspace():
            end -= 1
        if start == end:
            return "Select the words of the answer.", {**session, "selection": None}
        return (f"Selected: “{passage[start:end]}”", {**session, "selection": (int(rank), start, end)})

    def save_correction(self, typed: str, comment: str, session: dict):
        turn_id = session.get("correcting")
        if turn_id is None:
            gr.Warning("Give 👎 on an answer first.")
            return self.hide_correction(session)
        selection = session.get("selection")
        if selection is None and not (typed or "").strip() and not (comment or "").strip():
            gr.Warning("Select the right answer in a passage, type it, or leave a comment.")
            return (gr.skip(),) * 7
        rank, start, end = selection if selection is not None else (None, None, None)
        try:
            self.log.feedback(turn_id, "down", passage_rank=rank, start=start, end=end, typed_answer=typed,
                              comment=comment)
        except ChatQAError as e:
            gr.Warning(str(e))
            return (gr.skip(),) * 7
        gr.Info("Thanks: your correction is saved and will be used for training.")
        return self.hide_correction(session)

    # -- knowledge base --------------------------------------------------------------------------------------------
    def documents(self):
        docs = self.kb.list_documents()
        choices = [(f"[{d.id}] {d.name}", d.id) for d in docs]
        summary = f"{len(docs)} documents, {sum(d.n_chunks for d in docs)} passages, " \
                  f"{human_size(sum(d.size for d in docs))}"
        return document_rows(docs), gr.Dropdown(choices=choices, value=None), summary

    def add_files(self, files, progress=gr.Progress()):  # noqa: B008 (how Gradio asks for a progress bar)
        paths = [Path(f if isinstance(f, str) else f.name) for f in files or []]
        if not paths:
            gr.Warning("Choose one or more files to add.")
            return gr.skip(), "", *self.documents()
        done = [0]

        def step(path: Path) -> None:
            progress((done[0], len(paths)), desc=f"Adding {path.name}", unit="files")
            done[0] += 1

        try:
            report = self.kb.add_files(paths, progress=step)
        except Exception as e:
            logger.exception("adding files failed")
            return None, f"<p>Adding stopped: {_esc(e)}. Documents added before this are kept.</p>", *self.documents()
        lines = [f"<b>added</b> {_esc(d.name)} ({d.n_chunks} passage{'s' * (d.n_chunks != 1)})" for d in report.added]
        lines += [f"<b>unchanged</b> {_esc(d.name)}: already in the knowledge base" for d in report.unchanged]
        lines += [f'<b class="chatqa-error">not added</b> {_esc(e)}' for e in report.failed]
        return None, "<br>".join(lines), *self.documents()

    def remove_document(self, doc_id: int | None):
        if doc_id is None:
            gr.Warning("Choose a document to remove.")
            return gr.skip(), *self.documents()
        try:
            doc = self.kb.remove(int(doc_id))
        except ChatQAError as e:
            gr.Warning(str(e))
            return gr.skip(), *self.documents()
        return f"Removed {_esc(doc.name)} ({doc.n_chunks} passages).", *self.documents()

    def reindex(self, progress=gr.Progress()):  # noqa: B008
        docs = self.kb.list_documents()
        done = [0]

        def step(doc) -> None:
            progress((done[0], max(len(docs), 1)), desc=f"Re-indexing {doc.name}", unit="documents")
            done[0] += 1

        n = self.kb.reindex(progress=step)
        return f"Re-indexed {len(docs)} documents: {n} passages.", *self.documents()

    # -- export ----------------------------------------------------------------------------------------------------
    def prepare_export(self, since: str):
        try:
            examples, counts = feedback_examples(self.log, since or None)
        except ChatQAError as e:
            gr.Warning(str(e))
            return gr.skip(), gr.skip(), gr.skip()
        folder = Path(tempfile.mkdtemp(prefix="chatqa-export-"))
        squad, chat = folder / "chatqa-feedback-squad.json", folder / "chatqa-feedback-chat.jsonl"
        squad.write_text(render(examples, "squad"), encoding="utf-8")
        chat.write_text(render(examples, "chat"), encoding="utf-8")
        n_chat = sum(1 for ex in examples if not ex.is_impossible)
        summary = (f"{_esc(counts.describe())}.<br>SQuAD 2.0 file: {plural(counts.positives + counts.negatives, 'question')}. "
                   f"Chat file: {plural(n_chat, 'conversation')}.")
        return (summary, gr.DownloadButton(value=str(squad), visible=True, interactive=True),
                gr.DownloadButton(value=str(chat), visible=True, interactive=bool(n_chat)))

    # -- models ----------------------------------------------------------------------------------------------------
    def versions(self, role: str):
        """The Models tab's version table of one role ("reader" or "decoder") and its switch-to dropdown."""
        registry = self._registry(role)
        if registry is None:
            return [], gr.Dropdown(choices=[], value=None)
        active = registry.active().id
        rows = []
        for v in registry.versions():
            new = v.metrics.get("new", {})
            rows.append([
                v.id + (" (active)" if v.id == active else ""), v.created[:16].replace("T", " "), v.parent or "",
                "yes" if v.promoted else "", *(_fmt(_dig(new, path), fmt) for _, path, fmt in VERSION_METRICS[role]),
                v.reason,
            ])
        return rows, gr.Dropdown(choices=[v.id for v in registry.versions()], value=active)

    def activate_version(self, role: str, version: str | None):
        registry = self._registry(role)
        if registry is None or not version:
            gr.Warning("Choose a version.")
            return gr.skip(), gr.skip(), gr.skip()
        try:
            registry.activate(version)
        except ChatQAError as e:
            gr.Warning(str(e))
            return gr.skip(), gr.skip(), gr.skip()
        gr.Info(f"{role.capitalize()} {version} is now active; the next answer uses it.")
        return *self.versions(role), self.models_markdown()

    def _registry(self, role: str):
        return {"reader": self.engine.registry, "decoder": self.engine.decoder_registry}[role]

    def models_markdown(self) -> str:
        lines = []
        for role, facts in self.engine.describe_models():
            lines += [f"### {role}", *(f"- {_esc(f)}" for f in facts)]
        lines += ["### Machine", f"- bf16 autocast on this CPU: {'yes' if cpu_supports_bf16() else 'no'}"]
        try:
            import torch

            lines.append(f"- CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
        except Exception:  # torch without CUDA support
            pass
        return "\n".join(lines)


# The Models tab's two metric columns per role: (header, where in a version's "new" metrics, format).
VERSION_METRICS = {
    "reader": [("held-out F1", ("heldout", "f1"), "{:.1f}"), ("SQuAD F1", ("squad", "f1"), "{:.1f}")],
    "decoder": [("held-out reply loss", ("heldout_loss",), "{:.3f}"), ("span kept", ("span_kept",), "{:.0%}")],
}


def _dig(metrics: dict, path: tuple[str, ...]):
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def _fmt(value, fmt: str = "{:.1f}") -> str:
    return "" if value is None else fmt.format(value)


def _esc(value: object) -> str:
    return escape(str(value))


# -- layout ------------------------------------------------------------------------------------------------------
def _version_table(role: str, how: str):
    """The Models tab's section for one role's versions: the table, the version dropdown and "Make active"."""
    gr.Markdown(f"#### {role.capitalize()} versions\n{how}")
    table = gr.Dataframe(
        headers=["version", "created (UTC)", "from", "promoted", *(h for h, _, _ in VERSION_METRICS[role]), "decision"],
        interactive=False, elem_id=f"chatqa-{role}-versions",
    )
    with gr.Row():
        choice = gr.Dropdown(label="Version", scale=3, elem_id=f"chatqa-{role}-version-choice")
        activate = gr.Button("Make active", elem_id=f"chatqa-{role}-activate")
    return table, choice, activate


def build(app: ChatQAApp) -> gr.Blocks:
    settings = app.engine.settings
    with gr.Blocks(title="ChatQA") as demo:
        session = gr.State(new_session)
        with gr.Row():
            gr.Markdown("## ChatQA: ask your documents")
            status = gr.Markdown(app.status, elem_id="chatqa-status")
        timer = gr.Timer(1.0)
        timer.tick(app.status_update, outputs=[status, timer], show_progress="hidden", queue=False)

        with gr.Tab("Chat", id="chat"), gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Conversation", height=480, render_markdown=False, elem_id="chatqa-chat",
                    feedback_options=("Like", "Dislike"), buttons=["copy"],
                    placeholder="Ask a question about your documents. Follow-ups like “Who designed it?” "
                                "use the conversation so far.",
                )
                with gr.Row():
                    question = gr.Textbox(show_label=False, placeholder="Ask a question…", scale=5,
                                          elem_id="chatqa-question", max_length=2000, submit_btn="Ask")
                note = gr.Markdown(elem_id="chatqa-note")
                with gr.Column(visible=False, elem_id="chatqa-correction") as correction:
                    gr.Markdown("#### What was the right answer?")
                    passage_choice = gr.Radio(label="Passage", elem_id="chatqa-correction-passage")
                    passage_text = gr.Textbox(label="Passage text: select the right answer", lines=8,
                                              max_lines=16, elem_id="chatqa-correction-text")
                    selection = gr.Markdown(elem_id="chatqa-selection")
                    typed = gr.Textbox(label="…or type the right answer", elem_id="chatqa-typed")
                    comment = gr.Textbox(label="Comment (optional)", elem_id="chatqa-comment")
                    with gr.Row():
                        save = gr.Button("Save correction", variant="primary", elem_id="chatqa-save-correction")
                        cancel = gr.Button("Cancel")
                with gr.Row():
                    new = gr.Button("New conversation", elem_id="chatqa-new")
                    past = gr.Dropdown(label="Past conversations", scale=3, elem_id="chatqa-past")
                    reopen = gr.Button("Open", elem_id="chatqa-open")
                with gr.Accordion("Settings", open=False):
                    mode = gr.Radio(list(ANSWER_MODES), value=settings.mode, label="Answer mode",
                                    info="extractive: the exact span and its sentence; generative: a small "
                                         "language model phrases it; auto: generative once loaded")
                    k = gr.Slider(1, 20, value=settings.k, step=1, label="Passages read per question")
                    strictness = gr.Slider(-5, 5, value=settings.strictness, step=0.5,
                                           label="Abstention strictness (higher: says “not found” more often)")
            with gr.Column(scale=2):
                gr.Markdown("#### Sources")
                sources = gr.HTML(NO_SOURCES, elem_id="chatqa-sources")

        with gr.Tab("Knowledge", id="knowledge") as knowledge_tab:
            files = gr.File(label="Add documents (" + ", ".join(SUPPORTED_SUFFIXES) + ")", file_count="multiple",
                            file_types=list(SUPPORTED_SUFFIXES), elem_id="chatqa-upload")
            add = gr.Button("Add to the knowledge base", variant="primary", elem_id="chatqa-add")
            add_report = gr.HTML(elem_id="chatqa-add-report")
            kb_summary = gr.Markdown(elem_id="chatqa-kb-summary")
            table = gr.Dataframe(headers=DOCUMENT_HEADERS, interactive=False, elem_id="chatqa-documents")
            with gr.Row():
                doc_choice = gr.Dropdown(label="Document", scale=3, elem_id="chatqa-doc-choice")
                remove = gr.Button("Remove", variant="stop", elem_id="chatqa-remove")
                reindex = gr.Button("Re-index all", elem_id="chatqa-reindex")
            kb_message = gr.Markdown()

        with gr.Tab("Export", id="export"):
            gr.Markdown(
                "Your ratings and corrections as training data: **SQuAD 2.0 JSON** for the reader and **chat JSONL** "
                "for the decoder (the same files as `chatqa export`)."
            )
            since = gr.Textbox(label="Only feedback since (optional, e.g. 2026-11-01)", elem_id="chatqa-since")
            prepare = gr.Button("Count and prepare the files", elem_id="chatqa-prepare-export")
            counts = gr.HTML(elem_id="chatqa-export-counts")
            with gr.Row():
                squad_file = gr.DownloadButton("Download SQuAD 2.0 JSON", visible=False, elem_id="chatqa-download-squad")
                chat_file = gr.DownloadButton("Download chat JSONL", visible=False, elem_id="chatqa-download-chat")

        with gr.Tab("Models", id="models") as models_tab:
            models = gr.Markdown(elem_id="chatqa-models")
            version_tables = {
                role: _version_table(role, how) for role, how in (
                    ("reader", "Retrained with `python -m finetune reader --from-logs`; a version becomes active only "
                               "when it beats the active one on held-out feedback."),
                    ("decoder", "Retrained with `python -m finetune decoder --from-logs`; a version becomes active "
                                "only when its held-out reply loss is lower and it keeps the span at least as often."),
                )
            }
            refresh_models = gr.Button("Refresh")

        # -- events ----------------------------------------------------------------------------------------------
        correction_outputs = [session, correction, passage_choice, passage_text, selection, typed, comment]
        question.submit(
            app.answer, [question, session, mode, k, strictness], [chatbot, sources, note, question, session, past],
            concurrency_id=ENGINE, concurrency_limit=1, show_progress="hidden",
        )
        chatbot.clear(app.new_conversation, [session], [chatbot, sources, note, past, *correction_outputs])
        chatbot.like(app.on_like, [session], correction_outputs)
        chatbot.select(app.show_message_sources, [session], [sources])
        passage_choice.input(app.choose_passage, [passage_choice, session], [passage_text, selection, session])
        passage_text.select(app.select_span, [passage_choice, session], [selection, session])
        save.click(app.save_correction, [typed, comment, session], correction_outputs)
        cancel.click(app.hide_correction, [session], correction_outputs)
        new.click(app.new_conversation, [session], [chatbot, sources, note, past, *correction_outputs])
        reopen.click(app.open_conversation, [past, session], [chatbot, sources, note, *correction_outputs])

        doc_outputs = [table, doc_choice, kb_summary]
        add.click(app.add_files, [files], [files, add_report, *doc_outputs], concurrency_id=ENGINE, concurrency_limit=1)
        remove.click(app.remove_document, [doc_choice], [kb_message, *doc_outputs], concurrency_id=ENGINE,
                     concurrency_limit=1)
        reindex.click(app.reindex, None, [kb_message, *doc_outputs], concurrency_id=ENGINE, concurrency_limit=1)
        prepare.click(app.prepare_export, [since], [counts, squad_file, chat_file])
        refresh_models.click(app.models_markdown, None, [models])
        models_tab.select(app.models_markdown, None, [models])
        for role, (table, choice, activate) in version_tables.items():
            refresh_models.click(partial(app.versions, role), None, [table, choice])
            models_tab.select(partial(app.versions, role), None, [table, choice])
            activate.click(partial(app.activate_version, role), [choice], [table, choice, models])

        demo.load(app.documents, None, doc_outputs)
        knowledge_tab.select(app.documents, None, doc_outputs)
        demo.load(app.conversation_choices, None, [past])
        demo.load(app.models_markdown, None, [models])
    return demo


def launch(
    data_dir=None, *, host: str = "127.0.0.1", port: int = 7860, mode: str = "auto", k: int = 5, reader=None,
    open_browser: bool = False, block: bool = True,
):
    """Open the engine on ``data_dir``, warm the models in the background and serve the app."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # private and offline: no calls home
    engine = open_engine(data_dir, settings=EngineSettings(mode=mode, k=k), reader_checkpoint=reader, lazy=True)
    app = ChatQAApp(engine, warm_decoder=mode != "extractive")
    app.start_warm_up()
    demo = build(app)
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    print(f"ChatQA on http://{host}:{port} (data: {engine.kb.data_dir})", flush=True)
    demo.queue().launch(
        server_name=host, server_port=port, inbrowser=open_browser, theme=theme, css=CSS, ssr_mode=False,
        max_file_size=engine.kb.max_file_bytes, footer_links=[], prevent_thread_lock=not block, quiet=True,
    )
    return demo, app
