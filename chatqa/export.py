"""Training data from the conversation log: what the person's feedback teaches the reader and the decoder.

``chatqa export --format squad`` writes SQuAD 2.0 JSON for the reader, ``--format chat`` writes chat JSONL
(OpenAI ``messages``) for the decoder; the UI's export buttons call the same functions. Only each turn's latest
feedback counts, and every example is built from the passage text the turn actually read (a copy kept in the log).

Which feedback becomes which example (question = the turn's history-aware standalone question, context = one
retrieved passage):

==========================================  ==========================================================================
latest feedback on the turn                 examples
==========================================  ==========================================================================
👍 on an answer                              positive: the answer's span in its passage
👍 on an abstention ("confirmed")            negative (``is_impossible``) for every passage the turn read
👎 with a selected span                      positive: that span; the wrongly answered passage, if another, negative
👎 with a typed answer                       positive where the answer occurs verbatim (case-insensitive) in a read
                                             passage, best-ranked first; else the turn is skipped. The wrongly
                                             answered passage, if another, negative
👎 on an answer, nothing else                negative: the answered passage
👎 on an abstention, nothing else            skipped (nothing says where the answer is)
==========================================  ==========================================================================

The chat export has one line per positive: the decoder's own prompt (:func:`chatqa.decoder.prompt_messages`: the
earlier turns, the evidence sentence, the span, the question) and, as the assistant's reply, the answer shown when
it was rated 👍, else :func:`chatqa.decoder.template_answer` around the corrected span.

Output is deterministic for a given log: turns in the order they were asked, passages by rank, ids ``t<turn>-p<rank>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Literal

from chatqa.decoder import DecoderConfig
from chatqa.grounding import evidence_sentence, template_answer
from chatqa.log import ConversationLog, LoggedTurn
from chatqa.prompt import PromptPassage, prompt_messages, prompt_passages
from knowledge.errors import ChatQAError
from knowledge.files import atomic_write

ExportFormat = Literal["squad", "chat"]
EXPORT_FORMATS: tuple[str, ...] = ("squad", "chat")
# "seed": not from the log, but a labelled answer of a QA file the decoder's retrain adds (finetune/decoder_seed.py)
Source = Literal["thumbs_up", "corrected_span", "typed_answer", "thumbs_down", "confirmed_abstention", "seed"]


class InvalidExport(ChatQAError):
    pass


@dataclass(frozen=True)
class FeedbackExample:
    """One reader training example from one turn and one of its passages."""

    id: str  # t<turn id>-p<passage rank>
    conversation_id: str
    turn_id: int
    question: str  # the standalone question
    context: str  # the passage text as the turn read it
    answer_start: int | None  # character offset into context; None for a negative
    answer_text: str | None
    source: Source
    reply: str | None = None  # positives: the reply the decoder should give (chat export)
    history: tuple[tuple[str, str], ...] = ()  # earlier (standalone question, answer span) pairs of the conversation
    passages: tuple = ()  # every passage the turn read (LoggedPassage), for the decoder's prompt
    rank: int = 0  # which of them is ``context``

    @property
    def is_impossible(self) -> bool:
        return self.answer_start is None


@dataclass
class ExportCounts:
    turns: int = 0  # turns with feedback that were looked at
    positives: int = 0
    negatives: int = 0
    skipped: int = 0  # turns whose feedback gives no example
    by_source: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{plural(self.turns, 'rated turn')} → {plural(self.positives, 'answer example')}, "
            f"{plural(self.negatives, 'no-answer example')}"
            + (f" ({plural(self.skipped, 'rated turn')} gave no example)" if self.skipped else "")
        )


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def parse_since(text: str | None) -> str | None:
    """``--since`` (a date ``2026-11-01`` or an ISO time) as the log's ISO-8601 UTC form; None stays None."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            when = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise InvalidExport(f"--since must be a date like 2026-11-01 or an ISO time, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def feedback_examples(log: ConversationLog, since: str | None = None) -> tuple[list[FeedbackExample], ExportCounts]:
    """Every example the log's feedback gives (see the module's table), and their counts."""
    counts = ExportCounts()
    examples: list[FeedbackExample] = []
    histories: dict[str, list[LoggedTurn]] = {}
    for turn in log.turns_with_feedback(parse_since(since)):
        counts.turns += 1
        if turn.conversation_id not in histories:
            histories[turn.conversation_id] = log.history(turn.conversation_id)
        earlier = tuple(
            (t.standalone_question, t.span_text or "")
            for t in histories[turn.conversation_id] if t.turn_index < turn.turn_index
        )
        made = list(_turn_examples(turn, earlier))
        if not made:
            counts.skipped += 1
        for ex in made:
            examples.append(ex)
            counts.by_source[ex.source] = counts.by_source.get(ex.source, 0) + 1
            if ex.is_impossible:
                counts.negatives += 1
            else:
                counts.positives += 1
    return examples, counts


