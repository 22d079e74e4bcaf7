"""Evaluation on SQuAD-format files: retrieval recall@k, reader EM/F1, the conversation set, threshold calibration."""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatqa import metrics
from chatqa.squad import SquadFile, load_squad
from knowledge.base import KnowledgeBase
from knowledge.embedder import Embedder
from knowledge.errors import ChatQAError

if TYPE_CHECKING:
    from chatqa.reader import ExtractiveReader

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArticleDocument:
    """A SQuAD article as one document: paragraphs joined by blank lines, with each paragraph's offset."""

    title: str
    text: str
    paragraph_starts: tuple[int, ...]

    @classmethod
    def from_article(cls, article) -> ArticleDocument:
        starts, pos = [], 0
        for p in article.paragraphs:
            starts.append(pos)
            pos += len(p.context) + 2
        return cls(article.title, "\n\n".join(p.context for p in article.paragraphs), tuple(starts))

    @property
    def file_name(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.title) or "article"
        return f"{safe}.txt"


def build_article_kb(squad: SquadFile, kb: KnowledgeBase) -> list[tuple[ArticleDocument, int]]:
    """Add each article of a SQuAD file to `kb` as one document. Returns (article document, doc id) pairs."""
    added = []
    for article in squad.articles:
        doc = ArticleDocument.from_article(article)
        info, _ = kb.add_bytes(doc.text.encode("utf-8"), doc.file_name, save_index=False)
        stored = kb.store.document_text(info.id)
        if stored != doc.text:
            raise ChatQAError(f"article {doc.title!r} changed while loading; its answer offsets would not match")
        added.append((doc, info.id))
    kb.index.save()
    return added


def parse_ks(text: str | Sequence[int]) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()] if isinstance(text, str) else [int(x) for x in text]
    except ValueError:
        ks = []
    if not ks or any(k < 1 for k in ks):
        raise ChatQAError(f"--k needs positive integers such as 1,5,20, got {text!r}")
    return sorted(set(ks))


def evaluate_retrieval(
    squad_path: str | Path,
    *,
    ks: Sequence[int] = (1, 5, 20),
    mode: str = "hybrid",
    limit: int | None = None,
    embedder: Embedder | None = None,
) -> dict:
    """Recall@k over a throw-away knowledge base built from the file's articles.

    A question counts as found at k when one of the top-k chunks' character range covers one of its gold answers.
    Unanswerable questions are skipped.
    """
    t0 = time.perf_counter()
    squad = load_squad(squad_path)
    with tempfile.TemporaryDirectory(prefix="chatqa-eval-") as tmp, KnowledgeBase(tmp, embedder=embedder) as kb:
        docs = build_article_kb(squad, kb)
        t_indexed = time.perf_counter()
        queries, golds = [], []
        for article, (doc, doc_id) in zip(squad.articles, docs, strict=True):
            for paragraph, offset in zip(article.paragraphs, doc.paragraph_starts, strict=True):
                for q in paragraph.questions:
                    if q.is_impossible or not q.answers:
                        continue
                    queries.append(q.question)
                    golds.append((doc_id, [(offset + a.start, offset + a.end) for a in q.answers]))
        if limit is not None:
            queries, golds = queries[:limit], golds[:limit]
        if not queries:
            raise ChatQAError(f"{squad_path}: no answerable questions to evaluate")
        results = kb.search_many(queries, k=max(ks), mode=mode)
        found = {k: 0 for k in ks}
        for hits, (doc_id, spans) in zip(results, golds, strict=True):
            rank = next(
                (r for r, h in enumerate(hits, 1) if h.doc_id == doc_id and any(h.covers(s, e) for s, e in spans)),
                None,
            )
            for k in ks:
                found[k] += rank is not None and rank <= k
        n_chunks = kb.store.count_chunks()
    t_end = time.perf_counter()
    report = {f"recall@{k}": round(found[k] / len(queries), 4) for k in ks}
    report.update(
        mode=mode,
        questions=len(queries),
        documents=len(docs),
        chunks=n_chunks,
        seconds=round(t_end - t0, 2),
        index_seconds=round(t_indexed - t0, 2),
        search_ms_per_question=round(1000 * (t_end - t_indexed) / len(queries), 2),
    )
    return report


