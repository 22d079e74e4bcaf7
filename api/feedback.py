"""``POST /v1/feedback`` and ``GET /v1/export``: the learning loop over HTTP, by the browser app's rules.

👍 marks an answer right. 👎 marks it wrong and may say what the right answer is: a span of one of the passages the
turn read (``passage_rank`` as in the answer's ``chatqa.sources[].rank``, with ``start``/``end`` character offsets
into that passage) or a typed answer. A caller gives feedback on the turns of their own conversations only. The
export holds everyone's feedback, so with users it is for admins.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.access import admin, caller, owner, service
from api.errors import APIError
from chatqa.auth import User
from chatqa.export import feedback_examples, render
from chatqa.log import UnknownConversation, UnknownTurn
from chatqa.service import ChatService

router = APIRouter()

RATINGS = {"up": "up", "down": "down", "👍": "up", "👎": "down"}


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    turn_id: int = Field(ge=1, le=2**62, description="the logged turn: chatqa.turn_id of the answer")
    rating: Literal["up", "down", "👍", "👎"]
    passage_rank: int | None = Field(None, ge=0, description="with 👎: the passage holding the right answer")
    start: int | None = Field(None, ge=0, description="the right answer's character offsets in that passage")
    end: int | None = Field(None, ge=0)
    typed_answer: str | None = Field(None, description="with 👎: the right answer, typed")
    comment: str | None = None


def give_feedback(svc: ChatService, body: FeedbackRequest, who: str | None) -> dict:
    rating = RATINGS[body.rating]
    span = (body.passage_rank, body.start, body.end)
    corrects = span != (None, None, None) or (body.typed_answer or "").strip()
    if corrects and rating != "down":
        raise APIError(400, "A corrected answer (a span or a typed answer) goes with a 👎 ('down') rating.",
                       param="rating", code="invalid_feedback")
    turn = svc.log.turn(body.turn_id)  # UnknownTurn: 404
    if who is not None:
        try:
            svc.log.check_owner(turn.conversation_id, who)
        except UnknownConversation:
            raise UnknownTurn(body.turn_id) from None  # another user's turn: as if it did not exist
    feedback_id = svc.log.feedback(body.turn_id, rating, passage_rank=body.passage_rank, start=body.start,
                                   end=body.end, typed_answer=body.typed_answer, comment=body.comment)
    stored = svc.log.turn(body.turn_id).feedback
    return {"id": feedback_id, "turn_id": body.turn_id, "rating": rating,
            "corrected_text": stored.corrected_text if stored else None,
            "typed_answer": stored.typed_answer if stored else None}


@router.post("/v1/feedback", tags=["feedback"], summary="👍 or 👎 on a logged answer, optionally with the right one")
async def feedback(body: FeedbackRequest, svc: ChatService = Depends(service),
                   user: User | None = Depends(caller)):
    return await run_in_threadpool(give_feedback, svc, body, owner(user))


@router.get("/v1/export", tags=["feedback"], summary="Training data from the feedback: SQuAD 2.0 JSON or chat JSONL")
async def export(format: Literal["squad", "chat"] = Query("squad", description="squad: for the reader; chat: for "  # noqa: A002
                                                                                 "the decoder (OpenAI messages)"),
                 since: str | None = Query(None, description="only feedback given at or after this ISO date/time"),
                 svc: ChatService = Depends(service), user: User | None = Depends(admin)):
    examples, counts = await run_in_threadpool(feedback_examples, svc.log, since)
    media = "application/json" if format == "squad" else "application/x-ndjson"
    return Response(render(examples, format), media_type=media,
                    headers={"x-chatqa-examples": str(counts.positives + counts.negatives)})
