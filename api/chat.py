"""``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI's chat-completions protocol over ChatQA's engine.

The last user message is the question; the earlier user and assistant messages are its history, so a client that
keeps its own history (most chat front ends) works. Where that history ends on an answer this server gave, the turn
continues that logged conversation; ``conversation`` (a conversation id, or the ``id`` of an earlier response)
continues one explicitly. Every answer is logged, so feedback can be given on it (``POST /v1/feedback``).

``model`` chooses how answers are made: ``chatqa`` (the generative decoder once it is loaded, else extractive),
``chatqa-extractive`` or ``chatqa-generative``. Parameters such as ``temperature`` are accepted and ignored: the
answer is decided by the documents, not by sampling. Beyond OpenAI's fields, a response carries ``chatqa``: the
conversation, the logged turn id, whether it abstained, and the sources (document, page, passage, the highlighted
span's offsets). ``usage`` counts the tokens of the messages sent and of the answer, with the decoder's tokenizer
once it is loaded (the embedder's before); the passages the server adds to the decoder's prompt are not counted.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from api.access import caller, owner, service
from api.errors import APIError, error_body, status_of
from chatqa.auth import User
from chatqa.engine import TurnEvent, check_question, final_result
from chatqa.service import ChatService
from chatqa.turn import TurnResult, source_numbers
from knowledge.errors import ChatQAError

router = APIRouter()

MODELS = {"chatqa": "auto", "chatqa-extractive": "extractive", "chatqa-generative": "generative"}
READY_TIMEOUT_S = 600.0


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, …: accepted, not used
    model: str = "chatqa"
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    conversation: str | None = Field(None, description="continue this logged conversation (an id, or the id of an "
                                                        "earlier response)")
    k: int | None = Field(None, ge=1, le=50, description="passages read per question (default: the server's)")


def text_of(message: Message, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.type != "text":
            raise APIError(400, f"messages[{index}] has a {part.type!r} part; ChatQA reads text only.",
                           param=f"messages[{index}].content", code="unsupported_content")
        parts.append(part.text or "")
    return "\n".join(parts)


def split_messages(messages: list[Message]) -> tuple[str, list[tuple[str, str]]]:
    """The question (the last message, which must be the user's) and the earlier (question, answer) pairs; system
    messages are ignored (ChatQA's instructions are its own)."""
    if messages[-1].role != "user":
        raise APIError(400, f"The last message must be the user's question, not a {messages[-1].role!r} message.",
                       param="messages", code="no_question")
    question = text_of(messages[-1], len(messages) - 1)
    pairs: list[tuple[str, str]] = []
    asked: str | None = None
    for i, message in enumerate(messages[:-1]):
        if message.role == "user":
            asked = text_of(message, i)
        elif message.role == "assistant" and asked is not None:
            pairs.append((asked, text_of(message, i)))
            asked = None
    return question, pairs


def conversation_id_of(value: str) -> str:
    """A conversation id from a conversation id or a response id (``chatcmpl-<conversation>-<random>``)."""
    value = value.strip()
    if value.startswith("chatcmpl-"):
        value = value.removeprefix("chatcmpl-").split("-")[0]
    return value


def resolve(svc: ChatService, requested: str | None, pairs: list[tuple[str, str]], who: str | None):
    """(conversation id, history for the engine or None to use the logged one)."""
    log = svc.log
    if requested:
        conversation_id = conversation_id_of(requested)
        log.check_owner(conversation_id, who)  # UnknownConversation (404) when it is not the caller's
        return conversation_id, None
    if pairs:
        turn = log.last_turn_matching(*pairs[-1], owner=who)
        if turn is not None:
            return turn.conversation_id, None
    return log.new_conversation(owner=who), pairs


def count_tokens(svc: ChatService, text: str) -> int:
    if not text:
        return 0
    decoder = svc.engine.decoder
    if decoder is not None and decoder.is_loaded:
        return decoder.count_tokens(text)
    encoded = svc.kb.embedder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return len(encoded["offset_mapping"])


def sources(result: TurnResult) -> list[dict[str, Any]]:
    """The passages read, in the order they are numbered in the answer's citations, with the evidence span."""
    numbers = source_numbers(len(result.passages), result.cited_numbers)
    out = []
    for i, hit in enumerate(result.passages):
        span = None
        if result.evidence is not None and result.evidence[0] == i:
            _, start, end = result.evidence
            span = {"start": start, "end": end, "text": hit.text[start:end],
                    "document_start": hit.start + start, "document_end": hit.start + end}
        out.append({
            "number": numbers[i], "rank": i, "document": hit.doc_name, "document_id": hit.doc_id, "page": hit.page,
            "passage": hit.text, "passage_start": hit.start, "passage_end": hit.end, "score": round(hit.score, 6),
            "cited": i in result.citations, "span": span,
        })
    return sorted(out, key=lambda s: s["number"])


def extension(result: TurnResult) -> dict[str, Any]:
    return {
        "conversation": result.conversation_id, "turn_id": result.turn_id, "abstained": result.abstained,
        "mode": result.mode, "question": result.question, "standalone_question": result.standalone_question,
        "sources": sources(result),
    }


class Completion:
    """One request's answer in OpenAI's shapes."""

    def __init__(self, svc: ChatService, body: ChatCompletionRequest, conversation_id: str):
        self.svc, self.model = svc, body.model
        self.id = f"chatcmpl-{conversation_id}-{secrets.token_hex(4)}"
        self.created = int(time.time())
        self.prompt_text = "\n".join(text_of(m, i) for i, m in enumerate(body.messages))

    def usage(self, answer: str) -> dict[str, int]:
        prompt, completion = count_tokens(self.svc, self.prompt_text), count_tokens(self.svc, answer)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def response(self, result: TurnResult) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": self.usage(result.answer), "chatqa": extension(result),
        }

    def chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}
        return sse(body)

    def events(self, events: Iterator[TurnEvent], first: TurnEvent, include_usage: bool) -> Iterator[str]:
        """Server-sent events: a role chunk, content chunks, the final chunk (with ``chatqa``), usage, ``[DONE]``.
        A ``replace`` event (the draft was withdrawn) is sent as its own text after a blank line, marked
        ``chatqa.replaced``: OpenAI's protocol cannot take back what was streamed."""
        yield self.chunk({"role": "assistant", "content": ""})
        try:
            event = first
            while True:
                if event.kind == "status":
                    yield self.chunk({"content": ""}, chatqa={"status": event.text})
                elif event.kind == "token" and event.text:
                    yield self.chunk({"content": event.text})
                elif event.kind == "replace":
                    yield self.chunk({"content": "\n\n" + event.text}, chatqa={"replaced": True, "answer": event.text})
                elif event.kind == "final":
                    result = event.result
                    yield self.chunk({}, "stop", chatqa=extension(result))
                    if include_usage:
                        yield sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                   "model": self.model, "choices": [], "usage": self.usage(result.answer)})
                    break
                event = next(events)
        except ChatQAError as e:
            yield sse(error_body(status_of(e)[0], str(e)))
        except Exception as e:
            yield sse(error_body(500, f"ChatQA failed while answering ({type(e).__name__}); details are in the "
                                      "server's log."))
            raise
        yield "data: [DONE]\n\n"


def sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


@router.get("/v1/models", tags=["chat"], summary="The answer modes, as OpenAI models")
async def list_models(user: User | None = Depends(caller)):
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "chatqa"}
                                       for name in MODELS]}


@router.post("/v1/chat/completions", tags=["chat"], summary="Answer the last user message from the documents")
async def chat_completions(body: ChatCompletionRequest, svc: ChatService = Depends(service),
                           user: User | None = Depends(caller)):
    if body.model not in MODELS:
        raise APIError(404, f"The model {body.model!r} does not exist; ChatQA's models are {', '.join(MODELS)}.",
                       param="model", code="model_not_found")
    question, pairs = split_messages(body.messages)
    check_question(question)  # an empty or oversized question is a 400 before anything is logged
    if not await run_in_threadpool(svc.ready.wait, READY_TIMEOUT_S):
        raise APIError(503, "ChatQA is still loading its models; try again shortly.", code="loading")
    conversation_id, history = await run_in_threadpool(resolve, svc, body.conversation, pairs, owner(user))
    overrides: dict[str, Any] = {"mode": MODELS[body.model]}
    if body.k is not None:
        overrides["k"] = body.k
    completion = Completion(svc, body, conversation_id)
    events = svc.runner.stream(question, conversation_id, history=history, **overrides)
    first = await run_in_threadpool(next, events)  # errors before the first event are still a plain 4xx
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = completion.events(events, first, include_usage)
        return StreamingResponse(iterate_in_threadpool(chunks), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
    result = await run_in_threadpool(final_result, itertools.chain([first], events))
    return JSONResponse(completion.response(result))
