"""Retrain the reader from the conversation log, compare it with the active one, and promote it only if it is better.

    python -m finetune reader --from-logs [--data-dir DIR]

1. The log's feedback becomes training examples (:func:`chatqa.export.feedback_examples`, the same as
   ``chatqa export --format squad``).
2. They are split by conversation, deterministically (a hash of the conversation id): about ``heldout_share`` of the
   conversations are held out and never trained on.
3. The active reader is fine-tuned on the training split mixed with a seeded replay sample of its base training
   data (SQuAD v1.1 train, with built no-answer examples), so it does not forget what it knew.
4. The active and the new reader are scored on the held-out split (answers and abstentions, with the chat
   threshold the app uses) and on a fixed sample of SQuAD v1.1 dev.
5. The new version is promoted only if it wins on the held-out split and loses at most ``max_squad_drop`` F1 on
   SQuAD; either way it is recorded in the registry with its metrics (``chatqa/registry.py``).

Training runs in ``<data_dir>/models/reader/runs/``; the registry changes only at the very end, in one atomic write,
so an interrupted retrain leaves the active version untouched. A running app switches to a promoted version before
its next answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatqa import metrics
from chatqa.export import FeedbackExample, feedback_examples
from chatqa.log import ConversationLog
from chatqa.reader import ExtractiveReader, load_reader_settings, save_reader_settings
from chatqa.registry import ModelRegistry, ModelVersion
from finetune.data import TrainExample, load_examples, with_negatives
from finetune.reader import ReaderTrainer, ReaderTrainingConfig
from knowledge.base import default_data_dir
from knowledge.errors import ChatQAError
from knowledge.files import atomic_write

logger = logging.getLogger(__name__)

SHARED_QA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qa"


def _shared(relative: str) -> list[str]:
    path = SHARED_QA / relative
    return [str(path)] if path.exists() else []


@dataclass
class LogRetrainConfig:
    data_dir: str | None = field(default=None, metadata={"help": "data directory (default: $CHATQA_DATA_DIR or ./chatqa-data)"})
    replay: list[str] = field(
        default_factory=lambda: _shared("train/squad-v1.1-train.json"),
        metadata={"help": "base training data replayed beside the logged examples"},
    )
    replay_ratio: float = field(default=2.0, metadata={"help": "replayed examples per logged training example"})
    squad_dev: str | None = field(
        default_factory=lambda: next(iter(_shared("dev/squad-v1.1-dev-13art.json")), None),
        metadata={"help": "SQuAD v1.1 file whose fixed sample guards against forgetting"},
    )
    squad_dev_samples: int | None = field(
        default=None, metadata={"help": "a fixed sample of this many SQuAD questions (default: all of them)"}
    )
    heldout_share: float = field(default=0.2, metadata={"help": "share of conversations held out for the comparison"})
    max_squad_drop: float = field(default=1.0, metadata={"help": "F1 the new reader may lose on the SQuAD sample"})
    seed: int = 0


# Training defaults for a retrain: a few hundred to a few thousand short passages, continuing a trained reader.
RETRAIN_DEFAULTS = {"epochs": 2.0, "lr": 3e-5, "batch_size": 16, "warmup": 0.1, "eval": None, "calibrate": None,
                    "save_every": 50, "log_every": 10, "negatives": 0.0}


@dataclass
class RetrainReport:
    version: ModelVersion
    parent: str
    promoted: bool
    reason: str
    metrics: dict
    seconds: float


def conversation_is_heldout(conversation_id: str, share: float) -> bool:
    """Deterministic: the same conversation is on the same side on every run and every machine."""
    digest = int.from_bytes(hashlib.sha256(conversation_id.encode()).digest()[:8], "big")
    return digest / 2**64 < share


def split_examples(examples: list[FeedbackExample], share: float) -> tuple[list[FeedbackExample], list[FeedbackExample]]:
    train = [ex for ex in examples if not conversation_is_heldout(ex.conversation_id, share)]
    held = [ex for ex in examples if conversation_is_heldout(ex.conversation_id, share)]
    return train, held


def to_train_example(ex: FeedbackExample) -> TrainExample:
    answer = None if ex.is_impossible else (ex.answer_start, ex.answer_start + len(ex.answer_text))
    return TrainExample(ex.question, ex.context, answer, "logged", ex.conversation_id)


def replay_sample(paths: list[str], n: int, seed: int) -> list[TrainExample]:
    """``n`` seeded positives of the base training files, plus built no-answer examples (a third as many)."""
    if n <= 0 or not paths:
        return []
    pool = [ex for ex in load_examples(paths) if ex.answer is not None]
    sample = random.Random(seed).sample(pool, min(n, len(pool)))
    return with_negatives(sample, 0.3, seed=seed)


def score_examples(reader: ExtractiveReader, examples: list[FeedbackExample], threshold: float) -> dict:
    """Held-out score the way the app answers: the top span of the passage, or "" (abstain) when the no-answer score
    beats it by more than ``threshold``. F1/EM over all examples, and over answerable / unanswerable ones."""
    if not examples:
        return {"f1": None, "exact_match": None, "has_ans_f1": None, "no_ans_f1": None, "examples": 0}
    results = reader.read_batch([ex.question for ex in examples], [[ex.context] for ex in examples], top_k=1)
    f1s, ems, has, no = [], [], [], []
    for ex, r in zip(examples, results, strict=True):
        best = r.answers[0] if r.answers else None
        predicted = "" if best is None or r.no_answer_score - best.score > threshold else best.text
        gold = [""] if ex.is_impossible else [ex.answer_text]
        f1, em = metrics.f1(predicted, gold), metrics.exact_match(predicted, gold)
        f1s.append(f1)
        ems.append(em)
        (no if ex.is_impossible else has).append(f1)

    def pct(values):
        return round(100 * sum(values) / len(values), 2) if values else None

    return {"f1": pct(f1s), "exact_match": pct(ems), "has_ans_f1": pct(has), "no_ans_f1": pct(no),
            "examples": len(examples)}


def evaluate_version(checkpoint: Path, held: list[FeedbackExample], cfg: LogRetrainConfig,
                     squad: dict | None = None) -> dict:
    """Held-out and SQuAD scores of one reader; ``squad``: its SQuAD score when already known (it never changes)."""
    from chatqa.evaluation import evaluate_reader

    reader = ExtractiveReader(checkpoint)
    settings = reader.settings
    threshold = settings.chat_threshold if settings.chat_threshold is not None else settings.no_answer_threshold
    out = {"heldout": score_examples(reader, held, threshold)}
    if cfg.squad_dev:
        if squad is None:
            report = evaluate_reader(cfg.squad_dev, reader=reader, sample=cfg.squad_dev_samples)
            squad = {"file": Path(cfg.squad_dev).name, "questions": report["questions"],
                     "exact_match": report["exact_match"], "f1": report["f1"]}
        out["squad"] = squad
    return out


def _squad_key(version: str, cfg: LogRetrainConfig) -> str:
    """A version's entry in squad_scores.json (beside the registry): one per version, file and sample size."""
    return f"{version}|{Path(cfg.squad_dev).name}|{cfg.squad_dev_samples or 'all'}"


