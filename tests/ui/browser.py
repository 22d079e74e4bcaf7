"""Driving the real app in Debian's Chromium with Playwright: shared by tests/ui/test_browser.py and
bench/cold_start.py. No project code is imported: the app runs as `python run.py` in its own process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [  # a closed network: no background connections that would be refused
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
_SHOWN_TURN = (
    "() => { const s = document.querySelector('#chatqa-sources .chatqa-sources'); return s ? s.dataset.turnId : null; }"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """`python run.py --data-dir DATA --port PORT` in a child process, its output in ``log_path``."""

    def __init__(self, data_dir: Path, log_path: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", "--data-dir", str(data_dir), "--port", str(self.port), *args], cwd=REPO,
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_listening(self, timeout: float = 180.0) -> float:
        """Seconds from start until the port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the app did not listen within {timeout:.0f} s")

    def stop(self) -> str:
        """Stop the app; returns its output."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
        return self.log_path.read_text()


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def bot_messages(page):
    return page.locator('#chatqa-chat [data-testid="bot"]')


def ask(page, question: str, timeout: float = 60.0) -> str:
    """Ask and wait until the turn is final (the sources panel then shows the new turn); returns the answer text."""
    before = page.evaluate(_SHOWN_TURN)
    box = page.locator("#chatqa-question textarea")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function(f"before => ({_SHOWN_TURN})() !== before", arg=before, timeout=timeout * 1000)
    page.wait_for_timeout(300)
    return bot_messages(page).last.inner_text()


def wait_status(page, text: str = "Ready", timeout: float = 240.0) -> None:
    """Wait until the status line at the top contains ``text`` ("Ready": questions are answered; "Ready.": the
    decoder is loaded too)."""
    page.wait_for_function(
        "t => { const s = document.querySelector('#chatqa-status'); return s && s.innerText.includes(t); }",
        arg=text, timeout=timeout * 1000,
    )
