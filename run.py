"""Start ChatQA.

    python run.py [--data-dir DIR]

On a fresh data directory the bundled documents are added first, so the first question already gets an answer.
Until the browser app exists this opens a terminal search over the knowledge base.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start ChatQA.")
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (default: $CHATQA_DATA_DIR or ./chatqa-data)")
    parser.add_argument("--k", type=int, default=3, help="passages shown per question")
    args = parser.parse_args(argv)

    from chatqa.cli import _offline, _snippet

    _offline()
    from knowledge.base import KnowledgeBase
    from knowledge.bundle import seed_bundled_documents
    from knowledge.errors import ChatQAError

    kb = KnowledgeBase(args.data_dir).open()
    seed_bundled_documents(kb)
    docs = kb.list_documents()
    print(f"ChatQA: {len(docs)} documents in {kb.data_dir}. Ask a question (empty line or Ctrl-D to quit).")
    while True:
        try:
            question = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not question:
            return 0
        try:
            hits = kb.search(question, k=args.k)
        except ChatQAError as e:
            print(f"error: {e}")
            continue
        if not hits:
            print("  No matching passages.")
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank}. [{hit.doc_name}] {_snippet(hit.text, 300)}")


if __name__ == "__main__":
    sys.exit(main())
