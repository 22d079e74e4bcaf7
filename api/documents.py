"""``/v1/documents``: the knowledge base over HTTP. Everyone may list it; with users, only admins add or remove.

An upload is several files in one multipart request (field ``files``); each gets its own result, as ``chatqa kb
add`` reports them: ``added``, ``unchanged`` (the same content is already there), ``failed`` (with the reason: an
unsupported type, a corrupt or encrypted file, one over the size limit) or ``skipped`` (what an archive's walk left
out). One bad file never stops the others, and nothing already stored is lost.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from api.access import admin, caller, service
from api.errors import APIError
from chatqa.auth import User
from chatqa.service import ChatService
from chatqa.terminal import terminal_safe
from knowledge.store import DocumentInfo

router = APIRouter()

MAX_FILES = 100  # per request
MAX_ID = 2**62  # larger ids are a 400, not an SQLite overflow


def document(doc: DocumentInfo) -> dict:
    return {"id": doc.id, "object": "document", "name": doc.name, "title": doc.title, "bytes": doc.size,
            "type": doc.mime, "passages": doc.n_chunks, "added": doc.added, "sha256": doc.sha256}


def safe_name(name: str | None) -> str:
    """The file name an upload claims, without folders or control characters."""
    name = terminal_safe(Path((name or "").replace("\\", "/")).name).strip().lstrip(".")
    return name[:200] or "upload"


def add_uploads(svc: ChatService, uploads: list[tuple[str, object]]) -> list[dict]:
    """Copy each upload into a temporary folder of its own (its name kept), add them all, report per file."""
    kb = svc.kb
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="chatqa-api-upload-") as tmp:
        paths = []
        for i, (name, source) in enumerate(uploads):
            path = Path(tmp) / str(i) / name
            path.parent.mkdir()
            with path.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            paths.append(path)
        report = kb.add_files(paths)
    for doc in report.added:
        results.append({"file": doc.name, "status": "added", "document": document(doc)})
    for doc in report.unchanged:
        results.append({"file": doc.name, "status": "unchanged", "document": document(doc)})
    for error in report.failed:
        results.append({"file": Path(str(error.name)).name, "status": "failed", "error": error.reason})
    for skipped in report.skipped:
        results.append({"file": skipped.path.name, "status": "skipped", "error": skipped.reason})
    order = {name: i for i, (name, _) in enumerate(uploads)}
    return sorted(results, key=lambda r: order.get(r["file"], len(order)))


@router.get("/v1/documents", tags=["documents"], summary="The documents in the knowledge base")
async def list_documents(svc: ChatService = Depends(service), user: User | None = Depends(caller)):
    docs = await run_in_threadpool(svc.kb.list_documents)
    return {"object": "list", "data": [document(d) for d in docs]}


@router.post("/v1/documents", tags=["documents"], summary="Add files (multipart, field 'files', several allowed)")
async def add_documents(request: Request, files: list[UploadFile], svc: ChatService = Depends(service),
                        user: User | None = Depends(admin)):
    if not files:
        raise APIError(400, "Send one or more files in the multipart field 'files'.", param="files")
    if len(files) > MAX_FILES:
        raise APIError(400, f"At most {MAX_FILES} files per request, got {len(files)}.", param="files")
    limit = svc.kb.max_file_bytes
    too_large = [f for f in files if f.size is not None and f.size > limit]
    uploads = [(safe_name(f.filename), f.file) for f in files if f not in too_large]
    results = await run_in_threadpool(add_uploads, svc, uploads) if uploads else []
    results += [{"file": safe_name(f.filename), "status": "failed",
                 "error": f"larger than the limit of {limit / 1e6:g} MB"} for f in too_large]
    return {"object": "list", "data": results}


@router.get("/v1/documents/{doc_id}", tags=["documents"], summary="One document")
async def get_document(doc_id: int = PathParam(ge=1, le=MAX_ID),
                       svc: ChatService = Depends(service),
                       user: User | None = Depends(caller)):
    return document(await run_in_threadpool(svc.kb.get_document, doc_id))


@router.delete("/v1/documents/{doc_id}", tags=["documents"], summary="Remove a document and its passages")
async def remove_document(doc_id: int = PathParam(ge=1, le=MAX_ID),
                          svc: ChatService = Depends(service),
                          user: User | None = Depends(admin)):
    doc = await run_in_threadpool(svc.kb.remove, doc_id)
    return {**document(doc), "deleted": True}
