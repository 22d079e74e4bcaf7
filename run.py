"""Start ChatQA.

    python run.py [--data-dir DIR] [--mode extractive|generative|auto]

On a fresh data directory the bundled documents are added first, so the first question already gets an answer.
Until the browser app lands, this opens the terminal chat (`chatqa chat`).
"""

from __future__ import annotations

import sys

from chatqa.cli import main

if __name__ == "__main__":
    sys.exit(main(["chat", *sys.argv[1:]]))
