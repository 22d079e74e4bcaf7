"""Reading SQuAD-format JSON files (v1.1 and v2.0) into plain dataclasses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.errors import ChatQAError


class InvalidSquadFile(ChatQAError):
    pass


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset into the paragraph's context

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[Answer, ...]
    is_impossible: bool = False


@dataclass(frozen=True)
class Paragraph:
    context: str
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Article:
    title: str
    paragraphs: tuple[Paragraph, ...]


@dataclass(frozen=True)
class SquadExample:
    """One question with its own paragraph: the reading-comprehension unit."""

    id: str
    title: str
    context: str
    question: str
    answers: tuple[Answer, ...]
    is_impossible: bool = False


@dataclass
class SquadFile:
    articles: list[Article] = field(default_factory=list)
    version: str = ""

    def examples(self) -> Iterator[SquadExample]:
        for article in self.articles:
            for paragraph in article.paragraphs:
                for q in paragraph.questions:
                    yield SquadExample(q.id, article.title, paragraph.context, q.question, q.answers, q.is_impossible)

    @property
    def is_v2(self) -> bool:
        return any(ex.is_impossible for ex in self.examples())


def load_squad(path: str | Path) -> SquadFile:
    """Parse a SQuAD-format file. Raises InvalidSquadFile with the reason if it is not one."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidSquadFile(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidSquadFile(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise InvalidSquadFile(f"{path}: expected an object with a 'data' list (SQuAD format)")
    articles = []
    try:
        for a in raw["data"]:
            paragraphs = []
            for p in a["paragraphs"]:
                questions = tuple(
                    Question(
                        id=str(q["id"]),
                        question=q["question"],
                        answers=tuple(Answer(x["text"], int(x["answer_start"])) for x in q.get("answers", [])),
                        is_impossible=bool(q.get("is_impossible", False)),
                    )
                    for q in p.get("qas", [])
                )
                paragraphs.append(Paragraph(p["context"], questions))
            articles.append(Article(a.get("title", ""), tuple(paragraphs)))
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidSquadFile(f"{path}: malformed SQuAD entry ({e!r})") from None
    return SquadFile(articles, str(raw.get("version", "")))
