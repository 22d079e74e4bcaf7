"""The `chatqa` command line. Errors a user can cause print one line (`error: ...`) and exit 1, never a traceback
(usage errors: 2). Whatever a document, file name or question supplies is printed through `chatqa.terminal`.

Commands that only read (`kb list`, `kb search`, `kb remove`, `kb reindex`, `export`, `conversations`, `ask
--conversation`) refuse a data directory that holds no ChatQA data: a mistyped --data-dir is an error, not a new
empty folder. `kb add`, `ask` and `chat` create it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from chatqa.terminal import json_safe, terminal_safe
from chatqa.turn import ANSWER_MODES
from knowledge.errors import ChatQAError, MissingDataDir
from knowledge.search import SEARCH_MODES

MAX_SEARCH_K = 1000  # passages `kb search` prints at most
MAX_ANSWER_K = 50  # passages `ask` and `chat` read at most (EngineSettings' bound)


def _offline() -> None:
    """No model hub is reachable: make every Hugging Face library fail fast instead of trying."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()


def _data_dir(args, *, must_exist: bool) -> Path:
    """The data directory; for a command that only reads, a folder that holds ChatQA's database, or MissingDataDir."""
    from knowledge.base import default_data_dir
    from knowledge.store import DB_NAME

    path = args.data_dir if args.data_dir is not None else default_data_dir()
    if must_exist and not (path / DB_NAME).is_file():
        raise MissingDataDir(path)
    return path


def _open_kb(args, *, create: bool = False):
    from knowledge.base import KnowledgeBase

    return KnowledgeBase(_data_dir(args, must_exist=not create)).open()


def _print_json(obj) -> None:
    print(json_safe(json.dumps(obj, indent=2, ensure_ascii=False)))


# -- kb ----------------------------------------------------------------------------------------------------------
def cmd_kb_add(args) -> int:
    from tqdm import tqdm

    kb = _open_kb(args, create=True)
    bar = tqdm(desc="adding", unit="file", disable=args.quiet, leave=False)

    def progress(path: Path) -> None:
        bar.set_postfix_str(terminal_safe(path.name)[:40])
        bar.update(1)

    report = kb.add_files(args.paths, progress=progress)
    bar.close()
    for doc in report.added:
        print(f"added     [{doc.id}] {terminal_safe(doc.name)} ({doc.n_chunks} chunks)")
    for doc in report.unchanged:
        print(f"unchanged [{doc.id}] {terminal_safe(doc.name)} (already in the knowledge base)")
    for err in report.failed:
        print(f"error: {terminal_safe(err)}", file=sys.stderr)
    print(f"{len(report.added)} added, {len(report.unchanged)} unchanged, {len(report.failed)} failed")
    return 1 if report.failed else 0


def cmd_kb_list(args) -> int:
    docs = _open_kb(args).list_documents()
    if args.json:
        _print_json([d.__dict__ for d in docs])
        return 0
    if not docs:
        print("The knowledge base is empty. Add documents with `chatqa kb add PATH...`.")
        return 0
    print(f"{'id':>4}  {'chunks':>6}  {'size':>9}  {'added':<20} name")
    for d in docs:
        print(f"{d.id:>4}  {d.n_chunks:>6}  {_size(d.size):>9}  {d.added[:19]:<20} {terminal_safe(d.name)}")
    return 0


def cmd_kb_remove(args) -> int:
    doc = _open_kb(args).remove(args.doc_id)
    print(f"removed [{doc.id}] {terminal_safe(doc.name)} ({doc.n_chunks} chunks)")
    return 0


def cmd_kb_reindex(args) -> int:
    n = _open_kb(args).reindex()
    print(f"re-indexed: {n} chunks")
    return 0


