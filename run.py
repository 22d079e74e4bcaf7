"""Start ChatQA in the browser.

    python run.py [--host 127.0.0.1] [--port 7860] [--data-dir DIR] [--mode extractive|generative|auto] [--k 5]

On a fresh data directory the bundled documents are added first, so the first question already gets an answer.
The same app is `chatqa ui`; `chatqa chat` is the terminal chat.
"""

from __future__ import annotations

import sys

from chatqa.cli import main

if __name__ == "__main__":
    sys.exit(main(["ui", *sys.argv[1:]]))
