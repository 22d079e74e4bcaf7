from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api import create_api
from chatqa.auth import UserStore
from chatqa.service import ChatService


@pytest.fixture
def service(fake_engine) -> ChatService:
    """The fake engine of the UI tests (Eiffel Tower and penguins, a scripted reader), ready, without users."""
    svc = ChatService(fake_engine, warm_decoder=False)
    svc.ready.set()
    yield svc
    svc.runner.close()


@pytest.fixture
def client(service) -> TestClient:
    with TestClient(create_api(service), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def keys(service) -> dict[str, str]:
    """Users on the service: alice (admin) and bob, each with an API key."""
    users = UserStore.from_spec("alice:alice-password:admin,bob:bob-password")
    service.users = users
    return {name: users.new_key(name) for name in ("alice", "bob")}


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