def cmd_kb_search(args) -> int:
    hits = _open_kb(args).search(args.query, k=args.k, mode=args.mode)
    if args.json:
        _print_json([h.__dict__ for h in hits])
        return 0
    if not hits:
        print("No matching passages.")
    for rank, h in enumerate(hits, 1):
        where = terminal_safe(h.doc_name) + (f", page {h.page}" if h.page else "")
        print(f"{rank}. [{where}] score {h.score:.4f} (dense {_fmt(h.dense_score)}, bm25 {_fmt(h.bm25_score)})")
        print(f"   {_snippet(h.text)}")
    return 0


# -- ask / chat --------------------------------------------------------------------------------------------------
def _engine(args, *, must_exist: bool = False):
    """The engine over the data directory; a new one is created (and seeded with the bundled guide) unless
    `must_exist`."""
    from chatqa.engine import EngineSettings, open_engine
    from knowledge.store import DB_NAME

    data_dir = _data_dir(args, must_exist=must_exist)
    new = not (data_dir / DB_NAME).exists()
    engine = open_engine(data_dir, settings=EngineSettings(mode=args.mode, k=args.k), reader_checkpoint=args.reader)
    if new:
        print(f"note: created the data directory {terminal_safe(data_dir)}, with the bundled guide to ChatQA",
              file=sys.stderr)
    return engine


def _check_conversation(log, conversation: str) -> None:
    """UnknownConversation, saying how to list them, unless `conversation` is in the log."""
    from chatqa.log import UnknownConversation

    try:
        log.history(conversation)
    except UnknownConversation as e:
        raise ChatQAError(f"{e}; list them with `chatqa conversations`") from None


def _answer(engine, question: str, conversation: str | None, *, stream: bool):
    """Run one turn, streaming the answer to stdout when `stream`; returns the TurnResult."""
    for event in engine.stream(question, conversation):
        if event.kind == "status" and stream:
            print(f"({terminal_safe(event.text)})")
        elif event.kind == "token" and stream:
            print(terminal_safe(event.text, newlines=True), end="", flush=True)
        elif event.kind == "replace" and stream:
            print("\n[the draft did not keep the extracted answer; showing it instead]\n"
                  + terminal_safe(event.text, newlines=True), end="")
        elif event.kind == "final":
            if stream:
                print()
            return event.result
    raise AssertionError("a turn always ends with a final event")


def _print_sources(result) -> None:
    for rank, hit in enumerate(result.passages, 1):
        where = terminal_safe(hit.doc_name) + (f", page {hit.page}" if hit.page else "")
        text = hit.text
        if result.span is not None and result.span.passage_index == rank - 1:
            s, e = result.span.start, result.span.end
            text = text[:s] + "[[" + text[s:e] + "]]" + text[e:]
            lo = max(0, s - 150)
            text = ("…" if lo else "") + text[lo : e + 160] + ("…" if e + 160 < len(hit.text) else "")
        print(f"  [{rank}] {where} (score {hit.score:.3f}): {_snippet(text, 360)}")


def cmd_ask(args) -> int:
    from chatqa.engine import check_question

    question = check_question(args.question)  # a rejected question opens nothing and logs nothing
    engine = _engine(args, must_exist=args.conversation is not None)
    if args.conversation is not None:
        _check_conversation(engine.log, args.conversation)
    conversation = args.conversation or uuid.uuid4().hex  # the log creates it with the turn
    if args.mode == "generative":
        engine.warm_up()
    result = _answer(engine, question, conversation, stream=not args.json)
    if args.json:
        from dataclasses import asdict

        print(json_safe(json.dumps(asdict(result), ensure_ascii=False, indent=2)))
        return 0
    _print_sources(result)
    conversation = terminal_safe(conversation)
    print(f"(conversation {conversation}: continue it with --conversation {conversation})")
    return 0


