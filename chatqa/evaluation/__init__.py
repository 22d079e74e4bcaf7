"""Evaluation: SQuAD-format files (retrieval, reader, conversations, calibration) and the doc-QA dev set of real
documentation. The public names of both modules are importable from here."""

from __future__ import annotations

from chatqa.evaluation.docqa import (
    add_documents,
    answer_recall,
    evaluate_docs,
    format_docs_report,
    gold_rank,
    percentile,
)
from chatqa.evaluation.docqa_set import KINDS, all_items, document_paths, load_docqa_set
from chatqa.evaluation.squad_files import (
    ArticleDocument,
    build_article_kb,
    calibrate_chat_threshold,
    calibrate_threshold,
    evaluate_conversations,
    evaluate_reader,
    evaluate_retrieval,
    load_conversations,
    no_answer_margin,
    parse_ks,
    read_examples,
    select_articles,
    v2_inputs,
)

__all__ = [
    "KINDS", "ArticleDocument", "add_documents", "all_items", "answer_recall", "build_article_kb",
    "calibrate_chat_threshold", "calibrate_threshold", "document_paths", "evaluate_conversations", "evaluate_docs",
    "evaluate_reader", "evaluate_retrieval", "format_docs_report", "gold_rank", "load_conversations",
    "load_docqa_set", "no_answer_margin", "parse_ks", "percentile", "read_examples", "select_articles", "v2_inputs",
]
