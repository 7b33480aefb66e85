"""`GET /batches/{id}` and `GET /batches/{id}/export`: the review UI's batches for the shop's import scripts."""

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ...core.errors import RequestError
from ...ui.batches import to_csv, to_xlsx
from ..deps import API_KEY_PARAM, check_api_key
from ..schemas import ErrorResponse

router = APIRouter(
    prefix="/batches", tags=["batches"], responses={s: {"model": ErrorResponse} for s in (401, 404, 503)}
)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def workflow(request: Request):
    "The UI's batch workflow; 404 on an API-only replica (no batches here), 503 while the UI's store is not open."
    state = request.app.state
    if state.ui_mount is None:  # FASHIONCAT_UI_ENABLED=false: a client error to ask here, not an outage
        raise RequestError("batches are kept by the review UI, which this replica does not run", 404, "no_batches")
    wf = getattr(state, "workflow", None)
    if wf is None or getattr(state, "engine", None) is None:
        raise RequestError("batches are kept by the review UI, whose store is not open here", 503, "not_ready")
    return wf


def batch_or_404(request: Request, batch_id: str) -> dict:
    b = workflow(request).store.batch(batch_id)
    if b is None:
        raise RequestError(f"no batch {batch_id!r}; the UI's batch list shows the ids", 404, "not_found")
    return b


def export_response(request: Request, batch_id: str, fmt: str) -> Response:
    "A whole batch's final categories as a CSV or XLSX download."
    batch_or_404(request, batch_id)
    wf = workflow(request)
    rows = wf.store.export_rows(batch_id, wf.names_ru())
    body, ctype = (to_xlsx(rows), XLSX) if fmt == "xlsx" else (to_csv(rows), "text/csv; charset=utf-8")
    headers = {"Content-Disposition": f'attachment; filename="batch-{batch_id}.{fmt}"'}
    return Response(body, media_type=ctype, headers=headers)


@router.get("/{batch_id}", summary="A batch: its status, counts by source, audit figures and rows",
            openapi_extra={"parameters": [API_KEY_PARAM]})  # fmt: skip
async def get_batch(request: Request, batch_id: str):
    """The batch (`status` processing/ready/failed, `done` of `n_files`), its counts by source, the audit of confident
    answers, and every row: file, model answer, confidence, final category and its source, reviewer, time."""
    check_api_key(request, request.app.state.settings)
    b = batch_or_404(request, batch_id)
    rows = workflow(request).store.export_rows(batch_id, workflow(request).names_ru())
    return {**b, "rows": rows}


@router.get("/{batch_id}/export", summary="A batch's final categories as CSV or XLSX",
            openapi_extra={"parameters": [API_KEY_PARAM]})  # fmt: skip
async def export_batch(request: Request, batch_id: str, format: str = Query("csv", pattern="^(csv|xlsx)$")):
    "Every row of the batch: file, final category (ru, en), source, model answer, confidence, reviewer, time."
    check_api_key(request, request.app.state.settings)
    return export_response(request, batch_id, format)
