"""The UI on `/ui` without making the API wait for gradio.

Importing gradio takes seconds, longer than loading the model. So `/ui` is mounted at once on a `UIMount`, which
answers 503 ("starting", `Retry-After: 1`) until the lifespan's background task has imported gradio and built the
Blocks in a worker thread (`app.ui.gradio_app`), then runs, on the event loop, the startup that `gr.mount_gradio_app`
would have run (the Gradio app's lifespan, its queue) and hands `/ui` to the Gradio app. If that fails, the API keeps
serving and `/ui` answers 503 with the reason, logged once. `/ready` reports the state as `ui`.
"""

import asyncio
import html
import time
from contextlib import AsyncExitStack
from typing import Literal

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.errors import error_response
from ..core.logs import app_log

UI_PATH = "/ui"
UIStatus = Literal["loading", "ready", "disabled", "failed"]
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_PAGE = """<!doctype html><html lang="ru"><head><meta charset="utf-8">{refresh}<title>fashioncat</title></head>
<body style="font-family: sans-serif; margin: 3em"><p>{text}</p></body></html>"""


class UIMount:
    "The ASGI app on `/ui`: 'starting' (or 'failed') answers until the Gradio app is ready, then the Gradio app."

    def __init__(self):
        self.status: UIStatus = "loading"
        self.reason = ""
        self.app: ASGIApp = Router([Route("/{path:path}", self._unavailable, methods=_METHODS)])

    @property
    def routes(self) -> list:
        return getattr(self.app, "routes", [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def ready(self, gradio_app: ASGIApp) -> None:
        self.app, self.status = gradio_app, "ready"

    def failed(self, reason: str) -> None:
        self.status, self.reason = "failed", reason

    async def _unavailable(self, request: Request) -> Response:
        if self.status == "failed":
            detail = f"the UI failed to start ({self.reason}); the API is unaffected, see the server log"
            text, headers = "Интерфейс не запустился: " + html.escape(self.reason), {}
        else:
            detail = "the UI is starting; retry in a second (the API is already serving)"
            text, headers = "Интерфейс запускается, страница обновится через секунду…", {"Retry-After": "1"}
        if "text/html" in request.headers.get("accept", ""):
            refresh = '<meta http-equiv="refresh" content="1">' if headers else ""
            return HTMLResponse(_PAGE.format(refresh=refresh, text=text), 503, headers=headers)
        return error_response(request, 503, f"ui_{self.status}", detail, headers)


def mount_ui_placeholder(app: FastAPI) -> UIMount:
    "Mount a `UIMount` on `/ui`; the lifespan's `start_ui` later hands it the Gradio app."
    mount = app.state.ui_mount = UIMount()
    app.mount(UI_PATH, mount)
    return mount


def ui_status(app: FastAPI) -> UIStatus:
    mount = getattr(app.state, "ui_mount", None)
    return "disabled" if mount is None else mount.status


def _build(app: FastAPI):
    from . import review as ui  # imports gradio: the slow part, in a worker thread

    return ui.gradio_app(app, UI_PATH)


async def start_ui(app: FastAPI, stack: AsyncExitStack) -> None:
    "Build the UI off the event loop, start it on the loop (its lifespan goes on `stack`) and serve it on /ui."
    mount: UIMount = app.state.ui_mount
    t0 = time.perf_counter()
    try:
        gradio_app, lifespan = await asyncio.to_thread(_build, app)
        await stack.enter_async_context(lifespan)  # Gradio's startup: its lifespan, queue and startup events
    except Exception as e:  # noqa: BLE001 - the API keeps serving; /ui and /ready say why
        mount.failed(f"{type(e).__name__}: {e}")
        app_log.error("UI failed to start; the API is unaffected", exc_info=e, extra={"path": UI_PATH})
        return
    mount.ready(gradio_app)
    app_log.info("UI ready", extra={"path": UI_PATH, "ui_s": round(time.perf_counter() - t0, 3)})