def cmd_chat(args) -> int:
    from chatqa.engine import check_question

    engine = _engine(args)
    print("Loading models…", flush=True)
    engine.warm_up(decoder=args.mode != "extractive")
    conversation = uuid.uuid4().hex  # in the log from its first answered question on
    print(f"ChatQA: {len(engine.kb.list_documents())} documents. Ask a question; /new starts a new conversation; "
          "an empty line or Ctrl-D quits.")
    while True:
        try:
            question = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not question:
            return 0
        if question == "/new":
            conversation = uuid.uuid4().hex
            print("(new conversation)")
            continue
        try:
            check_question(question)
            print("chatqa> ", end="", flush=True)
            result = _answer(engine, question, conversation, stream=True)
        except ChatQAError as e:
            print(f"error: {terminal_safe(e)}")
            continue
        _print_sources(result)


# -- export ------------------------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from chatqa.export import export
    from chatqa.log import ConversationLog

    with ConversationLog(_data_dir(args, must_exist=True)) as log:
        try:
            counts = export(log, args.format, args.out, since=args.since)
        except OSError as e:
            raise ChatQAError(f"could not write {args.out}: {e.strerror or e}") from None
    print(f"wrote {terminal_safe(args.out)}: {counts.describe()}")
    return 0


# -- conversations -----------------------------------------------------------------------------------------------
def cmd_conversations(args) -> int:
    from dataclasses import asdict

    from chatqa.log import ConversationLog

    with ConversationLog(_data_dir(args, must_exist=True)) as log:
        conversations = log.conversations(limit=args.limit)
    if args.json:
        _print_json([asdict(c) for c in conversations])
        return 0
    if not conversations:
        print("No conversations yet. Ask one with `chatqa ask QUESTION`.")
        return 0
    print(f"{'id':<32}  {'turns':>5}  {'updated':<16}  title")
    for c in conversations:
        title = c.title if len(c.title) <= 80 else c.title[:79] + "…"
        print(f"{terminal_safe(c.id):<32}  {c.n_turns:>5}  {c.updated[:16].replace('T', ' '):<16}  "
              f"{terminal_safe(title)}")
    return 0


# -- eval --------------------------------------------------------------------------------------------------------
def cmd_eval_retrieval(args) -> int:
    from chatqa.evaluation import evaluate_retrieval, parse_ks

    report = evaluate_retrieval(args.squad, ks=parse_ks(args.k), mode=args.mode, limit=args.limit)
    _print_report(report, args.json)
    return 0


def cmd_eval_conversations(args) -> int:
    from chatqa.decoder import GenerativeDecoder
    from chatqa.evaluation import evaluate_conversations
    from chatqa.reader import ExtractiveReader

    decoder = None
    if args.mode != "extractive":
        from knowledge.base import default_data_dir

        decoder = GenerativeDecoder((args.data_dir or default_data_dir()) / "models")
        decoder.warm_up()
    dialog = None
    if args.rewriter == "model":
        from chatqa.dialog import DialogManager
        from chatqa.rewrite_eval import load_rewriter

        dialog = DialogManager(rewriter=load_rewriter(args.data_dir, args.rewriter_model))
    report = evaluate_conversations(args.file, args.squad, mode=args.mode, reader=ExtractiveReader(args.reader),
                                    decoder=decoder, dialog=dialog)
    _print_report(report, args.json)
    return 0