def evaluate_reader(
    squad_path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    limit: int | None = None,
    reader: ExtractiveReader | None = None,
    batch_questions: int = 32,
    show_progress: bool = False,
    articles: str | None = None,
    sample: int | None = None,
) -> dict:
    """Reading comprehension: the reader answers each question from its own gold paragraph only.

    Questions are taken in the file's order (``limit``: the first N). ``reader`` (else an
    :class:`~chatqa.reader.ExtractiveReader` on ``checkpoint``) reads ``batch_questions`` questions at a time.
    Returns a flat dict. For a SQuAD 1.1 file (no ``is_impossible`` anywhere): ``exact_match`` and ``f1`` of the
    top span, ignoring abstention (every question is answerable), and ``abstained``, the share of questions the
    threshold would abstain on. For a 2.0 file: ``exact_match``, ``f1``, ``has_ans_f1`` and ``no_ans_f1`` with the
    checkpoint's threshold deciding abstention (prediction ``""``), plus, for information only, ``best_f1`` and
    ``best_f1_threshold`` (the best threshold for this very file). Always ``squad_version``, ``threshold``,
    ``questions``, ``seconds`` (loading included), ``questions_per_second``
    (reading only) and ``checkpoint``. Scores are percentages (0-100). ``articles`` = "even" or "odd" keeps the
    articles at even or odd positions of the file (the calibration split and the held-out split). ``sample`` = N
    keeps a fixed, seeded sample of N questions (the same ones on every run).
    """
    from chatqa.reader import ExtractiveReader

    if checkpoint is not None and reader is not None:
        raise ValueError("give evaluate_reader a checkpoint or a reader, not both")
    if limit is not None and limit < 1:
        raise ChatQAError(f"limit must be at least 1, got {limit}")
    if batch_questions < 1:
        raise ValueError(f"batch_questions must be at least 1, got {batch_questions}")
    t0 = time.perf_counter()
    squad = load_squad(squad_path)
    is_v2 = squad.is_v2
    examples = list(select_articles(squad, articles).examples())
    if sample is not None and sample < len(examples):
        keep = set(random.Random(0).sample(range(len(examples)), sample))  # fixed: the same questions every run
        examples = [ex for i, ex in enumerate(examples) if i in keep]
    if limit is not None:
        examples = examples[:limit]
    if not examples:
        raise ChatQAError(f"{squad_path}: no questions to evaluate")
    if reader is None:
        reader = ExtractiveReader(checkpoint)
    reader.warm_up()
    threshold = reader.threshold

    t_read = time.perf_counter()
    results = read_examples(reader, examples, batch_questions=batch_questions, show_progress=show_progress)
    t_end = time.perf_counter()

    references = {ex.id: [a.text for a in ex.answers] for ex in examples}
    if len(references) != len(examples):
        raise ChatQAError(f"{squad_path}: question ids are not unique; each question needs its own id")
    report: dict = {"squad_version": "2.0" if is_v2 else "1.1"}
    if is_v2:
        top_spans, _, margins = v2_inputs(examples, results)
        predictions = {ex.id: r.best.text if r.best is not None else "" for ex, r in zip(examples, results, strict=True)}
        scores = metrics.squad_v2(predictions, references, margins)
        # the best threshold is searched over the raw top spans, not over answers already blanked by `threshold`
        best = metrics.squad_v2(top_spans, references, margins)
        report.update(
            exact_match=round(scores["exact"], 2),
            f1=round(scores["f1"], 2),
            has_ans_f1=round(scores["has_ans_f1"], 2),
            no_ans_f1=round(scores["no_ans_f1"], 2),
            has_ans_questions=int(scores["has_ans_total"]),
            no_ans_questions=int(scores["no_ans_total"]),
            threshold=threshold,
            best_f1=round(best["best_f1"], 2),
            best_f1_threshold=round(best["best_f1_thresh"], 4),
        )
    else:
        unanswered = [ex.id for ex in examples if not ex.answers]
        if unanswered:
            raise ChatQAError(
                f"{squad_path}: question {unanswered[0]!r} has no answer in a SQuAD 1.1 file; "
                "mark unanswerable questions with is_impossible (SQuAD 2.0)"
            )
        predictions = {ex.id: r.answers[0].text if r.answers else "" for ex, r in zip(examples, results, strict=True)}
        scores = metrics.squad_v1(predictions, references)
        report.update(
            exact_match=round(scores["exact_match"], 2),
            f1=round(scores["f1"], 2),
            abstained=round(sum(r.abstained for r in results) / len(results), 4),
            threshold=threshold,
        )
    report.update(
        questions=len(examples),
        seconds=round(t_end - t0, 2),
        questions_per_second=round(len(examples) / max(t_end - t_read, 1e-9), 2),
        checkpoint=str(reader.checkpoint),
    )
    return report


