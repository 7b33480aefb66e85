"""What the /predict routes check before they read an upload: the API key, when keys are configured, then that the
model is loaded.

Plain functions that the endpoints call first, not FastAPI dependencies: resolving these three as dependencies
(and, before that, running them in the threadpool as plain `def`s) was the largest cost of the app's own code
around the model, about a quarter of its instructions per request (counted under valgrind with the model stubbed
out). The header is still documented in the OpenAPI schema (`API_KEY_PARAM`), as `Header()` documented it.
"""

import hmac

from fastapi import Request

from fashioncat.serving import Engine

from ..core.config import Settings
from ..core.errors import RequestError

API_KEY_PARAM = {  # the OpenAPI parameter FastAPI wrote for `x_api_key: str | None = Header(None, description=...)`
    "name": "x-api-key",
    "in": "header",
    "required": False,
    "schema": {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": "required when FASHIONCAT_API_KEYS is set",
        "title": "X-Api-Key",
    },
    "description": "required when FASHIONCAT_API_KEYS is set",
}


def check_api_key(request: Request, s: Settings) -> None:
    "When API keys are configured, the `X-API-Key` header must carry one of them."
    keys = s.api_key_set
    if not keys:
        return
    x_api_key = request.headers.get("x-api-key")
    given = (x_api_key or "").encode()
    if not any(hmac.compare_digest(given, k.encode()) for k in keys):
        msg = "missing X-API-Key header" if not x_api_key else "invalid API key"
        raise RequestError(
            f"{msg}; send a valid key in the X-API-Key header", 401, "unauthorized", {"WWW-Authenticate": "API-Key"}
        )


def loaded_engine(request: Request) -> Engine:
    "The engine the lifespan loaded; 503 until it has."
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise RequestError("the model is not loaded yet; retry when /ready answers 200", 503, "not_ready")
    return engine


def checked(request: Request) -> tuple[Engine, Settings]:
    "The API key checked, then the engine and the settings: what every /predict route does first."
    s: Settings = request.app.state.settings
    check_api_key(request, s)
    return loaded_engine(request), s
