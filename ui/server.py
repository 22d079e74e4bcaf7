"""Serving the browser app: :func:`launch` (what ``python run.py`` starts), sign-in, and the security headers.

Every response carries a Content-Security-Policy that lets the page load and connect to nothing but this server,
so even text that slipped through as HTML could not report to anyone that a document was read, nor run an inline
event handler. Gradio's page needs its own inline scripts (given a nonce here), inline styles, ``Function()``
(gr.HTML evaluates its template with it), ``data:`` and ``blob:`` images and media, and a connection back to this
server (fetch, server-sent events, websockets).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from chatqa.auth import UserStore, check_host
from chatqa.engine import EngineSettings, open_engine
from ui.app import ChatQAApp
from ui.layout import build
from ui.render import CSS

logger = logging.getLogger(__name__)

def content_security_policy(nonce: str) -> str:
    """The page may load and connect to this server only. Scripts: this server's files, and the inline ones of the
    page this server rendered (they carry ``nonce``; browsers that know nonces then ignore 'unsafe-inline', which
    is there for those that do not)."""
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' 'nonce-{nonce}' 'unsafe-inline' 'unsafe-eval'",
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
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "SAMEORIGIN",
    "cross-origin-opener-policy": "same-origin",
}
AUTH_MESSAGE = "Sign in to ChatQA. An admin gives out accounts with <code>chatqa users add NAME</code>."


class SecurityHeaders:
    """ASGI middleware: a Content-Security-Policy with a fresh nonce and :data:`SECURITY_HEADERS` on every HTTP
    response (replacing any of the same name); in an HTML page, the nonce goes on each ``<script`` the server wrote.
    (Text a person or a document supplied never reaches that HTML as markup: Gradio writes its configuration as
    JSON with ``<`` escaped.)"""

    def __init__(self, app):
        self.app = app
        self.names = {b"content-security-policy", b"content-length", *(n.encode("latin-1") for n in SECURITY_HEADERS)}
        self.headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        headers = [(b"content-security-policy", content_security_policy(nonce).encode("latin-1")), *self.headers]
        held: dict = {}  # an HTML response's start, held until its body is complete
        body: list[bytes] = []

        def start(message, length: int | None):
            kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names]
            if length is None:
                kept += [(k, v) for k, v in message.get("headers", []) if k.lower() == b"content-length"]
            else:
                kept.append((b"content-length", str(length).encode("latin-1")))
            return {**message, "headers": kept + headers}

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                content_type = dict((k.lower(), v) for k, v in message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/html"):
                    held["start"] = message
                    return
                await send(start(message, None))
            elif message["type"] == "http.response.body" and held:
                body.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                html = b"".join(body).replace(b"<script", f'<script nonce="{nonce}"'.encode("latin-1"))
                await send(start(held.pop("start"), len(html)))
                await send({"type": "http.response.body", "body": html})
            else:
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
