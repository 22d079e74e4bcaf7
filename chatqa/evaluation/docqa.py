"""`chatqa eval docs`: the app, through its engine, on the doc-QA dev set of real documentation.

Every single question is asked in a fresh conversation and every conversation turn by turn, once per answer mode,
and scored against the set's gold answers (exact substrings of the documents' extracted text) and one-sentence
references:

- span F1: the reader's span against the gold answer (SQuAD token F1; 0 when the app abstains);
- answer recall: the share of the gold answer's tokens found in the answer shown (0 when the app abstains);
- answer F1: the answer shown against the one-sentence reference (SQuAD token F1; 0 when the app abstains);
- abstention on answerable and on unanswerable questions;
- first-token latency p50/p95: from asking until the first piece of the answer (an abstention counts too);
- recall@k: the share of answerable questions whose gold answer lies in one of the k passages read;
- generative share: the answers the decoder wrote (the rest were extracted, or the decoder's draft was replaced).

Before SQuAD's normalisation, texts are NFKC-normalised and typographic quotes made plain, so a PDF's "ﬁ" ligature
or "’" scores like "fi" and "'" (the documents keep them; a decoder may not).
"""

from __future__ import annotations

import logging
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from chatqa import metrics
from chatqa.evaluation.docqa_set import all_items, document_paths, load_docqa_set
from knowledge.errors import ChatQAError

logger = logging.getLogger(__name__)

_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})
GROUPS = ("questions", "first_turns", "followups")


def clean(text: str) -> str:
    """NFKC (ligatures and full-width forms to plain letters) and plain quotes."""
    return unicodedata.normalize("NFKC", text).translate(_QUOTES)


def tokens(text: str) -> list[str]:
    """SQuAD-normalised tokens of the cleaned text."""
    return metrics.normalize_answer(clean(text)).split()


def answer_recall(shown: str, gold: str) -> float:
    """The share (0–1) of the gold answer's tokens, with their counts, that the shown text contains."""
    wanted = Counter(tokens(gold))
    if not wanted:
        raise ValueError("the gold answer has no tokens to look for")
    found = Counter(tokens(shown)) & wanted
    return sum(found.values()) / sum(wanted.values())


def token_f1(prediction: str, truth: str) -> float:
    """SQuAD token F1 (0–1) after `clean`."""
    return metrics.f1(clean(prediction), [clean(truth)])


def gold_rank(passages: Sequence, doc_id: int, start: int, end: int) -> int | None:
    """The rank (from 1) of the first passage of document `doc_id` holding at least half of [start, end), or None."""
    need = max(1, end - start) / 2
    for rank, hit in enumerate(passages, 1):
        if hit.doc_id == doc_id and min(end, hit.end) - max(start, hit.start) >= need:
            return rank
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def timed_turn(engine, question: str, conversation_id: str | None, **overrides):
    """(TurnResult, seconds to the first answer piece) of one turn through `engine.stream`."""
    t0 = time.perf_counter()
    first = None
    for event in engine.stream(question, conversation_id, **overrides):
        if event.kind in ("token", "replace") and first is None:
            first = time.perf_counter() - t0
        if event.kind == "final":
            return event.result, first if first is not None else time.perf_counter() - t0
    raise AssertionError("a turn always ends with a final event")


def score_turn(result, item: dict, doc_id: int, seconds: float) -> dict[str, float]:
    """The per-item scores of one answered turn (percentages for F1/recall, 0/1 for shares)."""
    scores = {"abstained": float(result.abstained), "first_token_s": seconds,
              "generative": float(result.mode == "generative" and not result.abstained)}
    if item["kind"] == "unanswerable":
        return scores
    gold, start = item["answer"], item["answer_start"]
    span = result.span.text if result.span is not None and not result.abstained else ""
    shown = "" if result.abstained else result.answer
    scores.update(
        span_f1=100 * token_f1(span, gold),
        answer_recall=100 * answer_recall(shown, gold),
        answer_f1=100 * token_f1(shown, item["reference"]),
        found=float(gold_rank(result.passages, doc_id, start, start + len(gold)) is not None),
    )
    return scores


def summarise(rows: list[dict[str, float]], k: int) -> dict:
    """The group's metrics from its per-item scores."""
    answerable = [r for r in rows if "span_f1" in r]
    unanswerable = [r for r in rows if "span_f1" not in r]

    def mean(values: list[float], digits: int = 2) -> float | None:
        return round(sum(values) / len(values), digits) if values else None

    latencies = [r["first_token_s"] for r in rows]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return {
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "span_f1": mean([r["span_f1"] for r in answerable]),
        "answer_recall": mean([r["answer_recall"] for r in answerable]),
        "answer_f1": mean([r["answer_f1"] for r in answerable]),
        "abstain_answerable": mean([r["abstained"] for r in answerable], 4),
        "abstain_unanswerable": mean([r["abstained"] for r in unanswerable], 4),
        f"recall@{k}": mean([r["found"] for r in answerable], 4),
        "generative_share": mean([r["generative"] for r in rows], 4),
        "first_token_p50_s": None if p50 is None else round(p50, 3),
        "first_token_p95_s": None if p95 is None else round(p95, 3),
    }


