"""One conversational turn, end to end:

    question + history → DialogManager.condense → KnowledgeBase.search → ExtractiveReader.read → decide
      → compose (template or GenerativeDecoder) → TurnResult → ConversationLog.record

`ChatEngine.stream` yields events as the turn progresses (status lines, answer pieces, then the TurnResult) so a UI
or terminal can show the answer while it is written; `ChatEngine.ask` returns the TurnResult.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from chatqa.decide import AbstentionPolicy, Signals, coverage, reader_signal
from chatqa.decoder import DecoderUnavailable, GenerativeDecoder, decoder_registry
from chatqa.dialog import DialogManager, Exchange
from chatqa.grounding import abstention_answer, evidence_sentence, support, supporting_span, template_answer
from chatqa.log import ConversationLog
from chatqa.models.sources import DEFAULT_DECODER
from chatqa.prompt import citations, prompt_passages
from chatqa.reader import ExtractiveReader
from chatqa.registry import ModelRegistry, ModelVersion
from chatqa.turn import ANSWER_MODES, AnswerSpan, TurnResult
from knowledge.base import KnowledgeBase
from knowledge.errors import ChatQAError, InvalidQuery

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2_000


@dataclass(frozen=True)
class EngineSettings:
    mode: str = "auto"  # extractive: span + its sentence; generative: the decoder phrases it; auto: decoder if loaded
    k: int = 5  # passages read per question
    strictness: float = 0.0  # subtracted from the reader's calibrated threshold: higher abstains more often

    def __post_init__(self) -> None:
        if self.mode not in ANSWER_MODES:
            raise InvalidQuery(f"answer mode must be one of {', '.join(ANSWER_MODES)}, got {self.mode!r}")
        if not 1 <= self.k <= 50:
            raise InvalidQuery(f"the number of passages must be between 1 and 50, got {self.k}")


@dataclass(frozen=True)
class TurnEvent:
    kind: Literal["status", "token", "replace", "final"]  # replace: the streamed text is superseded by `text`
    text: str = ""
    result: TurnResult | None = None


def check_question(question: str) -> str:
    """The question with its white space tidied, or InvalidQuery saying what is wrong with it."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidQuery("Please type a question.")
    question = " ".join(question.split())
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidQuery(
            f"That question is {len(question):,} characters long; please ask it in at most {MAX_QUESTION_CHARS:,} "
            "characters (put long text into a document instead)."
        )
    return question


def final_result(events: Iterable[TurnEvent]) -> TurnResult:
    """The TurnResult that ends a turn's events (the ones before it are consumed)."""
    for event in events:
        if event.kind == "final":
            return event.result
    raise RuntimeError("the turn ended without a result")


