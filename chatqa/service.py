"""One engine shared by every front end: the browser app (`ui/`) and the HTTP API (`api/`) in one process.

:class:`TurnRunner` answers questions one at a time, in the order they arrive, each on the runner's own thread: the
models and the FAISS index are shared, so a second question waits for the first. A turn, once started, runs to its
end and is logged whatever its caller does meanwhile: a browser tab closed or an HTTP client that disconnects
mid-stream leaves neither the engine stuck nor a turn half-logged. A question still waiting when its caller goes
away is dropped before it starts.

:class:`ChatService` is what the front ends hold: the engine, its runner, the users (sign-in), and the warm-up in the
background (the bundled documents, the embedder and reader, then the decoder) with a status line to show.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chatqa.auth import UserStore
from chatqa.engine import ChatEngine, TurnEvent, check_question, final_result
from chatqa.turn import TurnResult

logger = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class TurnRunner:
    """Runs an engine's turns one at a time, in arrival order, on one thread of its own."""

    def __init__(self, engine: ChatEngine):
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatqa-turn")
        self._lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Questions queued or being answered."""
        return self._waiting

    def stream(self, question: str, conversation_id: str | None = None, **kwargs) -> Iterator[TurnEvent]:
        """The events of :meth:`ChatEngine.stream`, produced on the runner's thread. Raises InvalidQuery at once
        (before queuing) for an empty or oversized question, and re-raises whatever the engine raised. Closing the
        iterator early does not stop a turn that has started."""
        check_question(question)
        events: queue.SimpleQueue = queue.SimpleQueue()
        abandoned = threading.Event()

        def run() -> None:
            try:
                if abandoned.is_set():
                    logger.info("dropped a question whose caller left before it was answered")
                    return
                for event in self.engine.stream(question, conversation_id, **kwargs):
                    events.put(event)
            except BaseException as e:  # handed to the caller, who raises it
                events.put(_Failed(e))
            finally:
                events.put(_END)
                with self._lock:
                    self._waiting -= 1

        with self._lock:
            self._waiting += 1
        self._pool.submit(run)
        try:
            while (item := events.get()) is not _END:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            abandoned.set()

    def ask(self, question: str, conversation_id: str | None = None, **kwargs) -> TurnResult:
        return final_result(self.stream(question, conversation_id, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ChatService:
    """The engine, its :class:`TurnRunner` and the users, shared by the browser app and the HTTP API."""

    def __init__(self, engine: ChatEngine, *, warm_decoder: bool = True, users: UserStore | None = None):
        self.engine = engine
        self.runner = TurnRunner(engine)
        self.users = users  # None: no sign-in, one person who may do everything
        self.warm_decoder = warm_decoder and engine.decoder is not None
        self.ready = threading.Event()  # knowledge base seeded, embedder and reader loaded: questions can be answered
        self.warm_done = threading.Event()  # everything, the decoder included, is loaded (or failed)
        self.status = "Loading the models…"

    @property
    def kb(self):
        return self.engine.kb

    @property
    def log(self):
        return self.engine.log

    def start_warm_up(self) -> threading.Thread:
        thread = threading.Thread(target=self._warm_up, name="chatqa-warm-up", daemon=True)
        thread.start()
        return thread

    def _warm_up(self) -> None:
        from knowledge.bundle import seed_bundled_documents

        try:
            self.status = "Loading the embedder and the reader…"
            seed_bundled_documents(self.kb.open())
            self.engine.warm_up(decoder=False)
        except Exception as e:  # the app stays up and says what is wrong
            logger.exception("warm-up failed")
            self.status = f"Could not load the models: {e}"
            self.ready.set()
            self.warm_done.set()
            return
        self.ready.set()
        if self.warm_decoder:
            self.status = "Ready (extractive answers). Loading the generative decoder…"
            try:
                self.engine.decoder.warm_up(progress=self._decoder_progress)
            except Exception as e:
                logger.warning("decoder unavailable: %s", e)
                self.status = f"Ready (extractive answers only: the decoder could not be loaded: {e})"
                self.warm_done.set()
                return
        self.status = "Ready."
        self.warm_done.set()

    def _decoder_progress(self, line: str) -> None:
        self.status = f"Ready (extractive answers). {line}"

    def models_loaded(self) -> dict[str, bool]:
        """Which models are loaded now (the health check's answer)."""
        decoder = self.engine.decoder
        return {
            "embedder": bool(getattr(self.kb.embedder, "is_loaded", True)),
            "reader": bool(getattr(self.engine.reader, "is_loaded", True)),
            "decoder": decoder is not None and decoder.is_loaded,
        }