def decide(active: dict, new: dict, max_squad_drop: float) -> tuple[bool, str]:
    """The promotion rule: strictly better on the held-out split, and at most ``max_squad_drop`` F1 lost on SQuAD."""
    a, n = active["heldout"]["f1"], new["heldout"]["f1"]
    if a is None or n is None:
        return False, "no held-out examples to compare on yet"
    if n <= a:
        return False, f"held-out F1 {n:.2f} is not above the active model's {a:.2f}"
    if "squad" in active and "squad" in new:
        drop = active["squad"]["f1"] - new["squad"]["f1"]
        if drop > max_squad_drop:
            return False, f"SQuAD F1 drops by {drop:.2f} (more than {max_squad_drop:g})"
        return True, f"held-out F1 {a:.2f} → {n:.2f}; SQuAD F1 {active['squad']['f1']:.2f} → {new['squad']['f1']:.2f}"
    return True, f"held-out F1 {a:.2f} → {n:.2f} (no SQuAD sample to check forgetting against)"


def retrain_reader(cfg: LogRetrainConfig, train_overrides: dict | None = None, *, trainer_cls=ReaderTrainer) -> RetrainReport:
    """One retrain from the log: train, compare, record, promote if better. Raises ChatQAError when the log has
    nothing to learn from."""
    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    registry = ModelRegistry(data_dir)
    parent = registry.active()
    parent_dir = registry.checkpoint(parent)
    with ConversationLog(data_dir) as log:
        examples, counts = feedback_examples(log)
    train, held = split_examples(examples, cfg.heldout_share)
    logger.info("feedback: %s; %d for training, %d held out", counts.describe(), len(train), len(held))
    if not any(not ex.is_impossible for ex in train):
        raise ChatQAError(
            f"nothing to learn from yet: {counts.describe()}, {len(train)} in the training split. "
            "Rate answers (and correct the wrong ones) in the app first."
        )

    parent_settings = load_reader_settings(parent_dir)
    runs = registry.folder / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # what an interrupted retrain left behind
    run_dir = runs / time.strftime("%Y%m%d-%H%M%S")
    training = dict(RETRAIN_DEFAULTS, **(train_overrides or {}))
    train_cfg = ReaderTrainingConfig(
        **{**training, "train": [], "base": str(parent_dir), "out": str(run_dir), "seed": cfg.seed,
           "max_length": parent_settings.max_length, "stride": parent_settings.stride,
           "max_question_tokens": parent_settings.max_question_tokens},
    )
    logged = [to_train_example(ex) for ex in train]
    replay = replay_sample(cfg.replay, round(cfg.replay_ratio * len(logged)), cfg.seed)
    mixed = logged + replay
    random.Random(cfg.seed).shuffle(mixed)
    logger.info("training on %d logged + %d replayed examples", len(logged), len(replay))
    model_dir = trainer_cls(train_cfg, examples=mixed).run()

    # The new version keeps its parent's settings and thresholds. (Letting its longest answer grow to the logged
    # answers' 95th percentile was tried on COVID-QA: no gain there, 0.9 F1 lost on SQuAD.)
    save_reader_settings(model_dir, parent_settings)

    cache = registry.folder / "squad_scores.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    active_squad = known.get(_squad_key(parent.id, cfg)) if cfg.squad_dev else None
    active_metrics = evaluate_version(parent_dir, held, cfg, active_squad)
    new_metrics = evaluate_version(model_dir, held, cfg)
    promoted, reason = decide(active_metrics, new_metrics, cfg.max_squad_drop)
    logger.info("%s: %s", "promoted" if promoted else "not promoted", reason)
    report_metrics = {"new": new_metrics, "parent": active_metrics, "feedback": asdict(counts),
                      "train_examples": len(train), "heldout_examples": len(held), "replay_examples": len(replay)}
    seconds = round(time.perf_counter() - t0, 1)
    version = registry.add(
        model_dir, parent=parent.id, promoted=promoted, reason=reason, metrics=report_metrics,
        training={"config": asdict(train_cfg), "retrain": asdict(cfg), "seconds": seconds},
    )
    if cfg.squad_dev:
        known[_squad_key(parent.id, cfg)] = active_metrics["squad"]
        known[_squad_key(version.id, cfg)] = new_metrics["squad"]
        atomic_write(cache, json.dumps(known, indent=2))
    shutil.rmtree(run_dir, ignore_errors=True)
    (registry.folder / "last_retrain.json").write_text(json.dumps(
        {"version": version.id, "promoted": promoted, "reason": reason, "seconds": seconds}, indent=2))
    return RetrainReport(version, parent.id, promoted, reason, report_metrics, seconds)
