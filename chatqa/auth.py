"""Users, passwords and API keys: who may use a shared ChatQA, and who may change what everyone shares.

Used by the browser app (Gradio's login) and meant for the HTTP API too, so nothing here knows about Gradio. A
:class:`UserStore` comes from a users file (``chatqa users add`` writes it) or from an inline spec
(``NAME:PASSWORD[:admin],...``, for a quick test; the passwords are then hashed in memory at start-up).

The users file is JSON and holds only salted hashes, never a password or a key::

    {"version": 1, "users": {"alice": {"admin": true, "password": "scrypt$16384$8$1$<salt>$<hash>",
                                        "keys": [{"id": "3f9c1a2b", "hash": "sha256$<hex>", "created": "..."}]}}}

Passwords: :func:`hashlib.scrypt` (n=2**14, r=8, p=1, a random 16-byte salt per password), compared in constant
time. API keys are 32 random bytes (``cqa_<id>_<secret>``, shown once by :meth:`UserStore.new_key`); a key has that
much entropy, so its SHA-256 is enough to store and to look it up by.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from knowledge.errors import ChatQAError

logger = logging.getLogger(__name__)

USERS_FILE = "users.json"  # the default users file, in the data directory
MIN_PASSWORD_CHARS = 8
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_KEY_PREFIX = "cqa_"


class AuthError(ChatQAError):
    """A users file or auth spec that cannot be used, or a user command that cannot be done."""


class UnknownUser(AuthError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"no user {name!r}; list them with `chatqa users list`")


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False


@dataclass
class _Entry:
    admin: bool
    password: str  # "scrypt$n$r$p$salt$hash"
    keys: list[dict] = field(default_factory=list)  # {"id", "hash", "created"}


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, **_SCRYPT, maxmem=64 * 2**20, dklen=32)
    return "$".join(["scrypt", str(_SCRYPT["n"]), str(_SCRYPT["r"]), str(_SCRYPT["p"]), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 2**20, dklen=len(expected))
    except (ValueError, TypeError):
        logger.warning("a stored password hash is malformed")
        return False
    return hmac.compare_digest(got, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _key_hash(key: str) -> str:
    return "sha256$" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AuthError(f"a user name is 1 to 64 letters, digits or . _ @ - (starting with a letter or digit), "
                        f"got {name!r}")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise AuthError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if password != password.strip() or "\n" in password:
        raise AuthError("a password cannot start or end with white space or contain a line break")
    return password


class UserStore:
    """The users of one ChatQA: authenticate them, look up API keys, and (for a file) add and remove them.

    ``path`` None: an in-memory store (from :meth:`from_spec`'s inline form) that cannot be saved.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self._users: dict[str, _Entry] = {}
        self._keys: dict[str, str] = {}  # key hash → user name
        self._dummy = hash_password(secrets.token_hex(8))  # checked for unknown names, so timing does not tell
        self._stamp: tuple[int, int] | None = None  # the file's (mtime, size) when read

    # -- loading and saving ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, missing_ok: bool = False) -> UserStore:
        store = cls(path)
        if not store.path.exists():
            if missing_ok:
                return store
            raise AuthError(f"no users file at {store.path}; create it with `chatqa users add NAME --admin "
                            f"--users-file {store.path}`")
        try:
            data = json.loads(store.path.read_text(encoding="utf-8"))
            users = data["users"]
            for name, entry in users.items():
                store._users[check_name(name)] = _Entry(bool(entry.get("admin")), str(entry["password"]),
                                                        list(entry.get("keys") or []))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, AuthError) as e:
            raise AuthError(f"cannot read the users file {store.path}: {e}") from None
        store._index_keys()
        store._stamp = store._file_stamp()
        return store

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return None if stat is None else (stat.st_mtime_ns, stat.st_size)

    def reload_if_changed(self) -> None:
        """Read the users file again when it changed since it was read (`chatqa users add|remove|key` while the app
        runs): a new key or password works at once, a removed user or revoked key no longer does. A file that
        cannot be read now keeps the users as they were."""
        if self._stamp is None or self._file_stamp() in (None, self._stamp):
            return
        try:
            fresh = UserStore.load(self.path)
        except AuthError as e:
            logger.warning("kept the users as they were: %s", e)
            self._stamp = self._file_stamp()  # tried once; read again when it next changes
            return
        self._users, self._keys, self._stamp = fresh._users, fresh._keys, fresh._stamp

    @classmethod
    def from_spec(cls, spec: str) -> UserStore:
        """``spec``: a users file, or inline users ``NAME:PASSWORD[:admin]`` separated by commas (a password then
        cannot hold a comma or end with ``:admin``)."""
        spec = spec.strip()
        if not spec:
            raise AuthError("--auth needs a users file or NAME:PASSWORD[:admin],...")
        if Path(spec).expanduser().is_file():
            return cls.load(Path(spec).expanduser())
        if ":" not in spec:
            raise AuthError(f"no users file at {spec}; create one with `chatqa users add NAME --admin "
                            f"--users-file {spec}`, or give users inline as NAME:PASSWORD[:admin],...")
        store = cls()
        for item in spec.split(","):
            name, sep, password = item.strip().partition(":")
            admin = password.endswith(":admin")
            if admin:
                password = password.removesuffix(":admin")
            if not sep or not name or not password:
                raise AuthError(f"inline users are NAME:PASSWORD[:admin] separated by commas, got {item.strip()!r}")
            check_name(name)
            if name in store._users:
                raise AuthError(f"user {name!r} is given twice")
            store._users[name] = _Entry(admin, hash_password(password))
        return store

    def save(self) -> None:
        """Write the users file atomically, readable by its owner only."""
        if self.path is None:
            raise AuthError("these users were given inline; write a users file with `chatqa users add`")
        data = {"version": 1, "users": {
            name: {"admin": e.admin, "password": e.password, "keys": e.keys} for name, e in sorted(self._users.items())
        }}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".users-", suffix=".tmp", dir=self.path.parent)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.path)
            self._stamp = self._file_stamp()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _index_keys(self) -> None:
        self._keys = {k["hash"]: name for name, e in self._users.items() for k in e.keys}

    # -- reading ---------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._users)

    def users(self) -> list[User]:
        return [User(name, e.admin) for name, e in sorted(self._users.items())]

    def get(self, name: str | None) -> User | None:
        self.reload_if_changed()
        entry = self._users.get(name) if isinstance(name, str) else None
        return None if entry is None else User(name, entry.admin)

    def keys(self, name: str) -> list[dict]:
        """The user's API keys as ``{"id", "created"}`` (the keys themselves are not stored)."""
        return [{"id": k["id"], "created": k["created"]} for k in self._entry(name).keys]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is theirs, else None (an unknown name costs the same time)."""
        self.reload_if_changed()
        entry = self._users.get(name) if isinstance(name, str) else None
        ok = verify_password(password if isinstance(password, str) else "", entry.password if entry else self._dummy)
        if entry is None or not ok:
            logger.info("failed sign-in for %r", name)
            return None
        return User(name, entry.admin)

    def user_for_key(self, key: str) -> User | None:
        self.reload_if_changed()
        if not isinstance(key, str) or not key.startswith(_KEY_PREFIX):
            return None
        name = self._keys.get(_key_hash(key))
        return None if name is None else self.get(name)

    # -- changing (then call save()) -------------------------------------------------------------------------------
    def add(self, name: str, password: str, *, admin: bool = False) -> User:
        check_name(name)
        if name in self._users:
            raise AuthError(f"user {name!r} exists already; change the password with `chatqa users passwd {name}`")
        self._users[name] = _Entry(admin, hash_password(check_password(password)))
        return User(name, admin)

    def set_password(self, name: str, password: str) -> None:
        self._entry(name).password = hash_password(check_password(password))

    def set_admin(self, name: str, admin: bool) -> None:
        self._entry(name).admin = admin

    def remove(self, name: str) -> None:
        self._entry(name)
        del self._users[name]
        self._index_keys()

    def new_key(self, name: str) -> str:
        """A new API key for the user, returned once: only its hash is kept."""
        entry = self._entry(name)
        key_id = secrets.token_hex(4)
        key = f"{_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        entry.keys.append({"id": key_id, "hash": _key_hash(key),
                           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        self._index_keys()
        return key

    def revoke_key(self, name: str, key_id: str) -> None:
        entry = self._entry(name)
        kept = [k for k in entry.keys if k["id"] != key_id]
        if len(kept) == len(entry.keys):
            raise AuthError(f"user {name!r} has no API key {key_id!r}; see `chatqa users list`")
        entry.keys = kept
        self._index_keys()

    def _entry(self, name: str) -> _Entry:
        entry = self._users.get(name)
        if entry is None:
            raise UnknownUser(name)
        return entry


# -- who may listen where --------------------------------------------------------------------------------------------
class OpenWithoutSignIn(AuthError):
    """A server reachable from other machines, without sign-in, and nobody said that was meant."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may well be reachable from elsewhere


def check_host(host: str, *, auth: bool, no_auth: bool = False) -> None:
    """Refuse to serve other machines without sign-in unless ``no_auth`` says it is meant."""
    if auth and no_auth:
        raise AuthError("--auth and --no-auth contradict each other; choose one")
    if not auth and not no_auth and not is_loopback(host):
        raise OpenWithoutSignIn(
            f"--host {host} lets other machines reach ChatQA, and without sign-in anyone who reaches it can read "
            "every conversation and change the documents. Add users with `chatqa users add NAME --admin` and start "
            "with --auth DATA_DIR/users.json (or $CHATQA_AUTH), or pass --no-auth if everyone on this network may."
        )
