"""Where packaged models are converted for this machine (never into the repository), and the lock that lets one
process convert while another waits: the embedder (knowledge/embedder_ct2.py), the decoder and the rewriter
(chatqa/models/conversion.py) share both."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def default_cache_dir() -> Path:
    """``$CHATQA_CACHE_DIR``, else ``~/.cache/chatqa``."""
    return Path(os.environ.get("CHATQA_CACHE_DIR") or Path.home() / ".cache" / "chatqa")


@contextmanager
def conversion_lock(folder: Path) -> Iterator[None]:
    """Hold the lock of the conversion into ``folder`` (a ``.<name>.lock`` file beside it): another process
    converting the same model waits here, then finds the work done."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
