"""`chatqa users ...`: the users file that `python run.py --auth FILE` reads (see chatqa/auth.py).

Passwords are typed at a prompt (twice), or read from one line of standard input with ``--password-stdin`` (for
scripts); they never appear on the command line. An API key is printed once, when it is made.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from chatqa.auth import USERS_FILE, AuthError, UnknownUser, UserStore


def users_file(args) -> Path:
    if args.users_file is not None:
        return args.users_file
    from knowledge.base import default_data_dir

    return (args.data_dir or default_data_dir()) / USERS_FILE


def _password(args, prompt: str = "Password") -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise AuthError("--password-stdin: no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise AuthError("no terminal to ask for the password; pipe it in with --password-stdin")
    try:
        password = getpass.getpass(f"{prompt}: ")
        again = getpass.getpass(f"{prompt} again: ")
    except EOFError:
        raise AuthError("no password given; nothing was changed") from None
    if again != password:
        raise AuthError("the two passwords differ; nothing was changed")
    return password


def cmd_users_add(args) -> int:
    path = users_file(args)
    store = UserStore.load(path, missing_ok=True)
    user = store.add(args.name, _password(args), admin=args.admin)
    store.save()
    print(f"added {'admin ' if user.admin else ''}user {user.name} to {path}")
    print(f"(the app asks for sign-in when started with: python run.py --auth {path})", file=sys.stderr)
    return 0


def cmd_users_passwd(args) -> int:
    path = users_file(args)
    store = UserStore.load(path)
    if store.get(args.name) is None:  # before asking for a password
        raise UnknownUser(args.name)
    store.set_password(args.name, _password(args, "New password"))
    store.save()
    print(f"changed the password of {args.name} in {path}")
    return 0


def cmd_users_remove(args) -> int:
    path = users_file(args)
    store = UserStore.load(path)
    store.remove(args.name)
    store.save()
    print(f"removed user {args.name} (and their API keys) from {path}; their conversations stay in the log")
    return 0


def cmd_users_list(args) -> int:
    path = users_file(args)
    store = UserStore.load(path)
    if not len(store):
        print(f"No users in {path}. Add one with `chatqa users add NAME --admin`.")
        return 0
    for user in store.users():
        keys = ", ".join(k["id"] for k in store.keys(user.name)) or "none"
        print(f"{user.name}{' (admin)' if user.admin else ''}  API keys: {keys}")
    return 0


def cmd_users_key(args) -> int:
    path = users_file(args)
    store = UserStore.load(path)
    if args.revoke:
        store.revoke_key(args.name, args.revoke)
        store.save()
        print(f"revoked API key {args.revoke} of {args.name}")
        return 0
    key = store.new_key(args.name)
    store.save()
    print(key)
    print(f"(a new API key of {args.name}: it is shown only now; only its hash is kept in {path})", file=sys.stderr)
    return 0


def add_users_commands(commands, common: argparse.ArgumentParser) -> None:
    """The `users` command group, added to chatqa's sub-commands."""
    users = commands.add_parser(
        "users", help="users and passwords for a shared app (python run.py --auth FILE)",
        description="Manage the users file of a shared app: salted password hashes, admin flags, hashed API keys.",
    )
    sub = users.add_subparsers(dest="users_command", metavar="USERS_COMMAND", required=True)
    file_opt = argparse.ArgumentParser(add_help=False)
    file_opt.add_argument("--users-file", type=Path, default=None,
                          help=f"the users file (default: DATA_DIR/{USERS_FILE})")
    stdin_opt = argparse.ArgumentParser(add_help=False)
    stdin_opt.add_argument("--password-stdin", action="store_true",
                           help="read the password from one line of standard input instead of a prompt")

    p = sub.add_parser("add", parents=[common, file_opt, stdin_opt], help="add a user (asks for the password)",
                       description="Add a user; the password is asked twice (or read with --password-stdin).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--admin", action="store_true",
                   help="may change what all users share: documents, re-indexing, model versions, the export")
    p.set_defaults(func=cmd_users_add)
    p = sub.add_parser("passwd", parents=[common, file_opt, stdin_opt], help="change a user's password",
                       description="Change a user's password.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_users_passwd)
    p = sub.add_parser("remove", parents=[common, file_opt], help="remove a user and their API keys",
                       description="Remove a user and their API keys.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_users_remove)
    p = sub.add_parser("list", parents=[common, file_opt], help="list the users, admins and API key ids",
                       description="List the users, which are admins, and the ids of their API keys.")
    p.set_defaults(func=cmd_users_list)
    p = sub.add_parser("key", parents=[common, file_opt], help="make a new API key for a user (printed once)",
                       description="Print a new API key for the user (only its hash is stored), or revoke one.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--revoke", metavar="KEY_ID", default=None, help="revoke this key (its id from `users list`)")
    p.set_defaults(func=cmd_users_key)
