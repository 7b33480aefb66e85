"""Prometheus metrics, with the names the dashboards and alerts are built on (see docker/ and README)."""

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no `*_created` series: they double the exposition and no dashboard uses them

REQUESTS = Counter(
    "fashioncat_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
REQUEST_LATENCY = Histogram(
    "fashioncat_request_latency_seconds",
    "Time from request to response, by route template",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
)
INFERENCE_LATENCY = Histogram(
    "fashioncat_inference_latency_seconds",
    "ONNX Runtime time per batch (preprocessing excluded)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BATCH_SIZE = Histogram("fashioncat_batch_size", "Images per inference batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128))
PREDICTIONS = Counter("fashioncat_predictions_total", "Predictions by winning category (English name)", ["category"])
CONFIDENCE = Histogram(
    "fashioncat_confidence",
    "Confidence (probability of the winning category)",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
NEEDS_REVIEW = Counter("fashioncat_needs_review_total", "Predictions below the review threshold")
MODEL_INFO = Gauge(
    "fashioncat_model_info", "The model being served (value is always 1)", ["version", "commit", "architecture"]
)
FEEDBACK = Counter("fashioncat_feedback_total", "Corrections made in the UI, by corrected category", ["category"])


def render() -> tuple[bytes, str]:
    "The exposition text of every metric, and its content type."
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def observe_results(results: list[dict]) -> None:
    "Count predictions, confidences and reviews (error entries are skipped)."
    for r in results:
        if "category" not in r:
            continue
        PREDICTIONS.labels(r["category"]).inc()
        CONFIDENCE.observe(r["confidence"])
        if r["needs_review"]:
            NEEDS_REVIEW.inc()
