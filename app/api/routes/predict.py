"""`POST /predict` and `POST /predict/batch`: categorise product photos."""

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ...core.admission import BUDGET, Overloaded, body_cost
from ...core.service import categorise, inline_ok, public
from ..deps import API_KEY_PARAM, checked
from ..schemas import BatchResponse, ErrorResponse, PredictResponse
from ..uploads import media_type, read_many, read_one, single_limit

_ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 413, 415, 422, 503)}
_IMAGE = {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP, BMP, GIF (first frame) or TIFF"}
_B64 = {"type": "string", "description": "the image file, base64 (a data: URL is accepted)"}


def _body(multipart: dict, json_: dict) -> dict:
    return {
        "parameters": [API_KEY_PARAM],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": multipart}},
                "application/json": {"schema": {"type": "object", "properties": json_}},
            },
        },
    }


async def _admit(request: Request, limit: int) -> int:
    "Take the body's estimated bytes from the memory budget before reading it (503 + Retry-After if they do not come)."
    cl = request.headers.get("content-length", "")
    n = int(cl) if cl.isdigit() else None
    cost = 0 if n is not None and n > limit else body_cost(n, limit, media_type(request) == "application/json")
    try:
        return await BUDGET.take_async(cost, "the request body")
    except Overloaded:
        request.app.state.metrics.overloaded.labels("body").inc()
        raise


# Every route here starts with `checked(request)` (the API key, then the engine): see app/api/deps.py for why it is not
# a router dependency. tests/api/test_predict.py checks that each route refuses a request without a key when keys are set.
router = APIRouter(prefix="/predict", tags=["predict"], responses=_ERRORS)


@router.post(
    "",
    response_model=PredictResponse,
    summary="Categorise one product photo",
    openapi_extra=_body({"file": _IMAGE}, {"image_base64": _B64, "filename": {"type": "string"}}),
)
async def predict(request: Request):
    """A multipart `file`, or JSON `{"image_base64": ...}`. Returns the category (English and Russian), its
    confidence, the top-k, and `needs_review` when the confidence is below the model's review threshold."""
    engine, s = checked(request)
    held = await _admit(request, single_limit(s))
    try:
        item = await read_one(request, s)
        metrics, shadow = request.app.state.metrics, request.app.state.shadow
        if inline_ok(item[1]):  # a small PNG: cheaper here than the hop to a worker thread, and batched with others
            r = await request.app.state.batcher.categorise(engine, metrics, item, shadow)
        else:
            (r,) = await run_in_threadpool(categorise, engine, metrics, [item], errors="raise", shadow=shadow)
    finally:
        BUDGET.release(held)
    rid = request.state.request_id
    request.state.log.update(
        category=r["category"], confidence=r["confidence"], needs_review=r["needs_review"], image=r["image"]
    )
    return {**public(r), "model_version": engine.info.version, "request_id": rid}


@router.post(
    "/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    summary="Categorise many product photos in one inference batch",
    openapi_extra=_body(
        {"files": {"type": "array", "items": _IMAGE}},
        {
            "images": {
                "type": "array",
                "items": {"type": "object", "properties": {"image_base64": _B64, "filename": {"type": "string"}}},
            }
        },
    ),
)
async def predict_batch(request: Request):
    """Up to `FASHIONCAT_MAX_BATCH` images as multipart `files` fields, or JSON `{"images": [...]}`. A bad image
    gets its own error entry (`error`, `status`, `detail`) and does not fail the others."""
    engine, s = checked(request)
    held = await _admit(request, s.max_batch_bytes)
    try:
        items = await read_many(request, s)
        kept = sum(len(d) for _, d in items if isinstance(d, bytes))  # what the batch holds now that it is parsed
        BUDGET.release(held - kept)
        held = kept
        results = await run_in_threadpool(
            categorise, engine, request.app.state.metrics, items, shadow=request.app.state.shadow
        )
    finally:
        BUDGET.release(held)
    out = [{"index": i, **public(r)} for i, r in enumerate(results)]
    n_err = sum("error" in r for r in out)
    request.state.log.update(batch_size=len(out), errors=n_err)
    rid = request.state.request_id
    return {"model_version": engine.info.version, "request_id": rid, "count": len(out), "errors": n_err, "results": out}
