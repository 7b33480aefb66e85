"""`/admin/*`: switch the served model version and the shadow version without a restart (app/core/models.py).

Only with `FASHIONCAT_ADMIN_KEYS` set, and only with one of those keys in `X-Admin-Key` (the API keys do not open it):
without admin keys every admin route answers 404, as if it did not exist. Each call acts on the worker that answers
it; with several workers, point `current` at the version and let `FASHIONCAT_MODEL_POLL_S` carry it to all of them
(docs/serving.md, "Model updates").
"""

import hmac

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from fashioncat.versions import ADMIN_KEY_HEADER, VersionError, current_version, list_versions

from ...core.errors import RequestError
from ...core.models import ModelHolder
from ..schemas import ErrorResponse

router = APIRouter(  # not in the public OpenAPI schema: an operator's surface, documented in docs/serving.md
    prefix="/admin",
    tags=["admin"],
    include_in_schema=False,
    responses={s: {"model": ErrorResponse} for s in (401, 403, 404, 409, 422)},
)


def admin(request: Request) -> ModelHolder:
    "The model holder, once the admin key is checked: 404 when admin keys are off, 401 without a key, 403 for a wrong one."
    keys = request.app.state.settings.admin_key_set
    if not keys:
        raise RequestError("not found (the admin API is off: set FASHIONCAT_ADMIN_KEYS to enable it)", 404, "not_found")
    given = request.headers.get(ADMIN_KEY_HEADER)
    if not given:
        raise RequestError(f"missing {ADMIN_KEY_HEADER} header; send an admin key", 401, "unauthorized")
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise RequestError("invalid admin key", 403, "forbidden")
    holder = getattr(request.app.state, "models", None)
    if holder is None:
        raise RequestError("the model is not loaded yet; retry when /ready answers 200", 503, "not_ready")
    return holder


@router.get("/models", summary="The model versions, the one served, the one `current` names, and the shadow")
async def models(request: Request):
    holder = admin(request)
    shadow = request.app.state.shadow
    try:
        current = current_version(holder.root)
    except VersionError as e:
        current = f"invalid: {e}"
    return {
        "serving": request.app.state.engine.info.version,
        "current": current,
        "versions": list_versions(holder.root),
        "models_dir": str(holder.root),
        "shadow": shadow.as_dict() if shadow else None,
    }


@router.post("/models/{version}/activate", summary="Load, warm and swap in a version (this worker only)")
async def activate(version: str, request: Request):
    "The old model keeps serving when the version cannot be loaded (404 unknown, 409 refused). `current` is unchanged."
    holder = admin(request)
    return await run_in_threadpool(holder.activate, version, "admin activate")


@router.post("/reload", summary="Load, warm and swap in the version `current` names (this worker only)")
async def reload(request: Request):
    holder = admin(request)
    return await run_in_threadpool(holder.reload, "admin reload")


class ShadowRequest(BaseModel):
    share: float | None = Field(
        None, ge=0, le=1, description="share of /predict requests; default FASHIONCAT_SHADOW_SHARE"
    )


@router.put("/shadow/{version}", summary="Run a version in shadow on a share of the traffic (this worker only)")
async def shadow_on(version: str, request: Request, body: ShadowRequest | None = None):
    holder = admin(request)
    return {"shadow": await run_in_threadpool(holder.set_shadow, version, body.share if body else None)}


@router.delete("/shadow", summary="Stop the shadow version (this worker only)")
async def shadow_off(request: Request):
    holder = admin(request)
    return {"shadow": await run_in_threadpool(holder.set_shadow, None)}
