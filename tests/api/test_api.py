"""The HTTP API over the fake engine of the UI tests (two small documents, a scripted reader): the OpenAI shapes,
conversations, errors, keys, documents, feedback and export. tests/api/test_openai_client.py drives the real app."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from api import create_api
from chatqa.decide import AbstentionPolicy
from chatqa.decoder import DraftPiece
from tests.api.conftest import auth
from tests.chatqa.test_engine import ScriptedDecoder
from tests.ui.browser import free_port

EIFFEL_BUILT = "When was the Eiffel Tower built?"


def ask(client, *messages, headers=None, **body):
    convo = [{"role": "user" if i % 2 == 0 else "assistant", "content": m} for i, m in enumerate(messages)]
    return client.post("/v1/chat/completions", headers=headers,
                       json={"model": "chatqa-extractive", "messages": convo, **body})


def events_of(response) -> list:
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# -- chat ------------------------------------------------------------------------------------------------------------
def test_an_answer_has_openais_shape_the_sources_and_is_logged(client, service):
    response = ask(client, EIFFEL_BUILT)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "chatqa-extractive"
    answer = body["choices"][0]["message"]["content"]
    assert "1887 to 1889" in answer and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0
    ext = body["chatqa"]
    assert not ext["abstained"] and body["id"].startswith(f"chatcmpl-{ext['conversation']}-")
    [evidence] = [s for s in ext["sources"] if s["span"] is not None]
    assert evidence["document"] == "eiffel.txt" and evidence["span"]["text"] == "1887 to 1889"
    assert evidence["passage"][evidence["span"]["start"]:evidence["span"]["end"]] == "1887 to 1889"
    assert [s["number"] for s in ext["sources"]] == list(range(1, len(ext["sources"]) + 1))
    logged = service.log.turn(ext["turn_id"])
    assert logged.answer == answer and logged.conversation_id == ext["conversation"]


def test_a_streamed_answer_is_openai_chunks_ending_with_done(client, service):
    response = ask(client, EIFFEL_BUILT, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    chunks = events_of(response)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    [final] = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop"]
    assert service.log.turn(final["chatqa"]["turn_id"]).answer == text and "1887 to 1889" in text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_a_follow_up_through_messages_continues_the_logged_conversation(client, service):
    first = ask(client, EIFFEL_BUILT).json()
    answer = first["choices"][0]["message"]["content"]
    follow = ask(client, EIFFEL_BUILT, answer, "Who designed it?").json()
    assert "Gustave Eiffel" in follow["choices"][0]["message"]["content"]
    assert follow["chatqa"]["standalone_question"] == "Who designed the Eiffel Tower?"
    assert follow["chatqa"]["conversation"] == first["chatqa"]["conversation"]
    assert [t.question for t in service.log.history(first["chatqa"]["conversation"])] == [EIFFEL_BUILT,
                                                                                          "Who designed it?"]


def test_a_history_of_the_clients_own_is_used_in_a_new_conversation(client, service):
    body = ask(client, EIFFEL_BUILT, "Some answer another assistant gave.", "Who designed it?").json()
    assert body["chatqa"]["standalone_question"] == "Who designed the Eiffel Tower?"
    assert len(service.log.history(body["chatqa"]["conversation"])) == 1


def test_the_conversation_field_or_a_response_id_continues_a_conversation(client):
    first = ask(client, EIFFEL_BUILT).json()
    for handle in (first["chatqa"]["conversation"], first["id"]):
        body = ask(client, "Who designed it?", conversation=handle).json()
        assert body["chatqa"]["conversation"] == first["chatqa"]["conversation"]
        assert body["chatqa"]["standalone_question"] == "Who designed the Eiffel Tower?"
    missing = ask(client, "Who designed it?", conversation="0" * 32)
    assert missing.status_code == 404 and "0" * 32 in error_of(missing)["message"]


def test_a_question_the_documents_do_not_answer_abstains(client):
    body = ask(client, "What is the boiling point of mercury?").json()
    assert body["chatqa"]["abstained"] and body["chatqa"]["turn_id"] is not None
    assert "couldn't find" in body["choices"][0]["message"]["content"].lower()


@pytest.mark.parametrize("body, status, says", [
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "  "}]}, 400, "Please type a question"),
    ({"messages": [{"role": "user", "content": "why? " * 500}]}, 400, "at most 2,000 characters"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, 400, "last message"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "text only"),
    ({"messages": [{"role": "wizard", "content": "Hi"}]}, 400, "role"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}, 404, "does not exist"),
    ({"messages": [{"role": "user", "content": "Hi"}], "k": 0}, 400, "k"),
])
def test_a_bad_request_is_a_4xx_that_says_what_is_wrong(client, service, body, status, says):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status and says in error_of(response)["message"]
    assert service.log.conversations() == []  # nothing logged for it


def test_text_parts_are_read_and_unknown_fields_ignored(client):
    response = client.post("/v1/chat/completions", json={
        "model": "chatqa-extractive", "temperature": 0.2, "max_tokens": 50,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": EIFFEL_BUILT}]}]})
    assert "1887 to 1889" in response.json()["choices"][0]["message"]["content"]


def test_broken_json_and_unknown_paths_are_openai_errors(client):
    assert client.post("/v1/chat/completions", content=b"{not json",
                       headers={"content-type": "application/json"}).status_code == 400
    assert error_of(client.get("/v1/nothing-here"))["type"] == "not_found_error"
    assert client.get("/v1/models").json()["data"][0]["id"] == "chatqa"
    assert client.get("/health").json()["status"] == "ok"


# -- keys ------------------------------------------------------------------------------------------------------------
def test_a_missing_or_wrong_key_is_401_and_a_key_belongs_to_its_user(client, service, keys):
    for headers in (None, {"authorization": "Bearer sk-wrong"}, {"authorization": keys["alice"]}):
        response = ask(client, EIFFEL_BUILT, headers=headers)
        assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"
    assert client.get("/v1/models").status_code == 401 and client.get("/health").status_code == 200
    alice = ask(client, EIFFEL_BUILT, headers=auth(keys["alice"])).json()["chatqa"]
    assert service.log.conversations(owner="alice")[0].id == alice["conversation"]
    bob = ask(client, "Who designed it?", headers=auth(keys["bob"]), conversation=alice["conversation"])
    assert bob.status_code == 404  # alice's conversation is not bob's to continue
    feedback = client.post("/v1/feedback", headers=auth(keys["bob"]), json={"turn_id": alice["turn_id"], "rating": "up"})
    assert feedback.status_code == 404
    for method, path in (("POST", "/v1/documents"), ("DELETE", "/v1/documents/1"), ("GET", "/v1/export")):
        response = client.request(method, path, headers=auth(keys["bob"]), files={"files": ("a.txt", b"text")}
                                  if method == "POST" else None)
        assert response.status_code == 403 and "admin" in error_of(response)["message"]
    assert client.get("/v1/documents", headers=auth(keys["bob"])).status_code == 200


# -- documents -------------------------------------------------------------------------------------------------------
def test_documents_upload_with_a_corrupt_file_list_and_delete(client, service):
    files = [("files", ("lighthouse.txt", b"The Quanz lighthouse was built in 1911 by Mirela Quanz.", "text/plain")),
             ("files", ("broken.pdf", b"%PDF-1.7 this is not really a PDF", "application/pdf"))]
    report = client.post("/v1/documents", files=files)
    assert report.status_code == 200
    added, failed = report.json()["data"]
    assert added["status"] == "added" and added["document"]["passages"] >= 1
    assert failed["file"] == "broken.pdf" and failed["status"] == "failed" and failed["error"]
    names = [d["name"] for d in client.get("/v1/documents").json()["data"]]
    assert "lighthouse.txt" in names and "broken.pdf" not in names
    again = client.post("/v1/documents", files=files[:1]).json()["data"]
    assert again[0]["status"] == "unchanged"

    question = "Who built the Quanz lighthouse?"
    cited = ask(client, question).json()["chatqa"]["sources"]
    assert "lighthouse.txt" in [s["document"] for s in cited]
    doc_id = added["document"]["id"]
    assert client.delete(f"/v1/documents/{doc_id}").json()["deleted"] is True
    assert "lighthouse.txt" not in [s["document"] for s in ask(client, question).json()["chatqa"]["sources"]]
    assert client.delete(f"/v1/documents/{doc_id}").status_code == 404
    assert client.get("/v1/documents/99999999999999999999999").status_code == 400
    assert len(service.kb.list_documents()) == 2  # the fixture's two are untouched


def test_an_upload_over_the_size_limit_fails_alone(client, service):
    service.kb.max_file_bytes = 100
    data = client.post("/v1/documents", files=[("files", ("big.txt", b"word " * 100)),
                                               ("files", ("small.txt", b"The ferry leaves at noon."))]).json()["data"]
    assert {d["file"]: d["status"] for d in data} == {"big.txt": "failed", "small.txt": "added"}
    assert client.post("/v1/documents").status_code == 400


def test_hostile_file_names_are_kept_as_plain_names(client):
    name = "../../<img src=x onerror=alert(1)>\u202enote.txt"
    [result] = client.post("/v1/documents", files=[("files", (name, b"Quiet text about harbours."))]).json()["data"]
    assert result["status"] == "added" and "/" not in result["file"] and "\u202e" not in result["file"]


# -- feedback and export ---------------------------------------------------------------------------------------------
def test_feedback_with_a_span_appears_in_the_export(client):
    ext = ask(client, "Who designed the Eiffel Tower?").json()["chatqa"]
    passage = next(s for s in ext["sources"] if s["document"] == "eiffel.txt")
    start = passage["passage"].index("Gustave")
    body = {"turn_id": ext["turn_id"], "rating": "👎", "passage_rank": passage["rank"], "start": start,
            "end": start + len("Gustave Eiffel"), "comment": "full name"}
    stored = client.post("/v1/feedback", json=body)
    assert stored.status_code == 200 and stored.json()["corrected_text"] == "Gustave Eiffel"
    squad = client.get("/v1/export", params={"format": "squad"})
    assert squad.status_code == 200 and "Gustave Eiffel" in squad.text
    assert squad.json()["data"][0]["paragraphs"][0]["qas"][0]["question"] == "Who designed the Eiffel Tower?"
    chat = client.get("/v1/export?format=chat")
    assert chat.headers["content-type"].startswith("application/x-ndjson") and "Gustave Eiffel" in chat.text
    assert client.get("/v1/export?format=csv").status_code == 400


@pytest.mark.parametrize("body, status", [
    ({"turn_id": 424242, "rating": "up"}, 404),
    ({"turn_id": 1, "rating": "meh"}, 400),
    ({"turn_id": 1, "rating": "up", "typed_answer": "1887"}, 400),
    ({"turn_id": 1, "rating": "down", "passage_rank": 0, "start": 5, "end": 99999}, 400),
    ({"turn_id": 1, "rating": "down", "passage_rank": 0}, 400),
])
def test_bad_feedback_is_refused_and_stores_nothing(client, service, body, status):
    ask(client, EIFFEL_BUILT)
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == status and error_of(response)["message"]
    assert service.log.turn(1).feedback is None


# -- one engine, one question at a time; clients that leave ----------------------------------------------------------
class SlowDecoder(ScriptedDecoder):
    """Drafts word by word, ``pause`` seconds apart."""

    def __init__(self, draft: str, pause: float):
        super().__init__(draft)
        self.pause = pause

    def answer(self, question, passages, history=()):
        for i, word in enumerate(self.draft.split(" ")):
            time.sleep(self.pause)
            yield DraftPiece(word if i == 0 else " " + word, (-0.1,))


@pytest.fixture
def served(service):
    from ui.server import start

    draft = "The Eiffel Tower was built from 1887 to 1889 [1], " + "and it stood for the World's Fair " * 6 + "."
    service.engine.decoder = SlowDecoder(draft, 0.02)
    service.engine.policy = AbstentionPolicy(weights={"reader": 0.0, "coverage": 1.0})
    server = start(create_api(service), port=free_port(), block=False)
    yield server
    server.close()


def test_a_client_that_disconnects_mid_stream_leaves_a_whole_turn_and_a_free_engine(served, service):
    body = {"model": "chatqa-generative", "stream": True, "messages": [{"role": "user", "content": EIFFEL_BUILT}]}
    with httpx.Client(base_url=served.url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if '"content": "The"' in line:
                    break  # one word in, hang up
        deadline = time.monotonic() + 20
        while not service.log.conversations() or not service.log.history(service.log.conversations()[0].id):
            assert time.monotonic() < deadline, "the abandoned turn was never logged"
            time.sleep(0.05)
        [turn] = service.log.history(service.log.conversations()[0].id)
        assert turn.answer == service.engine.decoder.draft.strip()  # every word, though the client left after one
        after = http.post("/v1/chat/completions", json={**body, "stream": False}, timeout=30)
        assert after.status_code == 200 and "1887" in after.json()["choices"][0]["message"]["content"]


def test_concurrent_clients_are_answered_one_at_a_time_and_all_logged(served, service):
    results, errors = [], []

    def client(i: int) -> None:
        try:
            with httpx.Client(base_url=served.url, timeout=60) as http:
                response = http.post("/v1/chat/completions", json={
                    "model": "chatqa-generative", "messages": [{"role": "user", "content": EIFFEL_BUILT}]})
                results.append(response.json()["chatqa"]["turn_id"])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 4
    assert all(service.log.turn(t).answer.startswith("The Eiffel Tower") for t in results)
    assert service.runner.waiting == 0


def test_the_openapi_page_is_served_from_this_machine(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text and "cdn" not in page.text
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert "/v1/chat/completions" in client.get("/openapi.json").json()["paths"]


def test_run_py_api_only_serves_the_api_without_the_browser_app(monkeypatch, service):
    import run
    from ui.server import start

    calls = []
    monkeypatch.setattr(run, "launch", lambda *a, **kw: calls.append(kw))
    monkeypatch.delenv("CHATQA_AUTH", raising=False)
    assert run.main(["--api-only"]) == 0 and calls[-1]["api_only"] is True
    server = start(create_api(service), port=free_port(), block=False)  # what launch(api_only=True) serves
    try:
        assert httpx.get(f"{server.url}/v1/models").status_code == 200
        assert httpx.get(f"{server.url}/").status_code == 404  # no browser app
    finally:
        server.close()
