"""The browser app: a thin Gradio adapter over ChatEngine, KnowledgeBase, ConversationLog and chatqa.export.

No model or SQL code lives here. :class:`ChatQAApp` holds the handlers (plain methods, testable without a browser);
:func:`ui.layout.build` lays them out as Blocks; :func:`ui.server.mount` serves them on the HTTP API's app, which
is what ``python run.py`` starts.

Every string a person or a document supplied is shown as text: the chat's messages are HTML-escaped (the Chatbot
renders its text as HTML), the HTML panels escape what they hold, toasts too (they render sanitised HTML).

With users (``--auth``), a handler asks :meth:`ChatQAApp.caller` who sent the event (Gradio's ``gr.Request``): each
conversation belongs to its user, and only admins change what everyone shares (documents, model versions) or
download the export, which holds everyone's feedback. Without users there is one person, who may do everything.

Each browser session keeps its own conversation in a ``gr.State`` (a dict: conversation id, the logged turn id of
every answer shown, the span being corrected). Everything that touches the models or the knowledge base runs under
one concurrency id, one event at a time, because the FAISS index and the models are shared by all sessions; the
questions themselves go through the :class:`chatqa.service.TurnRunner` that the HTTP API's questions queue on too.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from chatqa.auth import User, UserStore
from chatqa.engine import ChatEngine, check_question
from chatqa.export import feedback_examples, plural, render
from chatqa.log import LoggedTurn
from chatqa.service import ChatService
from knowledge.device import cpu_supports_bf16
from knowledge.errors import ChatQAError
from ui.render import VERSION_METRICS, chat_messages, document_rows, human_size, md_text, metric, sources_html

logger = logging.getLogger(__name__)

ENGINE = "chatqa-engine"  # concurrency id of every event that uses the models or changes the knowledge base
NO_SOURCES = sources_html([], None)
ADMIN_ONLY = "Only an admin can change what everyone shares (documents, model versions) or download the export."


def _warn(message: object) -> None:
    gr.Warning(escape(str(message), quote=False))


def _info(message: object) -> None:
    gr.Info(escape(str(message), quote=False))


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
    def __init__(self, service: ChatService):
        self.service = service
        self._export_folder: Path | None = None

    @property
    def engine(self) -> ChatEngine:
        return self.service.engine

    @property
    def users(self) -> UserStore | None:
        return self.service.users

    @property
    def ready(self) -> threading.Event:
        return self.service.ready

    @property
    def status(self) -> str:
        return self.service.status

    @property
    def log(self):
        return self.engine.log

    @property
    def kb(self):
        return self.engine.kb

    def status_update(self):
        """Timer tick: the status line, and the timer stops once everything is loaded."""
        return md_text(self.service.status), gr.Timer(active=not self.service.warm_done.is_set())

    # -- who is asking ---------------------------------------------------------------------------------------------
    def caller(self, request: gr.Request | None) -> User | None:
        """The signed-in user who sent the event; None without sign-in. With sign-in, an event without a known user
        (Gradio's login lets none through) is refused."""
        if self.users is None:
            return None
        user = self.users.get(getattr(request, "username", None))
        if user is None:
            raise gr.Error("Please sign in again.")
        return user

    def owner(self, request: gr.Request | None) -> str | None:
        """Whose conversations the caller sees: their name, or None (all of them) without sign-in."""
        user = self.caller(request)
        return None if user is None else user.name

    def is_admin(self, request: gr.Request | None) -> bool:
        user = self.caller(request)
        return user is None or user.admin

    def _may_change(self, request: gr.Request | None) -> bool:
        """For the handlers that change what everyone shares: True for admins, else a warning and False."""
        if self.is_admin(request):
            return True
        logger.info("refused an admin-only action to %r", getattr(request, "username", None))
        _warn(ADMIN_ONLY)
        return False

    # -- chat ------------------------------------------------------------------------------------------------------
    def answer(self, question: str, session: dict, mode: str, k: float, strictness: float,
               request: gr.Request | None = None):
        """Stream one turn: yields (chatbot, sources, note, question box, session, conversation list)."""
        skip = gr.skip()
        owner = self.owner(request)
        try:
            question = check_question(question)
        except ChatQAError as e:
            _warn(e)
            yield skip, skip, skip, skip, skip, skip
            return
        session = {**session, "messages": list(session["messages"]), "turn_ids": list(session["turn_ids"])}
        messages = session["messages"]
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        if not self.ready.is_set():
            messages[-1]["content"] = "(loading the models…)"
            yield chat_messages(messages), skip, escape(self.status), "", session, skip
            self.ready.wait()
            messages[-1]["content"] = ""
        if session["conversation"] is None:
            session["conversation"] = self.log.new_conversation(owner=owner)
        yield chat_messages(messages), skip, "Searching…", "", session, skip

        result, text = None, ""
        try:
            for event in self.service.runner.stream(question, session["conversation"], mode=mode, k=int(k),
                                            strictness=float(strictness)):
                if event.kind == "status":
                    yield skip, skip, escape(event.text), skip, skip, skip
                    continue
                if event.kind == "token":
                    text += event.text
                elif event.kind in ("replace", "final"):
                    text = event.text
                    result = event.result
                messages[-1] = {"role": "assistant", "content": text}
                yield chat_messages(messages), skip, skip, skip, skip, skip
        except ChatQAError as e:
            messages[-2:] = []
            _warn(e)
            yield chat_messages(messages), skip, "", question, session, skip
            return
        except Exception as e:
            logger.exception("answering %r failed", question)
            messages[-2:] = []
            raise gr.Error(escape(f"Something went wrong while answering ({type(e).__name__}: {e}). "
                                  "Your documents and earlier turns are safe; details are in the app's log.",
                                  quote=False)) from None
        assert result is not None
        session["turn_ids"].append(result.turn_id)
        note = f"Searched for: {result.standalone_question}" if result.standalone_question != question else ""
        sources = sources_html(result.passages, result.evidence, question=result.standalone_question,
                               abstained=result.abstained, turn_id=result.turn_id, numbers=result.cited_numbers,
                               cited=result.citations)
        yield (chat_messages(messages), sources, escape(note), skip, session,
               self.conversation_choices(session["conversation"], owner))

    def new_conversation(self, session: dict, request: gr.Request | None = None):
        return ([], NO_SOURCES, "", self.conversation_choices(None, self.owner(request)),
                *self.hide_correction(new_session()))

    def past_conversations(self, request: gr.Request | None = None):
        """The past-conversations list when the page loads: the caller's own."""
        return self.conversation_choices(None, self.owner(request))

    def conversation_choices(self, selected: str | None, owner: str | None):
        """The past-conversations list of ``owner`` (None: everyone's, without sign-in). Its labels are shown as
        text by the dropdown."""
        choices = [
            (f"{c.title[:70] or '(empty)'} · {c.n_turns} turn{'s' * (c.n_turns != 1)} · {c.updated[:16].replace('T', ' ')}",
             c.id)
            for c in self.log.conversations(limit=50, owner=owner)
        ]
        return gr.Dropdown(choices=choices, value=selected if any(v == selected for _, v in choices) else None)

    def open_conversation(self, conversation_id: str | None, session: dict, request: gr.Request | None = None):
        owner = self.owner(request)
        if not conversation_id:
            _warn("Choose a conversation to open.")
            return (gr.skip(),) * 3 + self.hide_correction(session)
        try:
            turns = self.log.history(conversation_id, owner=owner)  # another user's is unknown to this one
        except ChatQAError as e:
            _warn(e)
            return (gr.skip(),) * 3 + self.hide_correction(session)
        session = new_session()
        session["conversation"] = conversation_id
        for t in turns:
            session["messages"] += [{"role": "user", "content": t.question}, {"role": "assistant", "content": t.answer}]
            session["turn_ids"].append(t.id)
        sources = self.turn_sources(turns[-1]) if turns else NO_SOURCES
        return chat_messages(session["messages"]), sources, "", *self.hide_correction(session)

    def turn_sources(self, turn: LoggedTurn) -> str:
        return sources_html(turn.passages, turn.evidence, question=turn.standalone_question, abstained=turn.abstained,
                            turn_id=turn.id, numbers=turn.details.get("cited_numbers"),
                            cited=turn.details.get("citations", ()))

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
            _warn("This answer was not logged, so feedback on it cannot be stored.")
            return self.hide_correction(session)
        if evt.liked is True:
            self.log.feedback(turn_id, "up")
            _info("Thanks: marked as right.")
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
        return (f"Selected: “{_esc(passage[start:end])}”", {**session, "selection": (int(rank), start, end)})

    def save_correction(self, typed: str, comment: str, session: dict):
        turn_id = session.get("correcting")
        if turn_id is None:
            _warn("Give 👎 on an answer first.")
            return self.hide_correction(session)
        selection = session.get("selection")
        if selection is None and not (typed or "").strip() and not (comment or "").strip():
            _warn("Select the right answer in a passage, type it, or leave a comment.")
            return (gr.skip(),) * 7
        rank, start, end = selection if selection is not None else (None, None, None)
        try:
            self.log.feedback(turn_id, "down", passage_rank=rank, start=start, end=end, typed_answer=typed,
                              comment=comment)
        except ChatQAError as e:
            _warn(e)
            return (gr.skip(),) * 7
        _info("Thanks: your correction is saved and will be used for training.")
        return self.hide_correction(session)

    # -- knowledge base --------------------------------------------------------------------------------------------
    def documents(self):
        docs = self.kb.list_documents()
        choices = [(f"[{d.id}] {d.name}", d.id) for d in docs]
        summary = f"{len(docs)} documents, {sum(d.n_chunks for d in docs)} passages, " \
                  f"{human_size(sum(d.size for d in docs))}"
        return document_rows(docs), gr.Dropdown(choices=choices, value=None), summary

    def add_files(self, files, request: gr.Request | None = None,
                  progress=gr.Progress()):  # noqa: B008 (how Gradio asks for a progress bar)
        """Add the uploaded files; their temporary copies are deleted afterwards, added or not (the knowledge base
        keeps its own original, and Gradio would serve the copies at /gradio_api/file=… while they exist)."""
        paths = [Path(f if isinstance(f, str) else f.name) for f in files or []]
        try:
            if not self._may_change(request):
                return None, "", *self.documents()
            if not paths:
                _warn("Choose one or more files to add.")
                return gr.skip(), "", *self.documents()
            done = [0]

            def step(path: Path) -> None:
                progress((done[0], len(paths)), desc=f"Adding {path.name}", unit="files")
                done[0] += 1

            try:
                report = self.kb.add_files(paths, progress=step)
            except Exception as e:
                logger.exception("adding files failed")
                return (None, f"<p>Adding stopped: {_esc(e)}. Documents added before this are kept.</p>",
                        *self.documents())
        finally:
            discard_uploads(paths)
        lines = [f"<b>added</b> {_esc(d.name)} ({d.n_chunks} passage{'s' * (d.n_chunks != 1)})" for d in report.added]
        lines += [f"<b>unchanged</b> {_esc(d.name)}: already in the knowledge base" for d in report.unchanged]
        lines += [f'<b class="chatqa-error">not added</b> {_esc(e)}' for e in report.failed]
        lines += [f"<b>skipped</b> {_esc(s.path.name)}: {_esc(s.reason)}" for s in report.skipped]
        return None, "<br>".join(lines), *self.documents()

    def remove_document(self, doc_id: int | None, request: gr.Request | None = None):
        if not self._may_change(request):
            return gr.skip(), *self.documents()
        if doc_id is None:
            _warn("Choose a document to remove.")
            return gr.skip(), *self.documents()
        try:
            doc = self.kb.remove(int(doc_id))
        except ChatQAError as e:
            _warn(e)
            return gr.skip(), *self.documents()
        return f"Removed {_esc(doc.name)} ({doc.n_chunks} passages).", *self.documents()

    def reindex(self, request: gr.Request | None = None, progress=gr.Progress()):  # noqa: B008
        if not self._may_change(request):
            return gr.skip(), *self.documents()
        docs = self.kb.list_documents()
        done = [0]

        def step(doc) -> None:
            progress((done[0], max(len(docs), 1)), desc=f"Re-indexing {doc.name}", unit="documents")
            done[0] += 1

        n = self.kb.reindex(progress=step)
        return f"Re-indexed {len(docs)} documents: {n} passages.", *self.documents()

    # -- export ----------------------------------------------------------------------------------------------------
    def prepare_export(self, since: str, request: gr.Request | None = None):
        """The export files: everyone's feedback, so for admins only when there are users."""
        if not self._may_change(request):
            return gr.skip(), gr.skip(), gr.skip()
        try:
            examples, counts = feedback_examples(self.log, since or None)
        except ChatQAError as e:
            _warn(e)
            return gr.skip(), gr.skip(), gr.skip()
        folder = self._new_export_folder()
        squad, chat = folder / "chatqa-feedback-squad.json", folder / "chatqa-feedback-chat.jsonl"
        squad.write_text(render(examples, "squad"), encoding="utf-8")
        chat.write_text(render(examples, "chat"), encoding="utf-8")
        n_chat = sum(1 for ex in examples if not ex.is_impossible)
        summary = (f"{_esc(counts.describe())}.<br>SQuAD 2.0 file: {plural(counts.positives + counts.negatives, 'question')}. "
                   f"Chat file: {plural(n_chat, 'conversation')}.")
        return (summary, gr.DownloadButton(value=str(squad), visible=True, interactive=True),
                gr.DownloadButton(value=str(chat), visible=True, interactive=bool(n_chat)))

    def _new_export_folder(self) -> Path:
        """A private temporary folder (mode 0700) for the export's files. They hold everyone's questions, so only
        the latest export's are kept, and they go when the app does."""
        if self._export_folder is not None:
            shutil.rmtree(self._export_folder, ignore_errors=True)
        self._export_folder = Path(tempfile.mkdtemp(prefix="chatqa-export-"))
        weakref.finalize(self, shutil.rmtree, self._export_folder, True)
        return self._export_folder

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
                "yes" if v.promoted else "", *(metric(new, path, fmt) for _, path, fmt in VERSION_METRICS[role]),
                v.reason,
            ])
        return rows, gr.Dropdown(choices=[v.id for v in registry.versions()], value=active)

    def activate_version(self, role: str, version: str | None, request: gr.Request | None = None):
        if not self._may_change(request):
            return gr.skip(), gr.skip(), gr.skip()
        registry = self._registry(role)
        if registry is None or not version:
            _warn("Choose a version.")
            return gr.skip(), gr.skip(), gr.skip()
        try:
            registry.activate(version)
        except ChatQAError as e:
            _warn(e)
            return gr.skip(), gr.skip(), gr.skip()
        _info(f"{role.capitalize()} {version} is now active; the next answer uses it.")
        return *self.versions(role), self.models_markdown()

    def _registry(self, role: str):
        return {"reader": self.engine.registry, "decoder": self.engine.decoder_registry}[role]

    def models_markdown(self) -> str:
        lines = []
        for role, facts in self.engine.describe_models():
            lines += [f"### {role}", *(f"- {md_text(f)}" for f in facts)]
        lines += ["### Machine", f"- bf16 autocast on this CPU: {'yes' if cpu_supports_bf16() else 'no'}"]
        try:
            import torch

            lines.append(f"- CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
        except Exception:  # torch without CUDA support
            pass
        return "\n".join(lines)


def _esc(value: object) -> str:
    return escape(str(value))


def discard_uploads(paths: list[Path]) -> None:
    """Delete those of ``paths`` that are uploads in Gradio's temporary folder (and their folder, once empty)."""
    root = Path(get_upload_folder()).resolve()
    for path in paths:
        try:
            path = path.resolve()
            if root not in path.parents:
                continue  # not an upload: a file of the person's own
            path.unlink(missing_ok=True)
            if path.parent != root and not any(path.parent.iterdir()):
                path.parent.rmdir()
        except OSError as e:
            logger.warning("could not delete the uploaded copy %s: %s", path, e)
