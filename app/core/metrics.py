"""Prometheus metrics, with the names the dashboards and alerts are built on (see docker/ and README).

One registry per app (`app.state.metrics`), holding the process, platform and GC collectors as the default registry
does: a process serves one app, and tests that build several apps each see only their own traffic.

Several uvicorn workers (`WEB_CONCURRENCY` > 1) each count their own requests, so a scrape would see one random
worker. With `PROMETHEUS_MULTIPROC_DIR` set (docker/Dockerfile sets it when it starts several workers), prometheus_client
keeps every worker's values in files there and `/metrics` answers their aggregate: counters and histograms summed,
`process_cpu_seconds_total` and `process_resident_memory_bytes` summed over the live workers (each worker publishes
its own every few seconds), `fashioncat_model_info` as the maximum.
"""

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

disable_created_metrics()  # no `*_created` series: they double the exposition and no dashboard uses them
PROCESS_SAMPLE_S = 5.0  # how often each worker publishes its CPU and memory in multiprocess mode


def multiprocess_dir() -> str | None:
    "The folder of prometheus_client's multiprocess mode, when the environment sets one."
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class Metrics:
    "The service's metrics on their own registry."

    def __init__(self):
        self.multiproc_dir = multiprocess_dir()
        r = self.registry = CollectorRegistry()
        self.process_cpu = self.process_rss = None
        if self.multiproc_dir is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        else:  # the process collector sees one worker: each worker publishes its figures, summed over the live ones
            self._own_process = ProcessCollector(registry=None)
            self.process_cpu = Gauge(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds (all live workers)",
                registry=r,
                multiprocess_mode="livesum",
            )
            self.process_rss = Gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes (all live workers)",
                registry=r,
                multiprocess_mode="livesum",
            )
        self.requests = Counter(
            "fashioncat_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "fashioncat_request_latency_seconds",
            "Time from request to response, by route template",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.inference_latency = Histogram(
            "fashioncat_inference_latency_seconds",
            "ONNX Runtime time per batch (preprocessing excluded)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.batch_size = Histogram(
            "fashioncat_batch_size", "Images per inference batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.predictions = Counter(
            "fashioncat_predictions_total", "Predictions by winning category (English name)", ["category"], registry=r
        )
        self.confidence = Histogram(
            "fashioncat_confidence",
            "Confidence (probability of the winning category)",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.needs_review = Counter(
            "fashioncat_needs_review_total", "Predictions below the review threshold", registry=r
        )
        self.model_info = Gauge(
            "fashioncat_model_info",
            "The model being served (value is always 1)",
            ["version", "commit", "architecture"],
            registry=r,
            multiprocess_mode="max",
        )
        self.overloaded = Counter(
            "fashioncat_overloaded_total",
            "Requests (stage=body) and images (stage=decode) refused with 503: the memory budget was taken",
            ["stage"],
            registry=r,
        )
        self.model_swaps = Counter(
            "fashioncat_model_swaps_total", "Model version swaps, by outcome (ok, failed)", ["outcome"], registry=r
        )
        # shadow mode (app/core/shadow.py): per champion category, requests compared and those the shadow agreed on
        self.shadow_compared = Counter(
            "fashioncat_shadow_compared_total",
            "Images the shadow model also categorised, by shadow version and the served model's category",
            ["version", "category"],
            registry=r,
        )
        self.shadow_agreed = Counter(
            "fashioncat_shadow_agreed_total",
            "Images on which the shadow model chose the served model's category, by shadow version and category",
            ["version", "category"],
            registry=r,
        )
        self.shadow_latency = Histogram(
            "fashioncat_shadow_latency_seconds",
            "ONNX Runtime time per batch of the shadow model",
            ["version"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.shadow_dropped = Counter(
            "fashioncat_shadow_dropped_total",
            "Requests sampled for the shadow model but dropped because its queue was full",
            ["version"],
            registry=r,
        )
        self.stored = []  # collectors of figures read from the stores at scrape time (app/ui/workflow.py)

    def render(self) -> tuple[bytes, str]:
        "The exposition text of every metric (of every worker, in multiprocess mode), and its content type."
        if self.multiproc_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self.sample_process()
        self.forget_dead_workers()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiproc_dir)
        for c in self.stored:  # one store for all workers: read once, not summed
            registry.register(c)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def sample_process(self) -> None:
        "Publish this worker's CPU time and memory (multiprocess mode only)."
        if self.process_cpu is None:
            return
        gauges = {"process_cpu_seconds": self.process_cpu, "process_resident_memory_bytes": self.process_rss}
        for family in self._own_process.collect():  # prometheus_client's own reading of /proc
            if family.name in gauges:
                gauges[family.name].set(family.samples[0].value)

    def forget_dead_workers(self) -> None:
        "Drop the live gauges of workers that died without `worker_exit` (uvicorn restarts a crashed worker)."
        pids = {f.stem.rsplit("_", 1)[-1] for f in Path(self.multiproc_dir).glob("gauge_live*_*.db")}
        for pid in pids:
            if pid.isdigit() and not _alive(int(pid)):
                mark_process_dead(int(pid), self.multiproc_dir)

    def worker_exit(self) -> None:
        "Drop this worker's live gauges (multiprocess mode), so a stopped worker's memory is no longer counted."
        if self.multiproc_dir is not None:
            mark_process_dead(os.getpid(), self.multiproc_dir)

    def observe_results(self, results: list[dict]) -> None:
        "Count predictions, confidences and reviews (error entries are skipped)."
        for res in results:
            if "category" not in res:
                continue
            self.predictions.labels(res["category"]).inc()
            self.confidence.observe(res["confidence"])
            if res["needs_review"]:
                self.needs_review.inc()
