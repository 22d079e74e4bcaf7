"""The HTTP API's FastAPI application: OpenAI's chat completions and models, feedback, documents, export, a health
check and the OpenAPI page, over the :class:`~chatqa.service.ChatService` the browser app shares (``run.py`` mounts
the Gradio app on this one, so both answer from one engine, one question at a time).

The OpenAPI page (``/docs``) is served from this machine: Swagger UI's files come from the ``swagger-ui-bundle``
package, not from a CDN, so it works offline and under the app's Content-Security-Policy.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

from api import chat, documents, errors, feedback
from api.access import service
from chatqa.service import ChatService

API_VERSION = "1"
DESCRIPTION = """ChatQA answers questions from your documents. Its chat endpoint speaks OpenAI's chat-completions
protocol, so OpenAI clients and chat front ends work with `base_url` set to this server's `/v1`.

With users (`run.py --auth`), send `Authorization: Bearer <key>`; an admin makes keys with `chatqa users key NAME`.
"""


def swagger_folder() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def create_api(svc: ChatService) -> FastAPI:
    app = FastAPI(title="ChatQA", version=API_VERSION, description=DESCRIPTION, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.chatqa = svc
    errors.install(app)
    app.include_router(chat.router)
    app.include_router(feedback.router)
    app.include_router(documents.router)

    @app.get("/health", tags=["service"], summary="Whether the models are loaded (no key needed)")
    async def health(svc: ChatService = Depends(service)):
        return {"status": "ok" if svc.ready.is_set() else "loading", "models": svc.models_loaded(),
                "questions_waiting": svc.runner.waiting}

    folder = swagger_folder()
    if folder is not None:
        app.mount("/docs/static", StaticFiles(directory=folder), name="swagger")

        @app.get("/docs", include_in_schema=False)
        async def docs():
            return get_swagger_ui_html(
                openapi_url="/openapi.json", title="ChatQA API", swagger_js_url="/docs/static/swagger-ui-bundle.js",
                swagger_css_url="/docs/static/swagger-ui.css", swagger_favicon_url="/docs/static/favicon-32x32.png",
                swagger_ui_parameters={"validatorUrl": None},
            )

    return app
