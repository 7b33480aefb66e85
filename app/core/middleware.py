"""Per-request context: a request id (echoed in `X-Request-ID`), the JSON access log line and the HTTP metrics.

A pure ASGI middleware rather than `BaseHTTPMiddleware`: it adds no task per request and sees the status of every
response, including those of the mounted Gradio app.
"""

import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import access_log
from .metrics import Metrics

_GOOD_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def route_label(scope: Scope, root_path: str = "") -> str:
    """The route template that served the request (`/predict`, `/ui/gradio_api/queue/join`, ...), never the raw path.
    Inside a mounted app (the UI) the mount's path is prefixed; unmatched paths share one label."""
    route = scope.get("route")
    if route is None and scope.get("endpoint") is not None:  # a plain Starlette route (/docs, /openapi.json): FastAPI
        routes = getattr(scope.get("app"), "routes", ())  # names only its endpoint
        route = next((r for r in routes if getattr(r, "endpoint", None) is scope["endpoint"]), None)
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    return scope.get("root_path", "")[len(root_path) :] + path


class RequestContext:
    "Assign a request id, time the request, log one JSON line and count it."

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _GOOD_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"], state["log"] = rid, {}
        status, t0, root = 500, time.perf_counter(), scope.get("root_path", "")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = 500
            raise
        finally:
            dt = time.perf_counter() - t0
            route = route_label(scope, root)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.request_latency.labels(route).observe(dt)
            access_log.info(
                "request",
                extra={
                    "request_id": rid,
                    "method": scope["method"],
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(dt * 1000, 2),
                    **state["log"],
                },
            )
