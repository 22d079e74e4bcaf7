"""The browser app's layout: :func:`build` lays :class:`ui.app.ChatQAApp`'s handlers out as Gradio Blocks.

Every value shown comes from a handler that made it safe to show (see ui/render.py): the chat as escaped text, the
HTML panels escaped, Markdown only for text of the app's own.
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from chatqa.turn import ANSWER_MODES
from knowledge.loaders import SUPPORTED_SUFFIXES
from ui.app import ENGINE, NO_SOURCES, ChatQAApp, new_session
from ui.render import DOCUMENT_HEADERS, VERSION_METRICS, md_text


def _version_table(role: str, how: str, admin_visible: bool):
    """The Models tab's section for one role's versions: the table, the version dropdown and "Make active"."""
    gr.Markdown(f"#### {role.capitalize()} versions\n{how}")
    table = gr.Dataframe(
        headers=["version", "created (UTC)", "from", "promoted", *(h for h, _, _ in VERSION_METRICS[role]), "decision"],
        interactive=False, elem_id=f"chatqa-{role}-versions",
    )
    with gr.Row():
        choice = gr.Dropdown(label="Version", scale=3, elem_id=f"chatqa-{role}-version-choice",
                             visible=admin_visible)
        activate = gr.Button("Make active", elem_id=f"chatqa-{role}-activate", visible=admin_visible)
    return table, choice, activate


def build(app: ChatQAApp) -> gr.Blocks:
    settings = app.engine.settings
    admin_visible = app.users is None  # with sign-in, revealed for admins when the page loads (ChatQAApp.permissions)
    # delete_cache: uploads never added and old export files leave Gradio's temporary folder within two hours
    with gr.Blocks(title="ChatQA", delete_cache=(3600, 3600)) as demo:
        session = gr.State(new_session)
        with gr.Row():
            gr.Markdown("## ChatQA: ask your documents")
            status = gr.Markdown(md_text(app.status), elem_id="chatqa-status", latex_delimiters=[])
        timer = gr.Timer(1.0)
        timer.tick(app.status_update, outputs=[status, timer], show_progress="hidden", queue=False)

        with gr.Tab("Chat", id="chat"), gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    # Messages arrive HTML-escaped (ui.render.chat_messages): shown exactly as text, no LaTeX
                    label="Conversation", height=480, render_markdown=False, latex_delimiters=[], elem_id="chatqa-chat",
                    feedback_options=("Like", "Dislike"), buttons=["copy"],
                    placeholder="Ask a question about your documents. Follow-ups like “Who designed it?” "
                                "use the conversation so far.",
                )
                with gr.Row():
                    question = gr.Textbox(show_label=False, placeholder="Ask a question…", scale=5,
                                          elem_id="chatqa-question", max_length=2000, submit_btn="Ask")
                note = gr.HTML(elem_id="chatqa-note")
                with gr.Column(visible=False, elem_id="chatqa-correction") as correction:
                    gr.Markdown("#### What was the right answer?")
                    passage_choice = gr.Radio(label="Passage", elem_id="chatqa-correction-passage")
                    passage_text = gr.Textbox(label="Passage text: select the right answer", lines=8,
                                              max_lines=16, elem_id="chatqa-correction-text")
                    selection = gr.HTML(elem_id="chatqa-selection")
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
            kb_note = _admin_note("The documents are shared by everyone who signs in; only an admin can add, "
                                  "remove or re-index them.")
            files = gr.File(label="Add documents (" + ", ".join(SUPPORTED_SUFFIXES) + ")", file_count="multiple",
                            file_types=list(SUPPORTED_SUFFIXES), elem_id="chatqa-upload", visible=admin_visible)
            add = gr.Button("Add to the knowledge base", variant="primary", elem_id="chatqa-add",
                            visible=admin_visible)
            add_report = gr.HTML(elem_id="chatqa-add-report")
            kb_summary = gr.Markdown(elem_id="chatqa-kb-summary")
            table = gr.Dataframe(headers=DOCUMENT_HEADERS, interactive=False, elem_id="chatqa-documents")
            with gr.Row(visible=admin_visible) as kb_actions:
                doc_choice = gr.Dropdown(label="Document", scale=3, elem_id="chatqa-doc-choice")
                remove = gr.Button("Remove", variant="stop", elem_id="chatqa-remove")
                reindex = gr.Button("Re-index all", elem_id="chatqa-reindex")
            kb_message = gr.HTML(elem_id="chatqa-kb-message")

        with gr.Tab("Export", id="export"):
            gr.Markdown(
                "Your ratings and corrections as training data: **SQuAD 2.0 JSON** for the reader and **chat JSONL** "
                "for the decoder (the same files as `chatqa export`)."
            )
            export_note = _admin_note("The export holds everyone's questions and feedback: only an admin can "
                                      "download it.")
            since = gr.Textbox(label="Only feedback since (optional, e.g. 2026-11-01)", elem_id="chatqa-since",
                               visible=admin_visible)
            prepare = gr.Button("Count and prepare the files", elem_id="chatqa-prepare-export", visible=admin_visible)
            counts = gr.HTML(elem_id="chatqa-export-counts")
            with gr.Row():
                squad_file = gr.DownloadButton("Download SQuAD 2.0 JSON", visible=False, elem_id="chatqa-download-squad")
                chat_file = gr.DownloadButton("Download chat JSONL", visible=False, elem_id="chatqa-download-chat")

        with gr.Tab("Models", id="models") as models_tab:
            models = gr.Markdown(elem_id="chatqa-models", latex_delimiters=[])
            models_note = _admin_note("The models are shared by everyone who signs in; only an admin can switch "
                                      "the active version.")
            version_tables = {
                role: _version_table(role, how, admin_visible) for role, how in (
                    ("reader", "Retrained with `python -m finetune reader --from-logs`; a version becomes active only "
                               "when it beats the active one on held-out feedback."),
                    ("decoder", "Retrained with `python -m finetune decoder --from-logs`; a version becomes active "
                                "only when its held-out reply loss is lower and its grounding and span keeping are not worse."),
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
            activate.click(_activate(app, role), [choice], [table, choice, models])

        demo.load(app.documents, None, doc_outputs)
        knowledge_tab.select(app.documents, None, doc_outputs)
        demo.load(app.past_conversations, None, [past])
        admin_only = [files, add, kb_actions, since, prepare, *(c for _, c, a in version_tables.values()),
                      *(a for _, c, a in version_tables.values())]
        demo.load(_permissions(app, len(admin_only)), None, [*admin_only, kb_note, export_note, models_note])
        demo.load(app.models_markdown, None, [models])
    return demo



def _admin_note(text: str) -> gr.Markdown:
    return gr.Markdown(f"*{text}*", visible=False, elem_classes="chatqa-muted")


def _activate(app: ChatQAApp, role: str):
    """"Make active" for one role (a closure, not functools.partial, so that Gradio sees the gr.Request)."""

    def activate(version: str | None, request: gr.Request):
        return app.activate_version(role, version, request)

    return activate


def _permissions(app: ChatQAApp, n_admin_only: int):
    """On page load: the admin-only controls shown to admins, the notes saying why to the others."""

    def permissions(request: gr.Request):
        admin = app.is_admin(request)
        return *(gr.update(visible=admin) for _ in range(n_admin_only)), *(gr.update(visible=not admin),) * 3

    return permissions
