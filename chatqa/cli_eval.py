"""`chatqa eval ...`: the evaluation commands (retrieval, reader, conversations, the doc-QA set). Their logic lives in
:mod:`chatqa.evaluation`; this module only parses, runs and prints."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from chatqa.cli import _positive_int
from chatqa.models.sources import DECODERS, DEFAULT_DECODER
from chatqa.terminal import json_safe, terminal_safe
from chatqa.turn import ANSWER_MODES
from knowledge.search import SEARCH_MODES


def cmd_eval_retrieval(args) -> int:
    from chatqa.evaluation import evaluate_retrieval, parse_ks

    report = evaluate_retrieval(args.squad, ks=parse_ks(args.k), mode=args.mode, limit=args.limit)
    _print_report(report, args.json)
    return 0


def _dialog(args, data_dir):
    """The dialog manager `--rewriter` asks for: None (the engine's default, the rules) or the shipped model's."""
    if args.rewriter != "model":
        return None
    from chatqa.dialog import DialogManager
    from chatqa.rewrite_eval import load_rewriter

    return DialogManager(rewriter=load_rewriter(data_dir, args.rewriter_model))


def cmd_eval_conversations(args) -> int:
    from chatqa.decoder import GenerativeDecoder
    from chatqa.evaluation import evaluate_conversations
    from chatqa.reader import ExtractiveReader

    decoder = None
    if args.mode != "extractive":
        decoder = GenerativeDecoder()
        decoder.warm_up()
    report = evaluate_conversations(args.file, args.squad, mode=args.mode, reader=ExtractiveReader(args.reader),
                                    decoder=decoder, dialog=_dialog(args, args.data_dir))
    _print_report(report, args.json)
    return 0


def cmd_eval_rewrites(args) -> int:
    from chatqa.rewrite_eval import evaluate_rewrites, load_rewriter

    rewriter = None if args.no_model else load_rewriter(args.data_dir, args.rewriter_model)
    _print_report(evaluate_rewrites(args.file, rewriter=rewriter, limit=args.limit), args.json)
    return 0


def _rewriter_arguments(p) -> None:
    p.add_argument("--rewriter", choices=("rules", "model"), default="rules",
                   help="who rewrites follow-ups: the rules or the shipped rewriter model (default rules)")
    p.add_argument("--rewriter-model", type=Path, default=None, help=argparse.SUPPRESS)


def cmd_eval_docs(args) -> int:
    from tqdm import tqdm

    from chatqa import engine as engine_module
    from chatqa.evaluation import add_documents, evaluate_docs, format_docs_report, load_docqa_set
    from knowledge.base import KnowledgeBase

    modes = list(dict.fromkeys(args.mode or ["extractive"]))
    data_dir = args.data_dir if args.data_dir is not None else args.docs / "kb"
    data = load_docqa_set(args.file)
    t0 = time.perf_counter()
    with KnowledgeBase(data_dir) as kb:  # before the engine opens it, so the bundled guide is not added
        add_documents(kb, data, args.docs)
    index_seconds = time.perf_counter() - t0
    generative = any(mode != "extractive" for mode in modes)
    engine = engine_module.open_engine(
        data_dir, settings=engine_module.EngineSettings(mode=modes[0], k=args.k), reader_checkpoint=args.reader,
        decoder=generative, decoder_model=args.decoder,
    )
    dialog = _dialog(args, data_dir)
    if dialog is not None:
        engine.dialog = dialog
    try:
        engine.warm_up(decoder=generative)
        n = args.limit
        turns = len(data["questions"][:n]) + sum(len(c["turns"]) for c in data["conversations"][:n])
        with tqdm(total=turns * len(modes), desc="asking", unit="turn", disable=args.quiet, leave=False) as bar:
            def progress(label: str) -> None:
                bar.set_postfix_str(label)
                bar.update(1)

            details: list[dict] = []
            report = evaluate_docs(args.file, args.docs, engine, modes=modes, k=args.k, limit=args.limit,
                                   progress=progress, details=details)
    finally:
        engine.kb.close()
        if engine.log is not None:
            engine.log.close()
    report["rewriter"] = args.rewriter
    report["index_seconds"] = round(index_seconds, 1)  # adding the documents: embedding them on a new knowledge base
    if args.details is not None:
        args.details.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in details), encoding="utf-8")
    print(json.dumps(report) if args.json else format_docs_report(report))
    return 0


def _print_report(report: dict, as_json: bool) -> None:
    """One JSON object on one line, or aligned `key: value` lines."""
    if as_json:
        print(json_safe(json.dumps(report)))
        return
    for key, value in report.items():
        print(f"{terminal_safe(key):>24}: {terminal_safe(value)}")


def cmd_eval_reader(args) -> int:
    from chatqa.evaluation import evaluate_reader

    report = evaluate_reader(
        args.squad, checkpoint=args.checkpoint, limit=args.limit, show_progress=not args.quiet,
        articles=args.articles, sample=args.sample,
    )
    _print_report(report, args.json)
    return 0


def add_eval_commands(commands, common: argparse.ArgumentParser) -> None:
    """The `eval` command group, added to chatqa's sub-commands."""
    ev = commands.add_parser("eval", help="evaluate on SQuAD-format files", description="Evaluate ChatQA.")
    ev_commands = ev.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND", required=True)
    p = ev_commands.add_parser(
        "retrieval", parents=[common], help="recall@k of a throw-away knowledge base built from a SQuAD file"
    )
    p.add_argument("--squad", required=True, type=Path, help="SQuAD-format JSON file")
    p.add_argument("--k", default="1,5,20", help="comma-separated cut-offs (default 1,5,20)")
    p.add_argument("--mode", choices=SEARCH_MODES, default="hybrid", help="retriever (default hybrid)")
    p.add_argument("--limit", type=_positive_int, default=None, help="only the first N questions")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval_retrieval)
    p = ev_commands.add_parser(
        "reader", parents=[common],
        help="EM/F1 of the extractive reader, each question read against its own gold paragraph",
    )
    p.add_argument("--squad", required=True, type=Path, help="SQuAD-format JSON file (v1.1 or v2.0)")
    p.add_argument("--limit", type=_positive_int, default=None, help="only the first N questions")
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="reader checkpoint folder (default: the shipped reader)"
    )
    p.add_argument(
        "--sample", type=_positive_int, default=None, help="a fixed, seeded sample of N questions (same every run)"
    )
    p.add_argument(
        "--articles", choices=("even", "odd"), default=None,
        help="only the articles at even or odd positions (the reader's threshold is calibrated on the even ones)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval_reader)
    p = ev_commands.add_parser(
        "conversations", parents=[common],
        help="multi-turn evaluation: first turns vs follow-ups, with and without history",
    )
    p.add_argument("--file", required=True, type=Path, help="conversation set (format: finetune/data/README.md)")
    p.add_argument("--squad", required=True, type=Path, help="SQuAD file whose articles form the knowledge base")
    p.add_argument("--mode", choices=ANSWER_MODES, default="extractive", help="answer mode (default extractive)")
    p.add_argument("--reader", type=Path, default=None, help="reader checkpoint (default: the shipped one)")
    _rewriter_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval_conversations)
    p = ev_commands.add_parser(
        "rewrites", parents=[common],
        help="BLEU of the follow-up rewrites (model, rules, copying the question) against CANARD's human ones",
    )
    p.add_argument("--file", required=True, type=Path, help="CANARD JSONL (../shared/data/dialog/canard-dev.jsonl)")
    p.add_argument("--limit", type=_positive_int, default=None, help="only the first N questions")
    p.add_argument("--no-model", action="store_true", help="score only the rules and copying")
    p.add_argument("--rewriter-model", type=Path, default=None,
                   help="a CTranslate2 rewriter folder (default: the shipped adapter, converted once)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval_rewrites)
    p = ev_commands.add_parser(
        "docs", parents=[common],
        help="the app on the doc-QA dev set of real documentation: span F1, answer recall/F1, abstention, latency",
        description="Ask every question of a doc-QA set (and every conversation, turn by turn) through the engine, "
                    "per answer mode, over a knowledge base of the set's documents (kept in --data-dir, default "
                    "DOCS/kb, and reused). Build the documents first: python finetune/data/docqa/build_docs.py DOCS.",
    )
    p.add_argument("--docs", required=True, type=Path, help="folder with the set's documents (built by build_docs.py)")
    p.add_argument("--file", required=True, type=Path, help="doc-QA set (format: finetune/data/docqa/README.md)")
    p.add_argument("--mode", choices=ANSWER_MODES, action="append", default=None,
                   help="answer mode; repeat it for several (default extractive)")
    p.add_argument("--k", type=_positive_int, default=5, help="passages read per question (default 5)")
    p.add_argument("--reader", type=Path, default=None, help="reader checkpoint (default: the active one)")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="only the first N questions and the first N conversations")
    p.add_argument("--details", type=Path, default=None,
                   help="also write every turn (question, span, answer shown, scores) to this JSONL file")
    p.add_argument("--decoder", choices=list(DECODERS), default=DEFAULT_DECODER,
                   help=f"generative decoder (default {DEFAULT_DECODER})")
    _rewriter_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval_docs)
