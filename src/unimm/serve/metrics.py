"""Prometheus metrics of one server (a registry per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "unimm_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.errors = Counter("unimm_errors", "requests answered with 4xx/5xx", registry=r)
        self.latency = Histogram(
            "unimm_latency_seconds",
            "request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter("unimm_images", "images generated", registry=r)
        self.queue_depth = Gauge("unimm_queue_depth", "requests waiting for the model", registry=r)
        self.batch_rows = Histogram(
            "unimm_batch_rows", "prompt rows per model call", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_jobs = Histogram(
            "unimm_batch_requests",
            "requests merged into one model call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "unimm_model_seconds", "seconds per model call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.rejected = Counter(
            "unimm_rejected", "requests refused by back-pressure", ["reason"], registry=r
        )

    def on_batch(self, rows: int, jobs: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_jobs.observe(jobs)
        self.model_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
