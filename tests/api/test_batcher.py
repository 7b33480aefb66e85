"""`InlineBatcher`: small PNGs decoded on the event loop share one inference, and each request still gets its own
answer, its own error, or nothing at all when it was cancelled."""

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from app.core.config import Settings
from app.core.metrics import Metrics
from app.core.service import InlineBatcher, categorise
from app.main import create_app
from fashioncat.serving import Engine


class Counting:
    "An engine that records the size of each inference batch."

    def __init__(self, engine: Engine, fail: bool = False):
        self._e, self.calls, self.fail = engine, [], fail

    def __getattr__(self, k):
        return getattr(self._e, k)

    def predict_scored(self, x):
        self.calls.append(len(x))
        if self.fail:
            raise RuntimeError("the model failed")
        return self._e.predict_scored(x)


def png(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


@pytest.fixture(scope="module")
def engine(model_path):
    return Engine(model_path)


@pytest.fixture(scope="module")
def items(test_set):
    x, _ = test_set
    return [(f"{i}.png", png(x[i])) for i in range(40)]


def run(coros):
    async def main():
        return await asyncio.gather(*coros, return_exceptions=True)

    return asyncio.run(main())


def same(r: dict, alone: dict):
    assert r["filename"] == alone["filename"] and r["category"] == alone["category"]
    assert r["confidence"] == pytest.approx(alone["confidence"], abs=1e-5)
    assert r["product_score"] == pytest.approx(alone["product_score"], abs=1e-4)
    assert np.array_equal(r["view"], alone["view"])


def test_together_one_inference_each_its_own_answer(engine, items):
    e, b, m = Counting(engine), InlineBatcher(), Metrics()
    out = run([b.categorise(e, m, it) for it in items[:5]])
    assert e.calls == [5]  # decoded together: one call
    for r, it in zip(out, items[:5]):
        same(r, categorise(engine, Metrics(), [it], errors="raise")[0])
    assert run([b.categorise(e, m, items[5])])[0]["filename"] == "5.png" and e.calls == [5, 1]  # alone: a batch of one


def test_at_most_max_batch_a_call(engine, items):
    e, b, m = Counting(engine), InlineBatcher(max_batch=32), Metrics()
    out = run([b.categorise(e, m, it) for it in items])
    assert e.calls == [32, 8] and [r["filename"] for r in out] == [f for f, _ in items]


def test_a_bad_image_fails_alone(engine, items):
    e, b, m = Counting(engine), InlineBatcher(), Metrics()
    bad = ("bad.png", items[0][1][:40])  # a PNG header, then nothing
    out = run([b.categorise(e, m, it) for it in (items[0], bad, items[1])])
    assert out[0]["filename"] == "0.png" and out[2]["filename"] == "1.png"
    assert getattr(out[1], "status", None) == 422, out[1]  # its own ServingError (CorruptImage): the API's 4xx
    assert e.calls == [2]


def test_a_failed_model_fails_its_requests_and_the_queue_goes_on(engine, items):
    b, m = InlineBatcher(), Metrics()
    bad, good = Counting(engine, fail=True), Counting(engine)
    out = run([b.categorise(bad, m, it) for it in items[:3]] + [b.categorise(good, m, it) for it in items[3:5]])
    assert all(isinstance(r, RuntimeError) for r in out[:3])  # each request raises it (a 500, as it was alone)
    assert [r["filename"] for r in out[3:]] == ["3.png", "4.png"]  # another model's requests (a swap): their own call
    assert bad.calls == [3] and good.calls == [2]
    assert run([b.categorise(bad.__class__(engine), m, items[0])])[0]["filename"] == "0.png"


def test_a_cancelled_request_is_not_inferred(engine, items):
    e, b, m = Counting(engine), InlineBatcher(), Metrics()

    async def main():
        gone = asyncio.create_task(b.categorise(e, m, items[0]))
        kept = asyncio.create_task(b.categorise(e, m, items[1]))
        await asyncio.sleep(0)  # both decoded and queued; the queue runs at the loop's next turn
        gone.cancel()
        return await kept, await asyncio.gather(gone, return_exceptions=True)

    kept, (gone,) = asyncio.run(main())
    assert kept["filename"] == "1.png" and isinstance(gone, asyncio.CancelledError)
    assert e.calls == [1]


def test_concurrent_requests_through_the_api(model_path, tmp_path, items):
    "Concurrent /predict requests each get the answer they get alone, and under load some share a call."
    app = create_app(Settings(model_path=str(model_path), data_dir=str(tmp_path / "feedback")), ui=False)

    async def main():
        async with app.router.lifespan_context(app):
            t = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=t, base_url="http://test") as c:
                alone = [(await c.post("/predict", files={"file": it})).json() for it in items[:8]]
                together = await asyncio.gather(*[c.post("/predict", files={"file": it}) for it in items[:8]])
                return alone, [r.json() for r in together], app.state.metrics

    alone, together, metrics = asyncio.run(main())
    for a, r in zip(alone, together):
        assert r["category"] == a["category"] and r["confidence"] == pytest.approx(a["confidence"], abs=1e-5)
    sizes = metrics.batch_size.collect()[0].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    assert count < 16  # 16 requests, fewer inferences: the concurrent ones shared calls