class ChatEngine:
    """Answers questions over a knowledge base, remembering each conversation's earlier turns."""

    def __init__(
        self,
        kb: KnowledgeBase,
        reader: ExtractiveReader,
        *,
        decoder: GenerativeDecoder | None = None,
        log: ConversationLog | None = None,
        dialog: DialogManager | None = None,
        settings: EngineSettings | None = None,
        registry: ModelRegistry | None = None,
        decoder_registry: ModelRegistry | None = None,
        policy: AbstentionPolicy | None = None,
    ):
        self.kb = kb
        self.reader = reader
        # With a registry, the reader follows its active version: a promoted model is used from the next turn on.
        self.registry = registry
        self.reader_version = registry.active().id if registry is not None else None
        self.decoder_registry = decoder_registry
        self.decoder_version = decoder_registry.active().id if decoder_registry is not None else None
        self.decoder = decoder
        self.log = log
        self.dialog = dialog if dialog is not None else DialogManager()
        self.settings = settings if settings is not None else EngineSettings()
        self.policy = policy if policy is not None else AbstentionPolicy.load()
        self._memory: dict[str, list[Exchange]] = {}  # history when there is no log

    def warm_up(self, *, decoder: bool = True) -> None:
        self.kb.open()
        self.kb.embedder.warm_up()
        self.reader.warm_up()
        if decoder and self.decoder is not None:
            self.decoder.warm_up()

    # -- answering -------------------------------------------------------------------------------------------------
    def ask(self, question: str, conversation_id: str | None = None, **kwargs) -> TurnResult:
        return final_result(self.stream(question, conversation_id, **kwargs))

    def stream(
        self, question: str, conversation_id: str | None = None, *,
        history: Sequence[tuple[str, str]] | None = None, **overrides,
    ) -> Iterator[TurnEvent]:
        """Events of one turn. Raises InvalidQuery (before any event) for an empty or oversized question.

        The earlier turns are the logged conversation's, or ``history``: (question, answer) pairs a caller kept
        itself (an API client sending its messages), used in their place."""
        question = check_question(question)
        settings = replace(self.settings, **overrides) if overrides else self.settings
        timings: dict[str, float] = {}
        self.sync_reader()
        self.sync_decoder()

        t = time.perf_counter()
        history, exchanges = self._history(conversation_id) if history is None else self._given_history(history)
        standalone = self.dialog.condense(question, history)
        timings["condense"] = time.perf_counter() - t
        if standalone != question:
            yield TurnEvent("status", f"Searching for: {standalone}")

        t = time.perf_counter()
        hits = self.kb.search(self.dialog.search_query(question, standalone, history), k=settings.k)
        timings["search"] = time.perf_counter() - t

        t = time.perf_counter()
        read = self.reader.read_batch([standalone], [[h.text for h in hits]], top_k=1)[0]
        best = read.answers[0] if read.answers else None
        span = None if best is None else AnswerSpan(
            passage_index=best.passage_index, chunk_id=hits[best.passage_index].chunk_id,
            doc_id=hits[best.passage_index].doc_id, doc_name=hits[best.passage_index].doc_name, start=best.start,
            end=best.end, text=best.text, score=best.score, no_answer_score=best.no_answer_score,
        )
        signals = Signals(
            reader=reader_signal(None if best is None else best.score, 0.0 if best is None else best.no_answer_score,
                                 self.answer_threshold(), settings.strictness),
            coverage=coverage(standalone, [h.text for h in hits]),
            dense=max((h.dense_score for h in hits if h.dense_score is not None), default=0.0),
        )
        timings["read"] = time.perf_counter() - t

        t = time.perf_counter()
        result = TurnResult(
            question=question, standalone_question=standalone, answer="", mode="extractive", abstained=False,
            span=span, passages=hits, timings=timings, model_versions=self.model_versions(),
            conversation_id=conversation_id,
        )
        if self._use_decoder(settings.mode):
            yield from self._compose_generative(result, signals, exchanges, settings.mode)
        else:
            yield from self._compose_extractive(result, signals)
        result.signals = replace(signals, **result.signals).as_dict()
        timings["compose"] = time.perf_counter() - t

        if conversation_id is not None:
            if self.log is not None:
                self.log.record(conversation_id, result)
            else:
                self._memory.setdefault(conversation_id, []).append(
                    Exchange(standalone, span.text if span is not None and not result.abstained else "")
                )
        yield TurnEvent("final", result.answer, result)

    def _abstain(self, result: TurnResult) -> str:
        result.abstained, result.span, result.evidence, result.mode = True, None, None, "extractive"
        result.answer = abstention_answer([h.doc_name for h in result.passages])
        return result.answer

    def _compose_extractive(self, result: TurnResult, signals: Signals) -> Iterator[TurnEvent]:
        """The reader's span and its sentence, when the reader's margin clears its threshold."""
        span = result.span
        if span is None or signals.reader < 0:
            yield TurnEvent("token", self._abstain(result))
            return
        passage = result.passages[span.passage_index].text
        result.answer = template_answer(result.standalone_question, span.text,
                                        evidence_sentence(passage, span.start, span.end))
        result.evidence = (span.passage_index, span.start, span.end)
        yield TurnEvent("token", result.answer)

    def _compose_generative(
        self, result: TurnResult, signals: Signals, exchanges: list[tuple[str, str]], mode: str
    ) -> Iterator[TurnEvent]:
        """The decoder's answer from the top passages, decided on before its first token is shown (see
        :mod:`chatqa.decide`); the reader's extractive answer when the decoder cannot be loaded."""
        if not self.policy.answers(signals):
            yield TurnEvent("token", self._abstain(result))
            return
        span = result.span
        reader_span = None if span is None else (span.passage_index, span.start, span.end)
        shown = prompt_passages(result.passages, result.standalone_question, reader_span,
                                self.decoder.config.passage_chars)
        draft, logprobs = "", []
        try:
            for piece in self.decoder.answer(result.standalone_question, shown, exchanges):
                draft += piece.text
                logprobs += piece.logprobs
                yield TurnEvent("token", piece.text)
        except DecoderUnavailable as e:
            logger.warning("decoder unavailable, answering extractively: %s", e)
            if mode == "generative":
                yield TurnEvent("status", f"The generative decoder is unavailable ({e}); showing the extracted answer.")
            yield from self._compose_extractive(result, replace(signals, reader=max(signals.reader, 0.0)))
            return
        draft = draft.strip()
        sources = [p.text for p in shown]
        mean_logprob = sum(logprobs) / len(logprobs) if logprobs else None
        drafted = replace(signals, support=support(draft, sources), mean_logprob=mean_logprob)
        result.signals = {"support": drafted.support, "mean_logprob": mean_logprob}
        if not draft or self.policy.retracts(drafted):
            logger.info("draft retracted (guard score %s): %r", self.policy.guard_score(drafted), draft)
            yield TurnEvent("replace", self._abstain(result))
            return
        result.mode = "generative"
        result.citations = citations(draft, shown)
        result.cited_numbers = {p.index: p.number for p in shown}
        prefer = result.citations or [p.index for p in shown]
        result.evidence = supporting_span(draft, [h.text for h in result.passages], reader_span, prefer)
        if not result.citations and result.evidence is not None and result.evidence[0] in result.cited_numbers:
            # the model did not cite: the app names the passage that supports the answer
            suffix = f" [{result.cited_numbers[result.evidence[0]]}]"
            draft += suffix
            result.citations = [result.evidence[0]]
            yield TurnEvent("token", suffix)
        result.answer = draft

    def _history(self, conversation_id: str | None) -> tuple[list[Exchange], list[tuple[str, str]]]:
        """The dialog manager's exchanges (question, the reader's span) and the decoder's (question, answer shown)."""
        if conversation_id is None:
            return [], []
        if self.log is None:
            exchanges = self._memory.get(conversation_id, [])[-self.dialog.max_history :]
            return exchanges, [(e.question, e.answer) for e in exchanges]
        try:
            turns = self.log.history(conversation_id)[-self.dialog.max_history :]
        except Exception:  # an unknown id starts a new conversation
            return [], []
        return ([Exchange(t.standalone_question, t.span_text or "") for t in turns],
                [(t.question, t.answer) for t in turns])

    def _given_history(
        self, pairs: Sequence[tuple[str, str]]
    ) -> tuple[list[Exchange], list[tuple[str, str]]]:
        """A caller's own (question, answer) pairs: the questions for the dialog manager (their answers are whole
        replies, not the spans it resolves pronouns to) and the pairs for the decoder."""
        kept = [(" ".join(q.split()), " ".join(a.split())) for q, a in pairs][-self.dialog.max_history :]
        return [Exchange(q, "") for q, _ in kept if q], [(q, a) for q, a in kept if q]

    def sync_reader(self) -> None:
        """Switch to the registry's active reader version when it changed (a retrain promoted one, or the person
        switched back)."""
        switched = _switch("reader", self.registry, self.reader_version, self._load_reader)
        if switched is not None:
            self.reader, self.reader_version = switched

    def sync_decoder(self) -> None:
        """Switch to the decoder registry's active version when it changed (loaded at once if the old one was)."""
        if self.decoder is None:
            return
        switched = _switch("decoder", self.decoder_registry, self.decoder_version, self._load_decoder)
        if switched is not None:
            self.decoder, self.decoder_version = switched

    def _load_reader(self, version: ModelVersion) -> ExtractiveReader:
        reader = ExtractiveReader(self.registry.checkpoint(version))
        reader.warm_up()
        return reader

    def _load_decoder(self, version: ModelVersion) -> GenerativeDecoder:
        folder = None if version.path is None else self.decoder_registry.checkpoint(version)
        decoder = GenerativeDecoder(self.decoder.cache_dir, model=self.decoder.source.name, model_folder=folder,
                                    config=self.decoder.config)
        if self.decoder.is_loaded:
            decoder.warm_up()
        return decoder

    def answer_threshold(self) -> float:
        """The reader's chat threshold when its checkpoint has one, else its no-answer threshold."""
        settings = getattr(self.reader, "settings", None)
        chat = getattr(settings, "chat_threshold", None)
        return chat if chat is not None else self.reader.threshold

    def _use_decoder(self, mode: str) -> bool:
        if self.decoder is None or mode == "extractive":
            return False
        return mode == "generative" or self.decoder.is_loaded

    def describe_models(self) -> list[tuple[str, list[str]]]:
        """What the Models tab and ``--verbose`` show: per role, lines about the model in use (loads nothing)."""
        reader = self.reader
        lines = [f"version: {self.reader_version}" if self.reader_version else "version: (a fixed checkpoint)",
                 f"checkpoint: {reader.checkpoint}"]
        settings = getattr(reader, "settings", None)
        if settings is not None:
            chat = "—" if settings.chat_threshold is None else f"{settings.chat_threshold:.3f}"
            lines.append(f"no-answer threshold {settings.no_answer_threshold:.3f} (SQuAD 2.0), {chat} (chat)")
        for name, m in reader_scores(reader.checkpoint):
            extra = f", HasAns F1 {m['has_ans_f1']}, NoAns F1 {m['no_ans_f1']}" if "has_ans_f1" in m else ""
            lines.append(f"{name}: EM {m.get('exact_match')}, F1 {m.get('f1')}{extra}")
        loaded = getattr(reader, "is_loaded", False)
        lines.append(f"device: {reader.device if loaded else 'not loaded yet'}")
        roles = [("Reader (extractive)", lines)]
        if self.decoder is None:
            roles.append(("Decoder (generative)", ["off: extractive answers only"]))
        else:
            state = "loaded" if self.decoder.is_loaded else "not loaded yet"
            roles.append(("Decoder (generative)", [f"version: {self.decoder_version or self.decoder.name}: {state}",
                                                   f"folder: {self.decoder.folder}"]))
        embedder = self.kb.embedder
        runs = {"ct2-int8": "CTranslate2 int8", "torch-bf16": "torch, bf16 autocast", "torch-fp32": "torch, fp32"}
        facts = [embedder.name]
        if getattr(embedder, "is_loaded", False):
            facts.append(f"runs on: {runs.get(embedder.runs_on, embedder.runs_on)}")
        roles.append(("Embedder (retrieval)", facts))
        return roles

    def model_versions(self) -> dict[str, str]:
        versions = {"reader": self.reader_version or self.reader.checkpoint.name, "embedder": self.kb.embedder.name}
        if self.decoder is not None:
            versions["decoder"] = self.decoder_version or self.decoder.name
        return versions


