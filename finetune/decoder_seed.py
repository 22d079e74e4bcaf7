"""Answering examples for the decoder from human-labelled extractive QA (SQuAD-format files), beside the log's.

A fresh install has no feedback to learn from, and the packaged decoder, asked about documentation, tends to restate
the question and paraphrase where the person needs the document's own words (the README's decoder section). These
examples teach it to answer with the sentence that holds the answer, citing its passage:

- the question's paragraph is shown with up to two other paragraphs of the same document (in a random order, so the
  answer is not always passage [1]), cut by the app's own windows (:func:`chatqa.export.example_passages`);
- the reply is the sentence (or sentences) of the paragraph holding the labelled answer, white space collapsed,
  then ``[n]`` (:func:`chatqa.export.chat_records`). Answers whose sentences run past ``MAX_REPLY_CHARS`` are left out.

Each document is one "conversation", so the held-out split keeps whole documents apart. The same number of examples
is drawn from each file, seeded.

Measured once (the README's decoder section): 480 PolicyQA and SQuAD answers taught the 0.5B to copy sentences, but
on manuals it then chose the wrong sentence more often than the packaged model answered right, so the promotion rule
refused the version. The choice of sentence is what these labels do not teach.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from chatqa.export import ExamplePassage, FeedbackExample
from chatqa.grounding import evidence_sentence
from knowledge.errors import ChatQAError

MAX_REPLY_CHARS = 400


def squad_seed_examples(paths: Sequence[str | Path], n: int, seed: int = 0, shown: int = 3) -> list[FeedbackExample]:
    """Up to ``n`` answerable examples drawn evenly from ``paths`` (SQuAD JSON), each with ``shown`` passages."""
    if n <= 0 or not paths:
        return []
    rng = random.Random(seed)
    per_file = [n // len(paths) + (i < n % len(paths)) for i in range(len(paths))]
    examples: list[FeedbackExample] = []
    for path, quota in zip(paths, per_file, strict=True):
        pool = _answerable(Path(path))
        rng.shuffle(pool)
        taken = 0
        for title, contexts, index, qa in pool:
            if taken == quota:
                break
            example = _example(rng, title, contexts, index, qa, shown)
            if example is not None:
                examples.append(example)
                taken += 1
    return examples


def _answerable(path: Path) -> list[tuple[str, list[str], int, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ChatQAError(f"cannot read SQuAD-format examples from {path}: {e}") from e
    pool = []
    for article in data:
        contexts = [p["context"] for p in article["paragraphs"]]
        for index, paragraph in enumerate(article["paragraphs"]):
            pool.extend((article["title"], contexts, index, qa) for qa in paragraph["qas"]
                        if qa.get("answers") and not qa.get("is_impossible"))
    return pool


def _example(rng: random.Random, title: str, contexts: list[str], index: int, qa: dict,
             shown: int) -> FeedbackExample | None:
    context, answer = contexts[index], qa["answers"][0]
    start, end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
    if context[start:end] != answer["text"] or len(evidence_sentence(context, start, end)) > MAX_REPLY_CHARS:
        return None
    others = sorted({c for c in contexts if c != context})
    order = rng.sample(others, min(shown - 1, len(others)))
    rank = rng.randrange(len(order) + 1)
    order.insert(rank, context)
    doc_name = title.rsplit("/", 1)[-1]
    passages = tuple(ExamplePassage(text, doc_name, rank=r) for r, text in enumerate(order))
    return FeedbackExample(f"seed-{qa['id']}", f"seed:{title}", 0, qa["question"], context, start, answer["text"],
                           "seed", None, (), passages, rank)
