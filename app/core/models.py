"""Which model version the service serves, and swapping it without a restart.

`app.state.engine` is the one reference the routes and the UI read, once per request: a swap loads and warms the new
version off to the side, then replaces that reference in one assignment. A request in flight keeps the engine object
it took, so it finishes on the old model; the old engine is freed when the last of them is done. A version that fails
to load (missing or corrupt file, another interface, other classes) is never swapped in: the old one keeps serving.

Triggers: `POST /admin/models/{version}/activate` and `POST /admin/reload` (app/api/routes/admin.py), SIGHUP to a
one-process server, and, with `FASHIONCAT_MODEL_POLL_S`, each worker watching the `current` file (fashioncat.versions).
"""

import asyncio
import contextlib
import os
import signal
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from fashioncat.serving import Engine
from fashioncat.versions import (
    CURRENT,
    VersionError,
    check_name,
    current_version,
    model_file,
    models_root,
    version_sha256,
)

from .config import Settings
from .errors import RequestError
from .logs import app_log
from .metrics import Metrics
from .shadow import Shadow

WARMUP_BATCHES = (1, 4, 16, 1)  # inferences a new version runs before it is swapped in (ONNX Runtime sizes buffers)
# A load runs at the requests' CPU priority, not lower: it holds the GIL for much of its time, and on a busy machine a
# low-priority thread holding the GIL stalls the event loop behind it (priority inversion, seen in bench/swap_load.py).


def _warmed(engine: Engine) -> Engine:
    for n in WARMUP_BATCHES:
        engine.predict(np.zeros((n, 28, 28), np.uint8))
    return engine


def version_file(root: Path, version: str) -> Path:
    "The model file of `version` under `root`: 422 for a malformed name, 404 for a version the folder lacks."
    try:
        check_name(version)
    except VersionError as e:
        raise RequestError(str(e), 422, "invalid_version") from None
    try:
        return model_file(root, version)
    except VersionError as e:
        raise RequestError(str(e), 404, "version_not_found") from None


