"""Model versions of one data directory: every reader retrained from the conversation log, its metrics, and which
one is active.

    <data_dir>/models/reader/registry.json     {"active": "r2", "versions": [...]}
    <data_dir>/models/reader/versions/r1/      a reader checkpoint folder (fp16 safetensors, chatqa_reader.json)

The version ``shipped`` is the checkpoint that comes with ChatQA (``chatqa/models/reader``); it is active until a
retrained version is promoted. ``registry.json`` is replaced atomically, so a reader of the file sees the old or the
new state, never half of one; a version folder is complete before it is registered. A running app compares the
active version with the one it has loaded before each answer and switches without a restart.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from knowledge.errors import ChatQAError
from knowledge.files import atomic_write

SHIPPED = "shipped"


class UnknownVersion(ChatQAError):
    def __init__(self, version: str, known: list[str]):
        super().__init__(f"no model version {version!r}; known versions: {', '.join(known)}")


@dataclass(frozen=True)
class ModelVersion:
    id: str
    path: str | None  # relative to the registry folder; None for the shipped checkpoint
    created: str
    parent: str | None = None
    promoted: bool = False  # whether it won the comparison when it was trained
    reason: str = ""  # why it was (not) promoted
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


class ModelRegistry:
    """The versions of one model role ("reader") in ``<data_dir>/models/<role>/``."""

    def __init__(self, data_dir: str | Path, role: str = "reader", shipped: str | Path | None = None):
        from chatqa.reader import DEFAULT_READER_DIR

        self.folder = Path(data_dir) / "models" / role
        self.shipped = Path(shipped) if shipped is not None else DEFAULT_READER_DIR
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.folder / "registry.json"

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as e:
            raise ChatQAError(f"{self.path} is unreadable ({e}); move it away to start again from the shipped model") from None
        versions = data.get("versions") or [asdict(ModelVersion(SHIPPED, None, "", reason="comes with ChatQA"))]
        return {"active": data.get("active", SHIPPED), "versions": versions}

    def _write(self, data: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data, indent=2))

    # -- reading -------------------------------------------------------------------------------------------------
    def versions(self) -> list[ModelVersion]:
        return [ModelVersion(**v) for v in self._read()["versions"]]

    def active(self) -> ModelVersion:
        data = self._read()
        return next((ModelVersion(**v) for v in data["versions"] if v["id"] == data["active"]), self.versions()[0])

    def get(self, version: str) -> ModelVersion:
        found = [v for v in self.versions() if v.id == version]
        if not found:
            raise UnknownVersion(version, [v.id for v in self.versions()])
        return found[0]

    def checkpoint(self, version: ModelVersion | str | None = None) -> Path:
        """The folder of ``version`` (default: the active one)."""
        v = self.active() if version is None else version if isinstance(version, ModelVersion) else self.get(version)
        return self.shipped if v.path is None else self.folder / v.path

    # -- writing -------------------------------------------------------------------------------------------------
    def add(self, model_dir: str | Path, *, parent: str, promoted: bool, reason: str, metrics: dict,
            training: dict | None = None) -> ModelVersion:
        """Move a complete model folder into ``versions/`` and record it; it becomes active when ``promoted``."""
        with self._lock:
            data = self._read()
            n = 1 + max((int(v["id"][1:]) for v in data["versions"] if v["id"][1:].isdigit()), default=0)
            version = ModelVersion(
                f"r{n}", f"versions/r{n}", datetime.now(timezone.utc).isoformat(timespec="seconds"), parent,
                promoted, reason, metrics, training or {},
            )
            target = self.folder / version.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)  # a folder left by a run that died before registering it
            shutil.move(str(model_dir), target)
            data["versions"].append(asdict(version))
            if promoted:
                data["active"] = version.id
            self._write(data)
        return version

    def activate(self, version: str) -> ModelVersion:
        """Make ``version`` the active one (switching back included)."""
        with self._lock:
            data = self._read()
            if not any(v["id"] == version for v in data["versions"]):
                raise UnknownVersion(version, [v["id"] for v in data["versions"]])
            data["active"] = version
            self._write(data)
        return self.get(version)
