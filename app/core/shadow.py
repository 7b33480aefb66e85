"""Shadow mode: a challenger version sees a share of the live /predict traffic, off the request path.

The request samples itself (`share`), hands the batch it already prepared and the served model's classes to a
bounded queue without waiting (a full queue drops the sample and counts it), and answers; one background thread runs
the shadow model and counts, per served category, how often the shadow chose the same one, and how long it took.
Answers never depend on the shadow: it is not consulted, only compared.
"""

import queue
import random
import threading
import time

import numpy as np

from fashioncat.serving import Engine

from .logs import app_log
from .metrics import Metrics


class Shadow:
    "A challenger engine fed by a bounded queue from one background thread."

    def __init__(self, engine: Engine, version: str, share: float, metrics: Metrics, maxsize: int = 64, seed=None):
        self.engine, self.version, self.share, self.metrics = engine, version, share, metrics
        self.queue: queue.Queue = queue.Queue(maxsize)
        self._rng = random.Random(seed)
        self._thread = threading.Thread(target=self._run, name=f"shadow-{version}", daemon=True)
        self._thread.start()

    def offer(self, views: np.ndarray, served: np.ndarray) -> bool:
        "Maybe queue `views` (a model batch) with the served classes; never blocks. Whether it was queued."
        if self.share <= 0 or (self.share < 1 and self._rng.random() >= self.share):
            return False
        try:
            self.queue.put_nowait((views, served))
            return True
        except queue.Full:
            self.metrics.shadow_dropped.labels(self.version).inc()
            return False

    def _run(self) -> None:
        classes, m = self.engine.classes, self.metrics
        while (item := self.queue.get()) is not None:
            try:
                views, served = item
                t0 = time.perf_counter()
                chosen = self.engine.predict(views).argmax(1)
                m.shadow_latency.labels(self.version).observe(time.perf_counter() - t0)
                for c, s in zip(chosen.tolist(), served.tolist()):
                    m.shadow_compared.labels(self.version, classes[s]).inc()
                    if c == s:
                        m.shadow_agreed.labels(self.version, classes[s]).inc()
            except Exception as e:  # noqa: BLE001 - the shadow never takes the service down; the log says why
                app_log.error("shadow model failed", extra={"version": self.version, "detail": repr(e)})
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def join(self) -> None:
        "Wait until every queued batch has been compared (tests, shutdown)."
        self.queue.join()

    def close(self) -> None:
        "Finish the queued batches, then stop the thread."
        self.queue.put(None)
        self._thread.join(timeout=30)

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "share": self.share,
            "queued": self.queue.qsize(),
            "maxsize": self.queue.maxsize,
        }