def _switch(role: str, registry: ModelRegistry | None, loaded: str | None, load):
    """``(model, version id)`` of the registry's active version when it is not the ``loaded`` one, else None. A
    version that cannot be loaded is logged and None returned: the model in use stays."""
    if registry is None:
        return None
    try:
        active = registry.active()
        if active.id == loaded:
            return None
        model = load(active)
    except ChatQAError as e:
        logger.error("keeping %s %s: %s", role, loaded, e)
        return None
    logger.info("%s %s → %s", role, loaded, active.id)
    return model, active.id


def reader_scores(checkpoint) -> list[tuple[str, dict]]:
    """The evaluations stored in a reader checkpoint's ``metrics.json`` (empty when it has none)."""
    import json
    from pathlib import Path

    try:
        data = json.loads((Path(checkpoint) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(data.get("evaluations", {}).items())


def open_engine(
    data_dir=None, *, settings: EngineSettings | None = None, reader_checkpoint=None, decoder: bool = True,
    lazy: bool = False, decoder_model: str = DEFAULT_DECODER,
) -> ChatEngine:
    """The engine over one data directory: its knowledge base (seeded with the bundled documents on first use),
    the shipped reader (or `reader_checkpoint`), the decoder converted into `models/`, and the conversation log.

    `lazy`: return at once and leave opening the knowledge base (which loads the embedder) and seeding it to the
    caller (the browser app does both while it warms up, with its page already served).
    """
    from knowledge.bundle import seed_bundled_documents

    kb = KnowledgeBase(data_dir)
    if not lazy:
        seed_bundled_documents(kb.open())
    registry = ModelRegistry(kb.data_dir) if reader_checkpoint is None else None
    decoders = decoder_registry(kb.data_dir, decoder_model)
    active_decoder = decoders.active()
    return ChatEngine(
        kb,
        ExtractiveReader(registry.checkpoint() if registry is not None else reader_checkpoint),
        registry=registry,
        decoder=GenerativeDecoder(
            model=decoder_model, model_folder=None if active_decoder.path is None else decoders.checkpoint()
        ) if decoder else None,
        decoder_registry=decoders if decoder else None,
        log=ConversationLog(kb.data_dir),
        settings=settings,
    )
