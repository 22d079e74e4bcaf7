"""Who is calling: ``Authorization: Bearer <key>``, the keys of the users who sign in to the browser app
(``chatqa users key NAME``). Without users (this machine only, or ``--no-auth``) no key is asked for and the caller
may do everything, as in the browser app. Only admins change what everyone shares or read everyone's feedback."""

from __future__ import annotations

from fastapi import Depends, Request

from api.errors import APIError
from chatqa.auth import User
from chatqa.service import ChatService

ADMIN_ONLY = ("Only an admin can change what everyone shares (documents) or read the export, which holds everyone's "
              "feedback.")


def service(request: Request) -> ChatService:
    return request.app.state.chatqa


def caller(request: Request, svc: ChatService = Depends(service)) -> User | None:
    """The user the request's key belongs to; None when ChatQA runs without users. 401 otherwise."""
    if svc.users is None:
        return None
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(401, "Missing API key: send the header 'Authorization: Bearer <key>' (an admin makes keys "
                            "with `chatqa users key NAME`).", code="invalid_api_key")
    user = svc.users.user_for_key(key.strip())
    if user is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return user


def admin(user: User | None = Depends(caller)) -> User | None:
    if user is not None and not user.admin:
        raise APIError(403, ADMIN_ONLY, code="admin_only")
    return user


def owner(user: User | None) -> str | None:
    """Whose conversations the caller may continue: their own, or (without users) all of them."""
    return None if user is None else user.name
