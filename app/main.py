"""The fashioncat service: one process, one ONNX Runtime engine, the REST API and the merchandisers' UI on `/ui`.

    uvicorn app.main:app --host 127.0.0.1 --port 8000      # or: make serve

Settings come from `FASHIONCAT_*` environment variables (`app.core.config.Settings`).
"""

import asyncio
import contextlib
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

import fashioncat

from .api.routes import admin, batches, predict, system
from .core.admission import BUDGET
from .core.auth import check_ui_settings
from .core.config import Settings, SettingsError, load_settings
from .core.errors import install_error_handlers
from .core.logs import app_log, setup_logging
from .core.metrics import PROCESS_SAMPLE_S, Metrics
from .core.middleware import RequestContext
from .core.models import start_models
from .core.service import InlineBatcher
from .ui.feedback import open_store
from .ui.mount import mount_ui_placeholder, start_ui
from .ui.queue_routes import router as queue_router
from .ui.workflow import open_workflow


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Load and warm up the engine once, before the first request; open the feedback store. Then start the UI in the
    background: the API (and `/ready`) does not wait for gradio, and `/ui` answers 503 until the UI is up."""
    s: Settings = app.state.settings
    app.state.metrics.model_info.clear()
    metrics: Metrics = app.state.metrics
    async with AsyncExitStack() as stack:  # on shutdown: the UI's own lifespan first, then the task if still running
        # the served version (`current`'s, else the default model), its swaps and the shadow: app/core/models.py
        await start_models(app, stack)
        if app.state.ui_mount is not None:  # the corrections store is the UI's: API-only replicas need no data folder
            app.state.feedback, app.state.feedback_problem = open_store(Path(s.data_dir) / "feedback.sqlite")
            if app.state.feedback is None:
                app_log.error(
                    "the corrections store is unusable; the UI is off, the API serves", extra={"path": s.data_dir}
                )
                app.state.ui_mount.failed(app.state.feedback_problem)
            else:  # the batches, beside the corrections
                app.state.workflow = open_workflow(app, Path(s.data_dir) / "feedback.sqlite")
        if metrics.multiproc_dir is not None:  # several workers: publish this one's CPU and memory until it stops
            stack.callback(metrics.worker_exit)
            stack.push_async_callback(_cancel, asyncio.create_task(_sample_process(metrics)))
        if app.state.ui_mount is not None and app.state.feedback is not None:
            stack.push_async_callback(_cancel, asyncio.create_task(start_ui(app, stack)))
        yield
    app.state.engine = None


async def _sample_process(metrics: Metrics) -> None:
    while True:
        metrics.sample_process()
        await asyncio.sleep(PROCESS_SAMPLE_S)


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings | None = None, ui: bool = True) -> FastAPI:
    "The API (and, with `ui` and `settings.ui_enabled`, the Gradio UI on /ui), configured by `settings` or the environment."
    settings = settings or load_settings()
    setup_logging(settings.log_level)
    app = FastAPI(
        title="fashioncat",
        version=fashioncat.__version__,
        summary="Product photo -> one of the 10 Fashion-MNIST categories, with a calibrated confidence",
        lifespan=lifespan,
        # The service reports through Prometheus and JSON logs; FastAPI's native OpenTelemetry would otherwise ask the
        # (unconfigured) global providers on every request whether it is wanted.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # served by _offline_docs from packaged assets: FastAPI's own pages load them from a CDN
        redoc_url=None,
    )
    _offline_docs(app)
    app.state.settings = settings
    BUDGET.configure(settings.memory_budget_mb * 2**20, settings.admission_wait_s)  # one budget: the process's memory
    app.state.engine = app.state.shadow = None
    app.state.metrics = Metrics()
    app.state.batcher = InlineBatcher()  # small PNGs decoded on the event loop share their inference (service.py)
    app.state.ui_mount = app.state.feedback = app.state.workflow = None
    app.state.feedback_problem = ""
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(system.router)
    app.include_router(batches.router)
    app.include_router(admin.router)
    if ui and settings.ui_enabled and app.state.metrics.multiproc_dir is not None:
        app_log.warning(
            "the UI is not mounted: this is one of several workers (PROMETHEUS_MULTIPROC_DIR is set), and the UI keeps "
            "per-process state; serve it from a one-worker instance, or set FASHIONCAT_UI_ENABLED=false to silence this"
        )
    elif ui and settings.ui_enabled:  # FASHIONCAT_UI_ENABLED=false: API only
        check_ui_settings(settings)  # a data folder and accounts (or auth explicitly off), before anything serves
        if settings.ui_auth == "off":
            app_log.warning("the UI has no login (FASHIONCAT_UI_AUTH=off): serve it on 127.0.0.1 only")
        app.include_router(queue_router)  # /ui/review/...: before the /ui mount, which would take them
        mount_ui_placeholder(app)  # the Gradio app replaces it once the lifespan has built it (app/ui/mount.py)
    app.add_middleware(RequestContext, metrics=app.state.metrics)
    return app


DOCS_ASSETS = "/docs-assets"


def _offline_docs(app: FastAPI) -> None:
    "/docs (Swagger UI) and /redoc with their JavaScript and CSS served from the fastapi-offline package: no internet."
    app.mount(DOCS_ASSETS, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that serves the app under a prefix
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=title,
            oauth2_redirect_url=root + app.swagger_ui_oauth2_redirect_url,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + app.openapi_url,
            title=title,
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


try:
    app = create_app()
except SettingsError as e:  # one line naming the variable, no traceback, a non-zero exit (uvicorn stops)
    print(f"fashioncat: invalid settings: {e}", file=sys.stderr)
    raise SystemExit(2) from None
