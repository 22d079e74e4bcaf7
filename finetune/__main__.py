"""`python -m finetune reader ...`: train the models. Run with --help for every option."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_cls) -> None:
    """One --option per dataclass field, with the field's help text and default."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        args = typing.get_args(kind)
        is_optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args
        base = next((a for a in args if a is not type(None)), kind) if is_optional else kind
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "") + (f" (default: {default})" if default not in (None, []) else "")
        if typing.get_origin(base) is list:
            parser.add_argument(flag, nargs="+", default=default, required=f.name == "train", help=help_text)
        elif base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=base, default=default, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from finetune.reader import ReaderTrainingConfig

    parser = argparse.ArgumentParser(prog="python -m finetune", description="Train ChatQA's models.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    reader = commands.add_parser(
        "reader",
        help="fine-tune the extractive reader on SQuAD-format files",
        description="Fine-tune the extractive reader. Interrupt at any time; the same command resumes.",
    )
    add_dataclass_arguments(reader, ReaderTrainingConfig)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from knowledge.errors import ChatQAError

    try:
        if args.command == "reader":
            from finetune.reader import ReaderTrainer, ReaderTrainingConfig

            fields = {f.name for f in dataclasses.fields(ReaderTrainingConfig)}
            cfg = ReaderTrainingConfig(**{k: v for k, v in vars(args).items() if k in fields})
            path = ReaderTrainer(cfg).run()
            print(f"reader written to {path}")
    except (ChatQAError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