def _turn_examples(turn: LoggedTurn, history: tuple[tuple[str, str], ...]) -> Iterable[FeedbackExample]:
    fb = turn.feedback
    if fb is None or not turn.passages:
        return
    passages = {p.rank: p for p in turn.passages}

    def example(rank: int, start: int | None, end: int | None, source: Source, reply: str | None = None):
        context = passages[rank].text
        text = None if start is None else context[start:end]
        if text is not None and reply is None:
            reply = template_answer(turn.standalone_question, text, evidence_sentence(context, start, end))
        return FeedbackExample(
            f"t{turn.id}-p{rank}", turn.conversation_id, turn.id, turn.standalone_question, context, start, text,
            source, reply if start is not None else None, history, tuple(turn.passages), rank,
        )

    answered = None if turn.abstained or turn.span_rank not in passages else turn.span_rank
    if fb.rating == "up":
        if answered is not None:
            yield example(answered, turn.span_start, turn.span_end, "thumbs_up", reply=turn.answer)
        elif turn.abstained:
            for rank in sorted(passages):
                yield example(rank, None, None, "confirmed_abstention")
        return

    right: tuple[int, int, int, Source] | None = None
    if fb.corrected_rank in passages and fb.corrected_start is not None and fb.corrected_end is not None:
        right = (fb.corrected_rank, fb.corrected_start, fb.corrected_end, "corrected_span")
    elif fb.typed_answer:
        right = _find_answer(fb.typed_answer, [passages[r] for r in sorted(passages)])
    if right is not None:
        yield example(*right)
    if answered is not None and (right is None or right[0] != answered):
        if right is None and fb.typed_answer:
            return  # the typed answer is in none of the passages: the answered one may still hold it
        yield example(answered, None, None, "thumbs_down")


def _find_answer(answer: str, passages) -> tuple[int, int, int, Source] | None:
    needle = " ".join(answer.split()).casefold()
    for p in passages:
        at = p.text.casefold().find(needle)
        if needle and at >= 0 and len(p.text.casefold()) == len(p.text):  # casefold kept the offsets
            return p.rank, at, at + len(needle), "typed_answer"
    return None


# -- formats -----------------------------------------------------------------------------------------------------
def squad_json(examples: list[FeedbackExample]) -> dict:
    """SQuAD 2.0 JSON: one article per conversation, one paragraph per example (extra keys: conversation_id,
    turn_id, source — SQuAD readers ignore them)."""
    articles: dict[str, dict] = {}
    for ex in examples:
        article = articles.setdefault(ex.conversation_id, {"title": ex.conversation_id, "paragraphs": []})
        answers = [] if ex.is_impossible else [{"text": ex.answer_text, "answer_start": ex.answer_start}]
        article["paragraphs"].append({"context": ex.context, "qas": [{
            "id": ex.id, "question": ex.question, "answers": answers, "is_impossible": ex.is_impossible,
            "conversation_id": ex.conversation_id, "turn_id": ex.turn_id, "source": ex.source,
        }]})
    return {"version": "v2.0", "source": "chatqa-feedback", "data": list(articles.values())}


def chat_records(examples: list[FeedbackExample]) -> list[dict]:
    """Chat JSONL records for the decoder: one per positive, with the prompt rebuilt as the decoder saw it (the
    turn's passages, numbered and cut the same way, the example's passage always among them). A corrected span's
    reply is the extractive template citing its passage; a seed example's, the sentence holding its answer."""
    records = []
    for ex in examples:
        if ex.is_impossible:
            continue
        end = ex.answer_start + len(ex.answer_text)
        index, shown = example_passages(ex)
        reply = ex.reply
        if ex.source != "thumbs_up":
            number = next(p.number for p in shown if p.index == index)
            evidence = evidence_sentence(ex.context, ex.answer_start, end)
            answer = " ".join(evidence.split()) if ex.source == "seed" else template_answer(ex.question, ex.answer_text, evidence)
            reply = f"{answer} [{number}]"
        messages = prompt_messages(ex.question, shown, ex.history)
        messages.append({"role": "assistant", "content": reply})
        records.append({"id": ex.id, "conversation_id": ex.conversation_id, "source": ex.source, "messages": messages})
    return records


def example_passages(ex: FeedbackExample, budgets: tuple[int, ...] | None = None) -> tuple[int, list[PromptPassage]]:
    """The passages the decoder is shown for a positive example, as at answer time (numbered and cut the same way, the
    example's passage always among them), and the index of the example's passage among the turn's passages."""
    if ex.is_impossible:
        raise ValueError(f"example {ex.id} has no answer span: the decoder is not prompted for it")
    budgets = budgets if budgets is not None else DecoderConfig().passage_chars
    passages = list(ex.passages) or [ExamplePassage(ex.context)]
    index = next((i for i, p in enumerate(passages) if getattr(p, "rank", 0) == ex.rank), 0)
    span = (index, ex.answer_start, ex.answer_start + len(ex.answer_text))
    return index, prompt_passages(passages, ex.question, span, budgets)


@dataclass(frozen=True)
class ExamplePassage:
    """A passage of an example built without a logged turn (its context alone, or a QA file's paragraph)."""

    text: str
    doc_name: str = "document"
    page: int | None = None
    rank: int = 0


def render(examples: list[FeedbackExample], fmt: str) -> str:
    """The export file's text in ``fmt`` ("squad" or "chat")."""
    if fmt == "squad":
        return json.dumps(squad_json(examples), ensure_ascii=False, indent=1) + "\n"
    if fmt == "chat":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chat_records(examples))
    raise InvalidExport(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")


def export(log: ConversationLog, fmt: str, out: str | Path, since: str | None = None) -> ExportCounts:
    """Write the export file atomically (a failed export leaves any earlier file whole) and return the counts."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidExport(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.is_dir():
        example = out / ("reader.json" if fmt == "squad" else "decoder.jsonl")
        raise InvalidExport(f"{out} is a folder; --out needs a file name, such as {example}")
    examples, counts = feedback_examples(log, since)
    text = render(examples, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text)
    return counts