def select_articles(squad: SquadFile, articles: str | None) -> SquadFile:
    """All articles (None), or those at even or odd positions of the file."""
    if articles is None:
        return squad
    if articles not in ("even", "odd"):
        raise ChatQAError(f"articles must be 'even' or 'odd', got {articles!r}")
    keep = 0 if articles == "even" else 1
    return SquadFile([a for i, a in enumerate(squad.articles) if i % 2 == keep], squad.version)


def no_answer_margin(result) -> float:
    """null score − best span score: the reader abstains when this exceeds its threshold."""
    return result.no_answer_score - result.answers[0].score if result.answers else math.inf


def v2_inputs(examples: Sequence, results: Sequence) -> tuple[dict, dict, dict]:
    """(top span of each question ignoring abstention, references, no-answer margins), keyed by question id: the
    arguments of `metrics.squad_v2` for a threshold search, in its order."""
    references = {ex.id: [a.text for a in ex.answers] for ex in examples}
    top_spans = {ex.id: r.answers[0].text if r.answers else "" for ex, r in zip(examples, results, strict=True)}
    margins = {ex.id: no_answer_margin(r) for ex, r in zip(examples, results, strict=True)}
    return top_spans, references, margins


def read_examples(reader, examples: Sequence, *, batch_questions: int = 32, show_progress: bool = False) -> list:
    """The reader's result for each example, reading it against its own paragraph, `batch_questions` at a time."""
    from tqdm import tqdm

    results = []
    with tqdm(total=len(examples), desc="reading", unit="q", disable=not show_progress, leave=False) as bar:
        for first in range(0, len(examples), batch_questions):
            chunk = examples[first : first + batch_questions]
            results.extend(reader.read_batch([ex.question for ex in chunk], [[ex.context] for ex in chunk], top_k=1))
            bar.update(len(chunk))
    return results


def calibrate_threshold(squad_path: str | Path, reader, *, articles: str = "even") -> tuple[float, dict]:
    """The no-answer threshold that maximises SQuAD 2.0 F1 on the `articles` half of a SQuAD 2.0 file.

    The other half stays unseen, so the threshold can be checked on it. Returns (threshold, details).
    """
    squad = select_articles(load_squad(squad_path), articles)
    if not squad.is_v2:
        raise ChatQAError(f"{squad_path}: calibration needs a SQuAD 2.0 file (with unanswerable questions)")
    examples = list(squad.examples())
    results = read_examples(reader, examples)
    scores = metrics.squad_v2(*v2_inputs(examples, results))
    threshold = float(scores["best_f1_thresh"])
    return threshold, {
        "file": Path(squad_path).name, "articles": articles, "questions": len(examples),
        "threshold": round(threshold, 4), "best_f1": round(scores["best_f1"], 2),
    }


def load_conversations(path: str | Path) -> list[dict]:
    """The conversations of a file in the conversational-set format (see finetune/data/README.md)."""
    import json

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        conversations = raw["conversations"]
        for c in conversations:
            if not c["turns"] or not all(t["question"].strip() and t["answers"] for t in c["turns"]):
                raise ValueError(f"conversation {c.get('id')!r} needs turns with a question and answers")
            c.setdefault("title", "")
    except FileNotFoundError:
        raise ChatQAError(f"{path}: no such file") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ChatQAError(f"{path}: not a conversation set ({e}); see finetune/data/README.md for the format") from None
    return conversations


