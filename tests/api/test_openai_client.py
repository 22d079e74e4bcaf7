"""The official ``openai`` client against the real app: ``python run.py`` in its own process on a free port, with
the bundled guide, the real embedder and reader, and a users file with API keys. (``--mode extractive``: the decoder
is not loaded in the background; the one generative answer below loads it, and is marked slow.)"""

from __future__ import annotations

import httpx
import pytest

from chatqa.auth import UserStore
from tests.ui.browser import App

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("api-data")
    users = UserStore(data.parent / "users.json")
    users.add("alice", "alice-password", admin=True)
    users.add("bob", "bob-password")
    keys = {name: users.new_key(name) for name in ("alice", "bob")}
    users.save()
    app = App(data, data.parent / "api-app.log", "--mode", "extractive", "--auth", str(users.path))
    try:
        app.wait_listening()
        app.keys = keys
        yield app
    finally:
        output = app.stop()
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def client(app):
    return openai.OpenAI(base_url=f"{app.url}/v1", api_key=app.keys["alice"], timeout=300, max_retries=0)


def extension(response) -> dict:
    return response.model_extra["chatqa"]


def test_a_non_streamed_answer_about_the_bundled_guide_with_sources(client):
    response = client.chat.completions.create(
        model="chatqa", messages=[{"role": "user", "content": "Which file types can ChatQA read?"}])
    answer = response.choices[0].message.content
    assert "PDF" in answer and response.usage.completion_tokens > 0
    ext = extension(response)
    assert not ext["abstained"] and ext["turn_id"] > 0
    [evidence] = [s for s in ext["sources"] if s["span"]]
    assert evidence["document"] == "chatqa-user-guide.md"
    assert evidence["passage"][evidence["span"]["start"]:evidence["span"]["end"]] == evidence["span"]["text"]


def test_a_streamed_answer_and_a_follow_up_that_needs_the_history(client):
    question = "Which file types can ChatQA read?"
    stream = client.chat.completions.create(model="chatqa", stream=True,
                                            messages=[{"role": "user", "content": question}])
    chunks = list(stream)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = extension(next(c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"))
    assert "PDF" in answer and final["sources"][0]["document"] == "chatqa-user-guide.md"

    follow = client.chat.completions.create(model="chatqa", messages=[
        {"role": "user", "content": question}, {"role": "assistant", "content": answer},
        {"role": "user", "content": "What happens when they are password-protected?"},
    ])
    ext = extension(follow)
    assert ext["conversation"] == final["conversation"]  # the client's history ended on this server's answer
    assert "they" not in ext["standalone_question"].split(), ext["standalone_question"]
    assert any("must be unlocked" in " ".join(s["passage"].split()) for s in ext["sources"][:3]), ext["sources"]


def test_a_question_the_guide_does_not_answer_abstains(client):
    response = client.chat.completions.create(
        model="chatqa", messages=[{"role": "user", "content": "What was the score of the 1998 World Cup final?"}])
    assert extension(response)["abstained"] and "couldn't find" in response.choices[0].message.content.lower()


def test_a_wrong_or_missing_key_is_401(app):
    wrong = openai.OpenAI(base_url=f"{app.url}/v1", api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.chat.completions.create(model="chatqa", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 401 and "API key" in raised.value.message
    # the client insists on a key, so the missing one goes without it
    missing = httpx.post(f"{app.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})
    assert missing.status_code == 401 and "Missing API key" in missing.json()["error"]["message"]


def test_a_too_long_question_is_400_with_a_message(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="chatqa", messages=[{"role": "user", "content": "Why? " * 1000}])
    assert "at most 2,000 characters" in raised.value.message


def test_models_are_the_answer_modes(client):
    assert [m.id for m in client.models.list()] == ["chatqa", "chatqa-extractive", "chatqa-generative"]


@pytest.mark.slow
def test_a_streamed_generative_answer_cites_the_guide(client):
    stream = client.chat.completions.create(
        model="chatqa-generative", stream=True,
        messages=[{"role": "user", "content": "Which file types can ChatQA read?"}])
    chunks = list(stream)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = extension(next(c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"))
    assert final["mode"] == "generative" and len([c for c in chunks if c.choices]) > 3, answer
    assert "PDF" in answer and "[" in answer, answer
    assert any(s["cited"] for s in final["sources"]) and any(s["span"] for s in final["sources"])
