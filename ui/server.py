"""Serving the browser app: :func:`launch` (what ``python run.py`` starts), sign-in, and the security headers.

Every response carries a Content-Security-Policy that lets the page load and connect to nothing but this server,
so even text that slipped through as HTML could not report to anyone that a document was read. Gradio's page needs
inline scripts and styles, ``Function()`` (gr.HTML evaluates its template with it), ``data:`` and ``blob:`` images
and media, and a connection back to this server (fetch, server-sent events, websockets).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from chatqa.auth import UserStore, check_host
from chatqa.engine import EngineSettings, open_engine
from ui.app import ChatQAApp
from ui.layout import build
from ui.render import CSS

logger = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "media-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "frame-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "SAMEORIGIN",
    "cross-origin-opener-policy": "same-origin",
}
AUTH_MESSAGE = "Sign in to ChatQA. An admin gives out accounts with <code>chatqa users add NAME</code>."


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every HTTP response (replacing any of the same name)."""

    def __init__(self, app, headers: dict[str, str] | None = None):
        self.app = app
        headers = SECURITY_HEADERS if headers is None else headers
        self.names = {name.encode("latin-1") for name in headers}
        self.headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names]
                message = {**message, "headers": kept + self.headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def serve(
    app: ChatQAApp, *, host: str = "127.0.0.1", port: int = 7860, no_auth: bool = False, open_browser: bool = False,
    block: bool = True, blocked_paths: list[str] | None = None,
) -> gr.Blocks:
    """Lay out and serve ``app``: sign-in when it has users, the security headers, uploads bounded by the knowledge
    base's limit. Refuses (:class:`chatqa.auth.OpenWithoutSignIn`) to serve other machines without sign-in unless
    ``no_auth``."""
    check_host(host, auth=app.users is not None, no_auth=no_auth)
    demo = build(app)
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    users = app.users
    demo.queue().launch(
        server_name=host, server_port=port, inbrowser=open_browser, theme=theme, css=CSS, ssr_mode=False,
        max_file_size=app.kb.max_file_bytes, footer_links=[], prevent_thread_lock=not block, quiet=True,
        auth=None if users is None else (lambda name, password: users.authenticate(name, password) is not None),
        auth_message=AUTH_MESSAGE if users is not None else None,
        app_kwargs={"middleware": [Middleware(SecurityHeaders)]},
        blocked_paths=blocked_paths,
    )
    return demo


def launch(
    data_dir=None, *, host: str = "127.0.0.1", port: int = 7860, mode: str = "auto", k: int = 5, reader=None,
    open_browser: bool = False, block: bool = True, users: UserStore | None = None, no_auth: bool = False,
):
    """Open the engine on ``data_dir``, warm the models in the background and serve the app. ``users``: sign-in
    with these users (None: no sign-in, for this machine only unless ``no_auth``)."""
    check_host(host, auth=users is not None, no_auth=no_auth)  # before anything is opened or loaded
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # private and offline: no calls home
    engine = open_engine(data_dir, settings=EngineSettings(mode=mode, k=k), reader_checkpoint=reader, lazy=True)
    app = ChatQAApp(engine, warm_decoder=mode != "extractive", users=users)
    app.start_warm_up()
    who = "sign-in required" if users is not None else "no sign-in"
    print(f"ChatQA on http://{host}:{port} (data: {engine.kb.data_dir}; {who})", flush=True)
    demo = serve(app, host=host, port=port, no_auth=no_auth, open_browser=open_browser, block=block,
                 blocked_paths=[str(Path(engine.kb.data_dir).resolve())])
    return demo, app