def cmd_eval_rewrites(args) -> int:
    from chatqa.rewrite_eval import evaluate_rewrites, load_rewriter

    rewriter = None if args.no_model else load_rewriter(args.data_dir, args.rewriter_model)
    _print_report(evaluate_rewrites(args.file, rewriter=rewriter, limit=args.limit), args.json)
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


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _snippet(text: str, width: int = 160) -> str:
    """One line: white space (line breaks too) collapsed, control characters escaped, cut at `width`."""
    flat = terminal_safe(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int_between(low: int, high: int):
    """An argparse type: an integer from `low` to `high` (a number SQLite and FAISS can take)."""

    def integer(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text}")
        return value

    return integer


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line like every other error (argparse's exit status 2 kept)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {terminal_safe(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", type=Path, default=None,
        help="data directory (default: $CHATQA_DATA_DIR or ./chatqa-data)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    parser = _Parser(
        prog="chatqa", description="Offline conversational question answering over your own documents."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    kb = commands.add_parser("kb", help="manage the knowledge base", description="Manage the knowledge base.")
    kb_commands = kb.add_subparsers(dest="kb_command", metavar="KB_COMMAND", required=True)
    p = kb_commands.add_parser("add", parents=[common], help="add files and folders (PDF, DOCX, HTML, Markdown, text)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (walked recursively)")
    p.set_defaults(func=cmd_kb_add)
    p = kb_commands.add_parser("list", parents=[common], help="list the documents")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_kb_list)
    p = kb_commands.add_parser("remove", parents=[common], help="remove a document and its passages")
    p.add_argument("doc_id", type=int, metavar="DOC_ID", help="the id shown by `chatqa kb list`")
    p.set_defaults(func=cmd_kb_remove)
    p = kb_commands.add_parser("reindex", parents=[common], help="re-chunk and re-embed every document")
    p.set_defaults(func=cmd_kb_reindex)
    p = kb_commands.add_parser("search", parents=[common], help="hybrid search: dense + BM25 with rank fusion")
    p.add_argument("query")
    p.add_argument("--k", type=_int_between(1, MAX_SEARCH_K), default=5,
                   help=f"number of passages, at most {MAX_SEARCH_K} (default 5)")
    p.add_argument("--mode", choices=SEARCH_MODES, default="hybrid", help="retriever (default hybrid)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_kb_search)

    answering = argparse.ArgumentParser(add_help=False)
    answering.add_argument("--mode", choices=ANSWER_MODES, default="auto",
                           help="extractive: the span and its sentence; generative: the decoder phrases it; "
                                "auto: the decoder when it is loaded (default)")
    answering.add_argument("--k", type=_int_between(1, MAX_ANSWER_K), default=5,
                           help=f"passages read per question, at most {MAX_ANSWER_K} (default 5)")
    answering.add_argument("--reader", type=Path, default=None, help="reader checkpoint (default: the shipped one)")
    p = commands.add_parser("ask", parents=[common, answering], help="answer one question from the knowledge base",
                            description="Answer one question, with its sources and the answer span marked [[…]].")
    p.add_argument("question")
    p.add_argument("--conversation", default=None,
                   help="continue this conversation (id printed by an earlier ask; see `chatqa conversations`)")
    p.add_argument("--json", action="store_true", help="print the whole turn as JSON")
    p.set_defaults(func=cmd_ask)
    p = commands.add_parser("chat", parents=[common, answering], help="interactive chat in the terminal",
                            description="A multi-turn chat in the terminal that streams answers and shows sources.")
    p.set_defaults(func=cmd_chat)
    p = commands.add_parser("conversations", parents=[common], help="list the logged conversations",
                            description="The logged conversations, most recently updated first: id (for "
                                        "`chatqa ask --conversation ID`), turns, last update, title.")
    p.add_argument("--limit", type=_int_between(1, 100_000), default=50, help="show at most N (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_conversations)

    p = commands.add_parser(
        "export", parents=[common], help="feedback from the conversation log as training data",
        description="Write the logged feedback as SQuAD 2.0 JSON (reader) or chat JSONL (decoder); "
                    "see chatqa/export.py for which feedback gives which example.",
    )
    p.add_argument("--format", required=True, choices=("squad", "chat"), help="squad: reader data; chat: decoder data")
    p.add_argument("--out", required=True, type=Path, help="file to write (replaced atomically)")
    p.add_argument("--since", default=None, help="only feedback given on or after this date (2026-11-01) or time")
    p.set_defaults(func=cmd_export)

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
    p.add_argument("--rewriter", choices=("rules", "model"), default="rules",
                   help="who rewrites follow-ups: the rules or the shipped rewriter model (default rules)")
    p.add_argument("--rewriter-model", type=Path, default=None, help=argparse.SUPPRESS)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _offline()
    try:
        return args.func(args)
    except ChatQAError as e:
        print(f"error: {terminal_safe(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
