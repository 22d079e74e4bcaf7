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
            parser.add_argument(flag, nargs="+", default=default, help=help_text)
        elif base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=base, default=default, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from finetune.decoder import DecoderRetrainConfig
    from finetune.from_logs import LogRetrainConfig
    from finetune.reader import ReaderTrainingConfig
    from finetune.rewriter import RewriterTrainingConfig

    parser = argparse.ArgumentParser(prog="python -m finetune", description="Train ChatQA's models.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    reader = commands.add_parser(
        "reader",
        help="fine-tune the extractive reader on SQuAD-format files",
        description="Fine-tune the extractive reader. Interrupt at any time; the same command resumes.",
    )
    add_dataclass_arguments(reader, ReaderTrainingConfig)
    rewriter = commands.add_parser(
        "rewriter",
        help="fine-tune the follow-up question rewriter (LoRA on SmolLM2-135M) on CANARD",
        description="Fine-tune the history-aware question rewriter on CANARD (finetune/rewriter.py). Interrupt at any "
                    "time; the same command resumes.",
    )
    add_dataclass_arguments(rewriter, RewriterTrainingConfig)
    decoder = commands.add_parser(
        "decoder",
        help="fine-tune the generative decoder on the logged feedback (LoRA on the chat export)",
        description="LoRA fine-tuning of the decoder on the conversation log's chat export, merged and converted "
                    "for CTranslate2; the new version is used only if it beats the active one on held-out feedback "
                    "(finetune/decoder.py).",
    )
    decoder.add_argument("--from-logs", action="store_true", required=True, help="train from the conversation log")
    add_dataclass_arguments(decoder, DecoderRetrainConfig)
    from finetune.abstention import CalibrationConfig

    abstention = commands.add_parser(
        "abstention",
        help="calibrate the answer-or-abstain policy on a doc-QA calibration set",
        description="Fit the policy that decides, before the decoder drafts, whether to answer at all "
                    "(finetune/abstention.py); writes chatqa/models/abstention.json.",
    )
    add_dataclass_arguments(abstention, CalibrationConfig)
    logs = reader.add_argument_group(
        "retraining from the conversation log (--from-logs)",
        "Continue the active reader on the logged feedback, compare, promote only if better (finetune/from_logs.py). "
        "Training options given explicitly above override the retrain defaults "
        "(epochs 2, lr 3e-5, batch size 16); --train, --eval and --calibrate are not used.",
    )
    logs.add_argument("--from-logs", action="store_true", help="retrain from the conversation log")
    for f in dataclasses.fields(LogRetrainConfig):
        if f.name == "seed":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = {"replay": None, "replay_ratio": float, "squad_dev_samples": int, "heldout_share": float,
                "max_squad_drop": float}.get(f.name, str)
        kwargs = {"nargs": "*"} if f.name == "replay" else {"type": kind}
        logs.add_argument(flag, dest=f"logs_{f.name}", default=default, metavar=f.name.upper(),
                          help=f.metadata.get("help", "") + (f" (default: {default})" if default else ""), **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from knowledge.errors import ChatQAError

    try:
        if args.command == "abstention":
            import json

            from finetune.abstention import CalibrationConfig, calibrate

            fields = {f.name for f in dataclasses.fields(CalibrationConfig)}
            report = calibrate(CalibrationConfig(**{k: v for k, v in vars(args).items() if k in fields}))
            print(json.dumps(report, indent=1))
            return 0
        if args.command == "decoder":
            from finetune.decoder import DecoderRetrainConfig, retrain_decoder

            fields = {f.name for f in dataclasses.fields(DecoderRetrainConfig)}
            report = retrain_decoder(DecoderRetrainConfig(**{k: v for k, v in vars(args).items() if k in fields}))
            verdict = "promoted: now the active decoder" if report.promoted else "not promoted: the active decoder stays"
            print(f"decoder {report.version} (from {report.parent}), {verdict}. {report.reason}. "
                  f"({report.seconds:.0f} s)")
            return 0
        if args.command == "rewriter":
            from finetune.rewriter import RewriterTrainer, RewriterTrainingConfig

            fields = {f.name for f in dataclasses.fields(RewriterTrainingConfig)}
            path = RewriterTrainer(RewriterTrainingConfig(**{k: v for k, v in vars(args).items() if k in fields})).run()
            print(f"rewriter adapter written to {path}")
            return 0
        if args.command == "reader" and args.from_logs:
            return _from_logs(args)
        if args.command == "reader":
            from finetune.reader import ReaderTrainer, ReaderTrainingConfig

            if not args.train:
                raise ValueError("--train FILE... is needed (or --from-logs)")
            fields = {f.name for f in dataclasses.fields(ReaderTrainingConfig)}
            cfg = ReaderTrainingConfig(**{k: v for k, v in vars(args).items() if k in fields})
            path = ReaderTrainer(cfg).run()
            print(f"reader written to {path}")
    except (ChatQAError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _from_logs(args) -> int:
    from finetune.from_logs import RETRAIN_DEFAULTS, LogRetrainConfig, retrain_reader
    from finetune.reader import ReaderTrainingConfig

    cfg = LogRetrainConfig(**{f.name: getattr(args, f"logs_{f.name}") for f in dataclasses.fields(LogRetrainConfig)
                              if f.name != "seed"}, seed=args.seed)
    defaults = ReaderTrainingConfig()
    overrides = {
        name: getattr(args, name) for name in RETRAIN_DEFAULTS
        if name in vars(args) and getattr(args, name) != getattr(defaults, name)
    }
    report = retrain_reader(cfg, overrides)
    verdict = "promoted: now the active reader" if report.promoted else "not promoted: the active reader stays"
    print(f"reader {report.version.id} (from {report.parent}), {verdict}. {report.reason}. ({report.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
