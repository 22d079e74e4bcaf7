"""Errors as OpenAI-compatible clients expect them: a 4xx status and ``{"error": {"message", "type", "param",
"code"}}`` that says what was wrong. A client's mistake is never a 500; an unexpected failure is a 500 whose message
says so without a traceback (the traceback goes to the server's log)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from chatqa.log import InvalidFeedback, UnknownConversation, UnknownTurn
from knowledge.errors import ChatQAError, InvalidQuery, UnknownDocument

logger = logging.getLogger(__name__)

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 503: "server_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(status: int, message: str, **kwargs) -> JSONResponse:
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message, **kwargs), status_code=status, headers=headers)


def status_of(error: ChatQAError) -> tuple[int, str | None]:
    """The HTTP status and error code of one of ChatQA's own errors (all of them the caller's to fix)."""
    if isinstance(error, UnknownTurn | UnknownConversation | UnknownDocument):
        return 404, "not_found"
    if isinstance(error, InvalidFeedback):
        return 400, "invalid_feedback"
    if isinstance(error, InvalidQuery):
        return 400, "invalid_question"
    return 400, None


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part not in ("body", "query", "path"))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into an OpenAI-style body."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return error_response(e.status, e.message, code=e.code, param=e.param)

    @app.exception_handler(ChatQAError)
    async def chatqa_error(request: Request, e: ChatQAError):
        status, code = status_of(e)
        return error_response(status, str(e), code=code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        problems = [f"{_location(err.get('loc', ())) or 'body'}: {err.get('msg', 'invalid')}" for err in e.errors()]
        first = e.errors()[0] if e.errors() else {}
        return error_response(400, "Invalid request: " + "; ".join(problems[:5]), code="invalid_request",
                              param=_location(first.get("loc", ())) or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        message = e.detail if isinstance(e.detail, str) else "request failed"
        if e.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path} (see /docs)"
        return error_response(e.status_code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"ChatQA failed on this request ({type(e).__name__}); stored documents and "
                                   "conversations are unaffected. Details are in the server's log.")