class ModelHolder:
    "The served version of one app: loads, checks and warms a version, then swaps it in."

    def __init__(self, app: FastAPI):
        self.app = app
        self.s: Settings = app.state.settings
        self.root = models_root(self.s.resolved_model_path(), self.s.models_dir or "")
        self.version: str | None = None  # the served version (its folder's name); None: the default model
        self._lock = threading.Lock()  # one load at a time: two swaps never interleave
        self._seen: tuple | None = None  # `current`'s ((inode, mtime, size), text) when last read

    def load(self, version: str | None) -> Engine:
        "A warmed engine for `version` (None: the default model), checked against the served one; nothing is swapped."
        s, old = self.s, self.app.state.engine
        path = s.resolved_model_path() if version is None else version_file(self.root, version)
        name = version or "the default model"
        try:
            engine = _warmed(Engine(path, s.threads, s.top_k, s.review_threshold, s.max_bytes, s.max_pixels))
        except Exception as e:  # noqa: BLE001 - ModelError, or ONNX Runtime refusing the warm-up batches
            raise RequestError(f"{name} was not loaded, the served model is unchanged: {e}", 409, "model_rejected")
        try:
            want = version_sha256(self.root, version) if version is not None else None
        except VersionError as e:
            raise RequestError(f"{name} was not loaded, the served model is unchanged: {e}", 409, "model_rejected")
        if want and want != engine.info.sha256:
            raise RequestError(
                f"{name} was not loaded, the served model is unchanged: {path} has sha256 {engine.info.sha256}, its "
                f"version.json says {want} (a partial copy, or a changed file)",
                409,
                "model_rejected",
            )
        if old is not None and engine.classes != old.classes:
            raise RequestError(
                f"{name} was not loaded, the served model is unchanged: its classes {engine.classes} differ from the "
                f"served model's {old.classes}",
                409,
                "model_rejected",
            )
        if version is not None:  # the folder's name is the version the registry and the operators know
            engine.info.version = version
        return engine

    def activate(self, version: str | None, reason: str) -> dict:
        "Load `version` (None: the default model) and swap it in; the served model is unchanged when that fails."
        with self._lock:
            t0, old = time.perf_counter(), self.app.state.engine
            metrics: Metrics = self.app.state.metrics
            try:
                engine = self.load(version)
            except RequestError as e:
                metrics.model_swaps.labels("failed").inc()
                app_log.error("model swap refused", extra={"version": version, "reason": reason, "detail": e.message})
                raise
            self.app.state.engine = engine  # the swap; requests in flight keep the engine they took
            self.version = version
            if old is not None:  # "max" across workers in multiprocess mode: a series at 0 is a version no one serves
                metrics.model_info.labels(old.info.version, old.info.commit, old.info.architecture).set(0)
            metrics.model_info.labels(engine.info.version, engine.info.commit, engine.info.architecture).set(1)
            if old is not None:
                metrics.model_swaps.labels("ok").inc()
            out = {
                "version": engine.info.version,
                "previous": old.info.version if old is not None else None,
                "file": Path(engine.info.path).name,
                "sha256": engine.info.sha256,
                "load_s": round(time.perf_counter() - t0, 3),
                "review_threshold": engine.review_threshold,
                "pid": os.getpid(),
            }
            app_log.info("model swapped in" if old else "model loaded", extra={**out, "reason": reason})
            return out

    def set_shadow(self, version: str | None, share: float | None = None) -> dict | None:
        "Run `version` in shadow on a `share` of the traffic (default: the setting); None stops the shadow."
        with self._lock:
            shadow = None
            if version is not None:
                engine = self.load(version)  # the checks of a swap: a shadow the service could not serve is refused
                share = self.s.shadow_share if share is None else share
                shadow = Shadow(engine, version, share, self.app.state.metrics, self.s.shadow_queue)
            old, self.app.state.shadow = getattr(self.app.state, "shadow", None), shadow
            if old is not None:
                old.close()
            if old is not None or shadow is not None:
                app_log.info("shadow set", extra={"version": version, "share": share})
            return shadow.as_dict() if shadow else None

    def _current(self) -> tuple:
        f = self.root / CURRENT
        try:
            st = f.stat()
            return (st.st_ino, st.st_mtime_ns, st.st_size), f.read_text().strip()
        except FileNotFoundError:
            return None, None

    def reload(self, reason: str) -> dict:
        "Serve what `current` names (the default model when there is no `current` file)."
        self._seen = self._current()
        try:
            version = current_version(self.root)
        except VersionError as e:
            raise RequestError(f"{self.root / CURRENT}: {e}", 409, "model_rejected") from None
        return self.activate(version, reason)

    def current_changed(self) -> bool:
        "Whether `current` names another version than when it was last read (a cheap stat when it has not changed)."
        seen = self._seen
        now = self._current()
        if seen is not None and now[0] == seen[0]:
            return False
        self._seen = now
        return seen is None or now[1] != seen[1]


async def _watch(holder: ModelHolder, every_s: float) -> None:
    "Poll `current` and swap when it names another version; a failed swap is logged and the old model kept."
    while True:
        await asyncio.sleep(every_s)
        if holder.current_changed():
            with contextlib.suppress(RequestError):  # activate() logged it; the next change of `current` retries
                await run_in_threadpool(holder.reload, "current changed")


async def _on_sighup(holder: ModelHolder) -> None:
    with contextlib.suppress(RequestError):  # logged by activate(); the old model keeps serving
        await run_in_threadpool(holder.reload, "SIGHUP")


async def start_models(app: FastAPI, stack: AsyncExitStack) -> ModelHolder:
    """Load what `current` names (else the default model) onto `app.state.engine`, then: the `current` watcher when
    `model_poll_s` is set, and SIGHUP -> reload when the server runs its event loop in the main thread."""
    holder = app.state.models = ModelHolder(app)
    try:
        await run_in_threadpool(holder.reload, "startup")
    except RequestError as e:  # a service that cannot serve what `current` names does not start
        raise RuntimeError(f"no model to serve: {e.message}") from None
    app.state.shadow = None
    stack.push_async_callback(run_in_threadpool, holder.set_shadow, None)
    if holder.s.shadow_version:
        try:
            await run_in_threadpool(holder.set_shadow, holder.s.shadow_version)
        except RequestError:  # activate's checks refused it (and logged why): serve without the shadow
            app_log.error("FASHIONCAT_SHADOW_VERSION not started", extra={"version": holder.s.shadow_version})
    if holder.s.model_poll_s > 0:
        task = asyncio.create_task(_watch(holder, holder.s.model_poll_s))
        stack.push_async_callback(_cancel, task)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_on_sighup(holder)))
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
    except (
        AttributeError,
        NotImplementedError,
        RuntimeError,
        ValueError,
    ):  # no SIGHUP (Windows), or not the main thread
        pass
    return holder


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
