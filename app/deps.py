"""Dependencies shared by the routers: the settings, the engine loaded by the lifespan, the optional API key.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the threadpool, and three thread hops per
request cost about 1 ms of CPU, five times the model (measured at 100 requests/s with bench/load_test.py's fixed-rate
phase). None of them blocks.
"""

import hmac

from fastapi import Header, Request

from fashioncat.serving import Engine, Settings

from .errors import RequestError


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise RequestError("the model is not loaded yet; retry when /ready answers 200", 503, "not_ready")
    return engine


async def require_api_key(
    request: Request, x_api_key: str | None = Header(None, description="required when FASHIONCAT_API_KEYS is set")
):
    "When API keys are configured, the `X-API-Key` header must carry one of them."
    keys = request.app.state.settings.api_key_set
    if not keys:
        return
    given = (x_api_key or "").encode()
    if not any(hmac.compare_digest(given, k.encode()) for k in keys):
        msg = "missing X-API-Key header" if not x_api_key else "invalid API key"
        raise RequestError(
            f"{msg}; send a valid key in the X-API-Key header", 401, "unauthorized", {"WWW-Authenticate": "API-Key"}
        )
