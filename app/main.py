"""The fashioncat service: one process, one ONNX Runtime engine, the REST API and the merchandisers' UI on `/ui`.

    uvicorn app.main:app --host 127.0.0.1 --port 8000      # or: make serve

Settings come from `FASHIONCAT_*` environment variables (`app.core.config.Settings`).
"""

import asyncio
import contextlib
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

import fashioncat
from fashioncat.serving import Engine

from .core.config import Settings

from .core.errors import install_error_handlers
from .ui.feedback import FeedbackStore
from .core.logs import app_log, setup_logging
from .core.metrics import PROCESS_SAMPLE_S, Metrics
from .core.middleware import RequestContext
from .api.routes import predict, system
from .ui.mount import mount_ui_placeholder, start_ui


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Load and warm up the engine once, before the first request; open the feedback store. Then start the UI in the
    background: the API (and `/ready`) does not wait for gradio, and `/ui` answers 503 until the UI is up."""
    s: Settings = app.state.settings
    t0 = time.perf_counter()
    engine = await run_in_threadpool(Engine.from_settings, s)
    app.state.engine = engine
    app.state.feedback = FeedbackStore(Path(s.data_dir) / "feedback.sqlite")
    app.state.metrics.model_info.clear()
    app.state.metrics.model_info.labels(engine.info.version, engine.info.commit, engine.info.architecture).set(1)
    loaded = {
        "model": Path(engine.info.path).name,
        "version": engine.info.version,
        "review_threshold": engine.review_threshold,
    }
    app_log.info("model loaded", extra={**loaded, "load_s": round(time.perf_counter() - t0, 3)})
    metrics: Metrics = app.state.metrics
    async with AsyncExitStack() as stack:  # on shutdown: the UI's own lifespan first, then the task if still running
        if metrics.multiproc_dir is not None:  # several workers: publish this one's CPU and memory until it stops
            stack.callback(metrics.worker_exit)
            stack.push_async_callback(_cancel, asyncio.create_task(_sample_process(metrics)))
        if app.state.ui_mount is not None:
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
    settings = settings or Settings()
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
    app.state.engine = None
    app.state.metrics = Metrics()
    app.state.ui_mount = None
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(system.router)
    if ui and settings.ui_enabled and app.state.metrics.multiproc_dir is not None:
        app_log.warning(
            "the UI is not mounted: this is one of several workers (PROMETHEUS_MULTIPROC_DIR is set), and the UI keeps "
            "per-process state; serve it from a one-worker instance, or set FASHIONCAT_UI_ENABLED=false to silence this"
        )
    elif ui and settings.ui_enabled:  # FASHIONCAT_UI_ENABLED=false: API only
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


app = create_app()