def evaluate_conversations(
    conversations_path: str | Path,
    squad_path: str | Path,
    *,
    mode: str = "extractive",
    k: int = 5,
    reader=None,
    embedder: Embedder | None = None,
    decoder=None,
    dialog=None,
) -> dict:
    """Run each conversation turn by turn through the dialog manager (``dialog``; default: the rules) over a knowledge
    base of the SQuAD file's articles, and score first turns and follow-ups separately (F1 in %, recall@k and abstention as shares).

    Follow-ups are also asked alone, without their history, to measure what history handling adds.
    """
    from chatqa.engine import ChatEngine, EngineSettings
    from chatqa.reader import ExtractiveReader

    t0 = time.perf_counter()
    conversations = load_conversations(conversations_path)
    squad = load_squad(squad_path)
    reader = reader if reader is not None else ExtractiveReader()
    scores: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        scores.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="chatqa-eval-") as tmp, KnowledgeBase(tmp, embedder=embedder) as kb:
        doc_ids = {doc.title: doc_id for doc, doc_id in build_article_kb(squad, kb)}
        engine = ChatEngine(kb, reader, decoder=decoder, settings=EngineSettings(mode=mode, k=k), dialog=dialog)

        def score(result, turn: dict, doc_id: int | None, prefix: str, suffix: str = "") -> None:
            answers = turn["answers"]
            span = result.span.text if result.span is not None else ""
            add(f"{prefix}_span_f1{suffix}", 100 * metrics.f1(span, answers))
            add(f"{prefix}_answer_f1{suffix}", 100 * metrics.f1(result.answer if not result.abstained else "", answers))
            wanted = [metrics.normalize_answer(a) for a in answers]
            found = any(
                (doc_id is None or h.doc_id == doc_id) and any(w and w in metrics.normalize_answer(h.text) for w in wanted)
                for h in result.passages
            )
            add(f"{prefix}_recall@{k}{suffix}", float(found))
            add(f"{prefix}_abstained{suffix}", float(result.abstained))

        for conversation in conversations:
            doc_id = doc_ids.get(conversation["title"])
            for index, turn in enumerate(conversation["turns"]):
                prefix = "first" if index == 0 else "followup"
                score(engine.ask(turn["question"], f"eval-{conversation['id']}"), turn, doc_id, prefix)
                if index > 0:
                    score(engine.ask(turn["question"]), turn, doc_id, "followup", "_no_history")

    report = {key: round(sum(values) / len(values), 4 if "recall" in key or "abstained" in key else 2)
              for key, values in sorted(scores.items())}
    n_first, n_follow = len(scores["first_span_f1"]), len(scores.get("followup_span_f1", []))
    all_abstained = scores["first_abstained"] + scores.get("followup_abstained", [])
    report.update(
        abstention_rate=round(sum(all_abstained) / len(all_abstained), 4),
        conversations=len(conversations), first_turns=n_first, followups=n_follow, mode=mode,
        seconds=round(time.perf_counter() - t0, 1),
    )
    return report


def calibrate_chat_threshold(
    reader, squad_path: str | Path, out_of_scope: Sequence[str], *, sample: int = 600, k: int = 5
) -> tuple[float, dict]:
    """The chat engine's no-answer threshold: halfway between the 95th percentile of no-answer margins of answerable
    questions (a seeded sample of `squad_path`, each read against its own paragraph) and the 5th percentile of
    margins of `out_of_scope` questions read against the top-k passages of the bundled knowledge base.
    Returns (threshold, details)."""
    import numpy as np

    from knowledge.bundle import seed_bundled_documents

    examples = list(load_squad(squad_path).examples())
    examples = random.Random(1).sample(examples, min(sample, len(examples)))
    answerable = np.array([no_answer_margin(r) for r in read_examples(reader, examples)])
    with tempfile.TemporaryDirectory(prefix="chatqa-calibrate-") as tmp, KnowledgeBase(tmp) as kb:
        seed_bundled_documents(kb)
        hits = kb.search_many(list(out_of_scope), k=k)
        results = reader.read_batch(list(out_of_scope), [[h.text for h in hs] for hs in hits], top_k=1)
    outside = np.array([no_answer_margin(r) for r in results])
    high, low = float(np.percentile(answerable, 95)), float(np.percentile(outside, 5))
    threshold = (high + low) / 2
    return threshold, {
        "threshold": round(threshold, 3), "answerable_p95_margin": round(high, 3),
        "out_of_scope_p5_margin": round(low, 3), "answerable_questions": len(examples),
        "out_of_scope_questions": len(outside), "answerable_abstain": round(float((answerable > threshold).mean()), 4),
        "out_of_scope_abstain": round(float((outside > threshold).mean()), 4),
    }
