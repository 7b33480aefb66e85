"""Categorisation as the API and the UI run it: guards and preprocessing per image, one timed inference per batch,
metrics, and the fields of the request's log line. Synchronous: callers run it in the threadpool, except for a small
image (`inline_ok`), which takes less CPU than the hop to a worker thread and back."""

import struct
import time

import numpy as np

from fashioncat.photos import ServingError, photo_view
from fashioncat.serving import Engine, error_dict

from .admission import BUDGET, Overloaded, decode_cost
from .metrics import Metrics
from .shadow import Shadow

INLINE_MAX_BYTES = 32 * 1024  # a PNG at most this large ...
INLINE_MAX_PIXELS = 64 * 64  # ... whose header says at most this many pixels takes under 1 ms (<= 0.45 ms + the model)
_PNG = b"\x89PNG\r\n\x1a\n"


def inline_ok(data: bytes) -> bool:
    """Whether the event loop may categorise `data` itself: a small PNG (a Fashion-MNIST-sized one takes ~0.4 ms of
    CPU, the threadpool hop ~0.2 ms more). Other formats, whose decoding cost the header does not bound as cheaply,
    go to the threadpool."""
    if len(data) > INLINE_MAX_BYTES or not data.startswith(_PNG) or data[12:16] != b"IHDR" or len(data) < 24:
        return False
    w, h = struct.unpack(">II", data[16:24])
    return w * h <= INLINE_MAX_PIXELS


def categorise(
    engine: Engine,
    metrics: Metrics,
    items: list[tuple[str | None, bytes | Exception]],
    *,
    errors: str = "return",
    shadow: Shadow | None = None,
) -> list[dict]:
    """One result per `(filename, data)` item, in order; with `errors='raise'` the first bad input raises its
    `ServingError`. Results carry `image` (bytes, width, height) and `view` (the 28x28 uint8 model input). With a
    `shadow`, the batch may also be queued for the shadow model (app/core/shadow.py), which never delays the answer."""
    out: list[dict | None] = []
    views: list[np.ndarray] = []
    meta: list[dict] = []
    for name, data in items:
        try:
            if isinstance(data, Exception):
                raise data
            cost = 0 if inline_ok(data) else decode_cost(data, engine.max_pixels)
            try:
                with BUDGET.held(cost, "decoding this image"):  # the memory budget first, then the decode
                    view, (w, h) = photo_view(data, engine.max_bytes, engine.max_pixels)
            except Overloaded:
                metrics.overloaded.labels("decode").inc()
                raise
            views.append(view)
            meta.append({"filename": name, "image": {"bytes": len(data), "width": w, "height": h}})
            out.append(None)
        except ServingError as e:
            if errors == "raise":
                raise
            out.append({"filename": name, **error_dict(e)})
    if views:
        t0 = time.perf_counter()
        batch = np.stack(views)
        probs, dists = engine.predict_scored(batch)  # the not-a-product distance comes from the same run
        metrics.inference_latency.observe(time.perf_counter() - t0)
        if shadow is not None:
            shadow.offer(batch, probs.argmax(1))
        metrics.batch_size.observe(len(views))
        it = iter(zip(probs, views, meta, [None] * len(views) if dists is None else dists))
        for i, r in enumerate(out):
            if r is None:
                p, v, m, d = next(it)
                out[i] = {**m, **engine.result(p, v, d), "view": v}
    metrics.observe_results(out)
    return out


def public(result: dict) -> dict:
    "A result without the in-memory view, ready for JSON."
    return {k: v for k, v in result.items() if k != "view"}
