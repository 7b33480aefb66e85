"""Categorisation as the API and the UI run it: guards and preprocessing per image, one timed inference per batch,
metrics, and the fields of the request's log line. Synchronous: callers run it in the threadpool."""

import time

import numpy as np

from fashioncat.serving import Engine, ServingError, error_dict, photo_view

from .metrics import Metrics


def categorise(
    engine: Engine, metrics: Metrics, items: list[tuple[str | None, bytes | Exception]], *, errors: str = "return"
) -> list[dict]:
    """One result per `(filename, data)` item, in order; with `errors='raise'` the first bad input raises its
    `ServingError`. Results carry `image` (bytes, width, height) and `view` (the 28x28 uint8 model input)."""
    out: list[dict | None] = []
    views: list[np.ndarray] = []
    meta: list[dict] = []
    for name, data in items:
        try:
            if isinstance(data, Exception):
                raise data
            view, (w, h) = photo_view(data, engine.max_bytes, engine.max_pixels)
            views.append(view)
            meta.append({"filename": name, "image": {"bytes": len(data), "width": w, "height": h}})
            out.append(None)
        except ServingError as e:
            if errors == "raise":
                raise
            out.append({"filename": name, **error_dict(e)})
    if views:
        t0 = time.perf_counter()
        probs = engine.predict(np.stack(views))
        metrics.inference_latency.observe(time.perf_counter() - t0)
        metrics.batch_size.observe(len(views))
        it = iter(zip(probs, views, meta))
        for i, r in enumerate(out):
            if r is None:
                p, v, m = next(it)
                out[i] = {**m, **engine.result(p), "view": v}
    metrics.observe_results(out)
    return out


def public(result: dict) -> dict:
    "A result without the in-memory view, ready for JSON."
    return {k: v for k, v in result.items() if k != "view"}
