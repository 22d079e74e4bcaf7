"""Start ChatQA: the browser app at / and the OpenAI-compatible HTTP API at /v1, over one engine.

    python run.py [--host 127.0.0.1] [--port 7860] [--data-dir DIR] [--mode extractive|generative|auto] [--k 5]
                  [--auth USERS_FILE | --auth NAME:PASSWORD[:admin],... | --no-auth] [--api-only]

On a fresh data directory the bundled documents are added first, so the first question already gets an answer.
`chatqa chat` is the same engine in a terminal. Listening on another address than this machine's own (--host 0.0.0.0)
needs sign-in (--auth, or $CHATQA_AUTH) or an explicit --no-auth; the API then asks for the users' keys.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from chatqa.cli import _offline, _positive_int, _positive_mb
from chatqa.turn import ANSWER_MODES
from knowledge.errors import ChatQAError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="ChatQA: the browser app (chat with sources, feedback, knowledge "
                                                 "base, export and models) and the OpenAI-compatible HTTP API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_positive_int, default=7860, help="port (default 7860)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory (default: $CHATQA_DATA_DIR or ./chatqa-data)")
    parser.add_argument("--mode", choices=ANSWER_MODES, default="auto",
                        help="answer mode (default auto: the generative decoder once it is loaded)")
    parser.add_argument("--k", type=_positive_int, default=5, help="passages read per question (default 5)")
    parser.add_argument("--reader", type=Path, default=None,
                        help="a fixed reader checkpoint (default: the data directory's active version)")
    parser.add_argument("--browser", action="store_true", help="open the app in the default web browser")
    parser.add_argument("--auth", default=os.environ.get("CHATQA_AUTH") or None, metavar="SPEC",
                        help="require sign-in: a users file (made by `chatqa users add`) or inline users "
                             "NAME:PASSWORD[:admin],... (default: $CHATQA_AUTH)")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve another --host than 127.0.0.1 without sign-in: everyone who reaches it may read "
                             "every conversation and change the documents")
    parser.add_argument("--api-only", action="store_true",
                        help="serve the HTTP API alone (/v1, /docs, /health), without the browser app")
    parser.add_argument("--max-file-mb", type=_positive_mb, default=None, metavar="MB",
                        help="largest file to upload and add, in MB (default: $CHATQA_MAX_FILE_MB or 50)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.max_file_mb is not None:
        os.environ["CHATQA_MAX_FILE_MB"] = str(args.max_file_mb)  # read by the knowledge base the app opens
    try:
        from chatqa.auth import UserStore, check_host

        users = None if args.auth is None else UserStore.from_spec(args.auth)
        check_host(args.host, auth=users is not None, no_auth=args.no_auth)  # before loading anything
        _offline()
        launch(args.data_dir, host=args.host, port=args.port, mode=args.mode, k=args.k, reader=args.reader,
               open_browser=args.browser, users=users, no_auth=args.no_auth, api_only=args.api_only)
    except ChatQAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def launch(
    data_dir=None, *, host: str = "127.0.0.1", port: int = 7860, mode: str = "auto", k: int = 5, reader=None,
    open_browser: bool = False, block: bool = True, users=None, no_auth: bool = False, api_only: bool = False,
):
    """Open the engine on ``data_dir``, warm the models in the background, and serve the API (and, unless
    ``api_only``, the browser app). ``users``: sign-in and API keys (None: neither, for this machine only unless
    ``no_auth``). Returns the running server (``block=False``) once it listens."""
    from api import create_api
    from chatqa.auth import check_host
    from chatqa.engine import EngineSettings, open_engine
    from chatqa.service import ChatService
    from ui.app import ChatQAApp
    from ui.server import serve, start

    check_host(host, auth=users is not None, no_auth=no_auth)  # before anything is opened or loaded
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # private and offline: no calls home
    engine = open_engine(data_dir, settings=EngineSettings(mode=mode, k=k), reader_checkpoint=reader, lazy=True)
    service = ChatService(engine, warm_decoder=mode != "extractive", users=users)
    service.start_warm_up()
    api = create_api(service)
    who = "sign-in and API keys required" if users is not None else "no sign-in"
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    print(f"ChatQA on http://{where} (API: http://{where}/v1, docs at /docs; data: {engine.kb.data_dir}; {who})",
          flush=True)
    if api_only:
        return start(api, host=host, port=port, block=block)
    return serve(ChatQAApp(service), root=api, host=host, port=port, no_auth=no_auth, open_browser=open_browser,
                 block=block, blocked_paths=[str(Path(engine.kb.data_dir).resolve())])


if __name__ == "__main__":
    sys.exit(main())
