"""JSON error responses a client can act on: `{"error": code, "detail": message, "request_id": ...}`.

Input problems keep their status (400, 401, 413, 415, 422); anything unexpected is a 500 that still answers JSON
with the request id, so a user's report can be matched with the log line. A client that hangs up before its upload
has arrived is logged and counted as 499 (nginx's "client closed request"), not as a server error with a traceback.
"""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fashioncat.photos import ServingError

from .logs import app_log


class RequestError(ServingError):
    "A request the API cannot use (missing field, bad JSON or base64, wrong content type, too many images)."

    def __init__(self, message: str, status: int = 400, code: str = "bad_request", headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "")


def error_response(request: Request, status: int, code: str, detail, headers: dict | None = None) -> JSONResponse:
    "The one shape of every error body."
    rid = request_id(request)
    log = getattr(request.state, "log", None)
    if log is not None:
        log["error"] = code
    body = {"error": code, "detail": detail, "request_id": rid}
    return JSONResponse(body, status_code=status, headers={**(headers or {}), "X-Request-ID": rid})


_HTTP_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError):
        return error_response(request, exc.status, exc.code, exc.message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return error_response(request, 422, "invalid_request", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error" if exc.status_code < 500 else "server_error")
        return error_response(request, exc.status_code, code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):  # nobody reads this body; the log and metrics do
        return error_response(request, 499, "client_closed_request", "the client closed the connection mid-upload")

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        app_log.error(
            "unhandled error", exc_info=exc, extra={"request_id": request_id(request), "path": request.url.path}
        )
        return error_response(
            request, 500, "server_error", "internal error; quote the request_id when reporting it", headers=None
        )
