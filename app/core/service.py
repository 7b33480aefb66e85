"""Categorisation as the API and the UI run it: guards and preprocessing per image, one timed inference per batch,
metrics, and the fields of the request's log line. Synchronous: callers run it in the threadpool, except for a small
image (`inline_ok`), which takes less CPU than the hop to a worker thread and back: `InlineBatcher` decodes it on the
event loop and infers it with the others decoded meanwhile."""

import asyncio
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


def views_of(
    engine: Engine, metrics: Metrics, items: list[tuple[str | None, bytes | Exception]], *, errors: str = "return"
) -> tuple[list[dict | None], list[np.ndarray], list[dict]]:
    """The guards and the view of each `(filename, data)` item: `out` (None where a view was made, else the item's
    error entry; with `errors='raise'` the first bad input raises its `ServingError`), the views, and their fields."""
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
    return out, views, meta


def infer(
    engine: Engine, metrics: Metrics, views: list[np.ndarray], meta: list[dict], shadow: Shadow | None = None
) -> list[dict]:
    """One timed inference of the views, and a result per view (`meta`'s fields, the answer, and `view`). With a
    `shadow`, the batch may also be queued for the shadow model (app/core/shadow.py), which never delays the answer."""
    t0 = time.perf_counter()
    batch = np.stack(views)
    probs, dists = engine.predict_scored(batch)  # the not-a-product distance comes from the same run
    metrics.inference_latency.observe(time.perf_counter() - t0)
    if shadow is not None:
        shadow.offer(batch, probs.argmax(1))
    metrics.batch_size.observe(len(views))
    ds = [None] * len(views) if dists is None else dists
    return [{**m, **engine.result(p, v, d), "view": v} for p, v, m, d in zip(probs, views, meta, ds)]


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
    out, views, meta = views_of(engine, metrics, items, errors=errors)
    if views:
        it = iter(infer(engine, metrics, views, meta, shadow))
        out = [next(it) if r is None else r for r in out]
    metrics.observe_results(out)
    return out


INLINE_MAX_BATCH = 32  # views inferred in one call at most, however many wait


class InlineBatcher:
    """Dynamic batching of the inline path, as model servers do under load. A small PNG is decoded on the event loop
    (`views_of`) and its inference queued; the queue is run at the loop's next turn, so the images decoded meanwhile
    (under load, the other requests that arrived together) share one ONNX Runtime call, whose fixed cost (a call, and
    the not-a-product graph's few dozen small nodes) dominates a single 28x28 image. Alone, a request waits for
    nothing but that turn. Each model in use (a swap may leave two) gets its own calls; a failed call fails only its
    own requests, a cancelled request is not inferred."""

    def __init__(self, max_batch: int = INLINE_MAX_BATCH):
        self.max_batch = max_batch
        self._queue: list[tuple] = []

    async def categorise(
        self, engine: Engine, metrics: Metrics, item: tuple[str | None, bytes], shadow: Shadow | None = None
    ) -> dict:
        "The result of one small image, as `categorise(..., errors='raise')` gives it."
        _, views, meta = views_of(engine, metrics, [item], errors="raise")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not self._queue:
            loop.call_soon(self._run)
        self._queue.append(((engine, metrics, shadow), views[0], meta[0], done))
        return await done

    def _run(self) -> None:
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        if self._queue:
            asyncio.get_running_loop().call_soon(self._run)
        live = [q for q in batch if not q[3].done()]  # a cancelled request (its client gone) is not inferred
        for key in dict.fromkeys(q[0] for q in live):
            group = [q for q in live if q[0] == key]
            engine, metrics, shadow = key
            try:
                results = infer(engine, metrics, [q[1] for q in group], [q[2] for q in group], shadow)
            except Exception as e:  # noqa: BLE001 - handed on: each of its requests raises it, as it did alone (a 500)
                for q in group:
                    q[3].set_exception(e)
                continue
            metrics.observe_results(results)
            for q, r in zip(group, results):
                q[3].set_result(r)


def public(result: dict) -> dict:
    "A result without the in-memory view, ready for JSON."
    return {k: v for k, v in result.items() if k != "view"}
