"""The OpenAI-compatible HTTP API: a thin adapter over :mod:`chatqa`, sharing the browser app's engine."""

from api.app import create_api

__all__ = ["create_api"]
