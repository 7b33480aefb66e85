"""`GET /health`, `/ready`, `/model` and `/metrics`: for load balancers, clients and Prometheus."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ...ui.mount import ui_status

router = APIRouter(tags=["system"])


@router.head("/health", include_in_schema=False)  # load balancers' health checks often use HEAD
@router.get("/health", summary="The process is alive")
async def health():
    return {"status": "ok"}


@router.head("/ready", include_in_schema=False)
@router.get("/ready", summary="The model is loaded and warmed up", responses={503: {"description": "not ready yet"}})
async def ready(request: Request):
    """200 once the model is loaded and warmed; `ui` is the UI's state: loading, ready, disabled or failed; with the UI
    on, `store` is "ok" or why its corrections database cannot be used (the API serves either way)."""
    engine = getattr(request.app.state, "engine", None)
    ui = ui_status(request.app)
    if engine is None or not getattr(engine, "ready", False):
        return JSONResponse({"ready": False, "ui": ui, "request_id": request.state.request_id}, status_code=503)
    body = {"ready": True, "model_version": engine.info.version, "ui": ui}
    if ui != "disabled":
        body["store"] = request.app.state.feedback_problem or ("ok" if request.app.state.feedback else "opening")
    return body


@router.get("/model", summary="The served model: version, classes, review threshold and metrics")
async def model(request: Request):
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return JSONResponse(
            {"error": "not_ready", "detail": "the model is not loaded yet", "request_id": request.state.request_id}, 503
        )
    info = engine.info.as_dict()
    info["file"] = info.pop("path").rsplit("/", 1)[-1]
    s = request.app.state.settings
    return {
        **info,
        "categories": [
            {"index": i, "category": en, "category_ru": ru}
            for i, (en, ru) in enumerate(zip(engine.classes, engine.classes_ru))
        ],
        "review_threshold_effective": engine.review_threshold,
        "top_k": engine.top_k,
        "limits": {
            "max_bytes": s.max_bytes,
            "max_pixels": s.max_pixels,
            "max_batch": s.max_batch,
            "max_batch_bytes": s.max_batch_bytes,
        },
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request):
    data, ctype = request.app.state.metrics.render()
    return Response(data, media_type=ctype)
