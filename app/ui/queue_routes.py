"""The review queue's JSON routes under /ui/review, read and written by the page's own script (app/ui/queue.js).

They answer the browser directly, without Gradio's queue, so that a key press is saved within a few milliseconds.
Like the rest of /ui they are behind the UI's login, not the API keys; the reviewer comes from `workflow.reviewer_of`.
"""

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ..api.routes.batches import batch_or_404, export_response, workflow
from ..core.auth import require_ui_user
from ..core.errors import RequestError
from .batches import FILTERS
from .workflow import reviewer_of

router = APIRouter(prefix="/ui/review", include_in_schema=False, dependencies=[Depends(require_ui_user)])
PAGE = 50  # rows per page of the queue


async def _body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RequestError("send a JSON object", 400, "bad_request")
    return body


def _who(request: Request, body: dict) -> str:
    "The reviewer: see `reviewer_of`; the name the page remembers comes in the body (headers are Latin-1 only)."
    return reviewer_of(request, request.app.state.settings.reviewer_header, str(body.get("reviewer") or ""))


def _filter(flt: str) -> str:
    if flt not in FILTERS:
        raise RequestError(f"filter must be one of {', '.join(FILTERS)}", 400, "bad_filter")
    return flt


@router.get("/batches")
async def batches(request: Request):
    return {"batches": await run_in_threadpool(workflow(request).store.batches)}


@router.get("/batches/{batch_id}/rows")
async def rows(request: Request, batch_id: str, filter: str = "review", offset: int = Query(0, ge=0),
               limit: int = Query(PAGE, ge=1, le=500)):  # fmt: skip
    "A page of the queue, with the batch's summary and the categories (for the keys 1-9, 0)."
    wf, b = workflow(request), batch_or_404(request, batch_id)
    page, total = await run_in_threadpool(wf.store.rows, batch_id, _filter(filter), offset, limit)
    e = wf.engine
    classes = [{"en": en, "ru": ru} for en, ru in zip(e.classes, e.classes_ru)]
    return {"batch": b, "rows": page, "total": total, "offset": offset, "classes": classes}


@router.get("/batches/{batch_id}/rows/{idx}/thumb")
async def thumb(request: Request, batch_id: str, idx: int):
    data = await run_in_threadpool(workflow(request).thumb, batch_id, idx)
    if not data:
        raise RequestError("no thumbnail for this row", 404, "not_found")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.post("/batches/{batch_id}/changes")
async def changes(request: Request, batch_id: str):
    """Set rows' final categories: `{"changes": [{idx, version, source, final_index}]}`; the rows saved and the
    conflicts (rows someone else changed since), each with the row as it is now."""
    body = await _body(request)
    wf = workflow(request)
    batch_or_404(request, batch_id)
    try:
        done, conflicts = await run_in_threadpool(
            wf.change, batch_id, list(body.get("changes") or []), _who(request, body)
        )
    except (ValueError, KeyError, TypeError) as e:
        raise RequestError(f"bad change: {e}", 400, "bad_change") from None
    return {"rows": done, "conflicts": [c.row for c in conflicts], "batch": wf.store.batch(batch_id)}


@router.post("/batches/{batch_id}/accept")
async def accept(request: Request, batch_id: str):
    "Confirm every unreviewed row of the filter `{filter}`: the rows saved (the page's undo sets them back)."
    body = await _body(request)
    wf = workflow(request)
    batch_or_404(request, batch_id)
    flt = _filter(str(body.get("filter") or "review"))
    done = await run_in_threadpool(wf.accept_rest, batch_id, flt, _who(request, body))
    return {"rows": done, "conflicts": [], "batch": wf.store.batch(batch_id)}


@router.get("/batches/{batch_id}/export")
async def export(request: Request, batch_id: str, format: str = Query("csv", pattern="^(csv|xlsx)$")):
    return await run_in_threadpool(export_response, request, batch_id, format)