def add_documents(kb, data: dict, docs_dir: str | Path) -> dict[str, int]:
    """Add the set's documents to `kb` (a no-op for those already in it) and check that every gold answer sits at its
    offset in the stored text. Returns document name → id."""
    paths = document_paths(data, docs_dir)
    ids = {}
    for name, path in paths.items():
        info, new = kb.add_file(path, save_index=False)
        ids[name] = info.id
        logger.info("%s %s (%d chunks)", "added" if new else "reusing", name, info.n_chunks)
    kb.index.save()
    texts = {name: kb.store.document_text(doc_id) or "" for name, doc_id in ids.items()}
    for item in all_items(data):
        if item["kind"] != "unanswerable":
            start, gold = item["answer_start"], item["answer"]
            if texts[item["document"]][start : start + len(gold)] != gold:
                raise ChatQAError(
                    f"item {item['id']}: its gold answer is not at offset {start} of {item['document']}'s text; "
                    "the loaders now extract that document differently, so the answers must be re-derived"
                )
    return ids


def evaluate_docs(
    devset_path: str | Path,
    docs_dir: str | Path,
    engine,
    *,
    modes: Sequence[str] = ("extractive",),
    k: int = 5,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    details: list[dict] | None = None,
) -> dict:
    """Run the dev set through `engine` once per mode (see the module docstring for the metrics).

    The set's documents are added to `engine.kb` first (kept there, so a second run reuses them). ``limit`` keeps
    the first N single questions and the first N conversations (for a quick look). ``progress`` is called with a
    short label before each turn. ``details``, a list, receives one dict per turn: what was asked, shown and
    scored.
    """
    t0 = time.perf_counter()
    data = load_docqa_set(devset_path)
    ids = add_documents(engine.kb, data, docs_dir)
    questions, conversations = data["questions"], data["conversations"]
    if limit is not None:
        questions, conversations = questions[:limit], conversations[:limit]
    t_indexed = time.perf_counter()
    report: dict = {"modes": {}}
    for mode in modes:
        rows: dict[str, list[dict]] = {group: [] for group in GROUPS}
        for q in questions:
            if progress is not None:
                progress(f"{mode} {q['id']}")
            result, seconds = timed_turn(engine, q["question"], None, mode=mode, k=k)
            rows["questions"].append(score_turn(result, q, ids[q["document"]], seconds))
            _detail(details, mode, "questions", q, result, rows["questions"][-1])
        for c in conversations:
            conversation_id = _new_conversation(engine, f"docqa {c['id']} {mode}")
            for index, turn in enumerate(c["turns"]):
                if progress is not None:
                    progress(f"{mode} {c['id']}.{index + 1}")
                result, seconds = timed_turn(engine, turn["question"], conversation_id, mode=mode, k=k)
                group = "first_turns" if index == 0 else "followups"
                rows[group].append(score_turn(result, turn, ids[turn["document"]], seconds))
                _detail(details, mode, group, {"id": f"{c['id']}.{index + 1}", **turn}, result, rows[group][-1])
        report["modes"][mode] = {group: summarise(rows[group], k) for group in GROUPS}
        kinds = [q["kind"] for q in questions]
        report["modes"][mode]["questions_by_kind"] = {
            kind: summarise([r for r, q_kind in zip(rows["questions"], kinds, strict=True) if q_kind == kind], k)
            for kind in dict.fromkeys(kinds)
        }
    report.update(
        documents=len(ids), chunks=engine.kb.store.count_chunks(), questions=len(questions),
        conversations=len(conversations), turns=sum(len(c["turns"]) for c in conversations), k=k,
        models=engine.model_versions(), index_seconds=round(t_indexed - t0, 1),
        seconds=round(time.perf_counter() - t0, 1),
    )
    return report


def _detail(details: list[dict] | None, mode: str, group: str, item: dict, result, scores: dict) -> None:
    if details is None:
        return
    details.append({
        "mode": mode, "group": group, "id": item["id"], "kind": item["kind"], "document": item["document"],
        "question": item["question"], "standalone_question": result.standalone_question, "gold": item["answer"],
        "span": result.span.text if result.span is not None else None, "answer": result.answer,
        "answer_mode": result.mode, "citations": result.citations, "signals": result.signals,
        **{key: round(value, 4) for key, value in scores.items()},
    })


def _new_conversation(engine, title: str) -> str:
    log = getattr(engine, "log", None)
    return log.new_conversation(title) if log is not None else f"docqa-{uuid.uuid4().hex[:12]}"


def format_docs_report(report: dict) -> str:
    """The report as a table: one row per metric, one column per mode and group."""
    columns = [(mode, group) for mode in report["modes"] for group in GROUPS]
    metric_names = list(next(iter(report["modes"].values()))["questions"])
    head = ["metric"] + [f"{mode[:3]}:{group}" for mode, group in columns]
    lines = [head]
    for name in metric_names:
        cells = [report["modes"][mode][group].get(name) for mode, group in columns]
        lines.append([name] + ["-" if v is None else str(v) for v in cells])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    table = "\n".join(
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in lines
    )
    footer = (f"{report['documents']} documents, {report['chunks']} chunks; {report['questions']} questions, "
              f"{report['conversations']} conversations ({report['turns']} turns); k={report['k']}; "
              f"models {report['models']}; {report['seconds']} s (indexing {report['index_seconds']} s)")
    kinds = []
    for mode, scores in report["modes"].items():
        for kind, m in scores.get("questions_by_kind", {}).items():
            kinds.append(f"{mode[:3]}:{kind:<12} n={m['answerable'] + m['unanswerable']:<3} span_f1 {m['span_f1']}  "
                         f"answer_recall {m['answer_recall']}  abstained {m['abstain_answerable'] if m['answerable'] else m['abstain_unanswerable']}")
    return "\n".join([table, *kinds, footer])
