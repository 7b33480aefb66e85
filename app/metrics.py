"""Prometheus metrics, with the names the dashboards and alerts are built on (see docker/ and README).

One registry per app (`app.state.metrics`), holding the process, platform and GC collectors as the default registry
does: a process serves one app, and tests that build several apps each see only their own traffic.
"""

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
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

disable_created_metrics()  # no `*_created` series: they double the exposition and no dashboard uses them


class Metrics:
    "The service's metrics on their own registry."

    def __init__(self):
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
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
        )
        self.feedback = Counter(
            "fashioncat_feedback_total", "Corrections made in the UI, by corrected category", ["category"], registry=r
        )

    def render(self) -> tuple[bytes, str]:
        "The exposition text of every metric, and its content type."
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe_results(self, results: list[dict]) -> None:
        "Count predictions, confidences and reviews (error entries are skipped)."
        for res in results:
            if "category" not in res:
                continue
            self.predictions.labels(res["category"]).inc()
            self.confidence.observe(res["confidence"])
            if res["needs_review"]:
                self.needs_review.inc()
