"""Serving the browser app: :func:`mount` (onto the HTTP API's FastAPI app, as ``python run.py`` does), :func:`start`
(uvicorn), sign-in, and the security headers.

Every response carries a Content-Security-Policy that lets the page load and connect to nothing but this server,
so even text that slipped through as HTML could not report to anyone that a document was read, nor run an inline
event handler. Gradio's page needs its own inline scripts (given a nonce here), inline styles, ``Function()``
(gr.HTML evaluates its template with it), ``data:`` and ``blob:`` images and media, and a connection back to this
server (fetch, server-sent events, websockets).
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
import webbrowser

import gradio as gr
import uvicorn
from fastapi import FastAPI

from chatqa.auth import check_host
from knowledge.errors import ChatQAError
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


def mount(root: FastAPI, app: ChatQAApp, *, blocked_paths: list[str] | None = None) -> gr.Blocks:
    """Lay out ``app`` and mount it at ``/`` of ``root`` (after the routes ``root`` already has, such as the HTTP
    API's): sign-in when it has users, uploads bounded by the knowledge base's limit, the security headers on every
    response of ``root``."""
    demo = build(app).queue()
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    users = app.users
    gr.mount_gradio_app(
        root, demo, "/", theme=theme, css=CSS, ssr_mode=False, max_file_size=app.kb.max_file_bytes, footer_links=[],
        auth=None if users is None else (lambda name, password: users.authenticate(name, password) is not None),
        auth_message=AUTH_MESSAGE if users is not None else None, blocked_paths=blocked_paths,
    )
    root.add_middleware(SecurityHeaders)
    return demo


class Served:
    """An HTTP server started by :func:`start`: its ``url``, and ``close()``."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread | None, url: str, on_close=None):
        self.server, self.thread, self.url, self._on_close = server, thread, url, on_close

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)
        if self._on_close is not None:
            self._on_close()


def start(asgi, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True, open_browser: bool = False,
          on_close=None) -> Served:
    """Serve ``asgi`` with uvicorn: in this thread until interrupted (``block``), else on a thread of its own once
    it listens. A port in use is a :class:`ChatQAError` saying so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ChatQAError(f"cannot listen on {host}:{port} ({e.strerror or e}); is ChatQA already running? "
                          "Choose another --port.") from None
    url = f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}"
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", timeout_graceful_shutdown=5))
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    if block:
        served = Served(server, None, url, on_close)
        try:
            server.run(sockets=[sock])
        finally:
            served.close()
        return served
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="chatqa-http", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise ChatQAError(f"the server on {url} stopped while starting; see the log above")
        time.sleep(0.02)
    return Served(server, thread, url, on_close)


def _open_when_started(server: uvicorn.Server, url: str) -> None:
    while not server.started:
        time.sleep(0.1)
    webbrowser.open(url)


def serve(
    app: ChatQAApp, *, root: FastAPI | None = None, host: str = "127.0.0.1", port: int = 7860, no_auth: bool = False,
    open_browser: bool = False, block: bool = True, blocked_paths: list[str] | None = None,
) -> Served:
    """Serve ``app`` (mounted on ``root``, e.g. the HTTP API, or alone). Refuses
    (:class:`chatqa.auth.OpenWithoutSignIn`) to serve other machines without sign-in unless ``no_auth``."""
    check_host(host, auth=app.users is not None, no_auth=no_auth)
    root = root if root is not None else FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    demo = mount(root, app, blocked_paths=blocked_paths)
    return start(root, host=host, port=port, block=block, open_browser=open_browser, on_close=demo.close)
