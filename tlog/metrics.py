"""Every Prometheus metric of the service, declared once.

Each :class:`Metrics` has its own registry, so two services in one process (tests)
never share counters. ``/metrics`` renders it in the Prometheus text format.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4096)


class Metrics:
    """The service's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tlog_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tlog_http_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.appends = Counter(
            "tlog_appends_total", "Entries appended, by log", ["log"], registry=r
        )
        self.batch_size = Histogram(
            "tlog_batch_items", "Items per committed batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.integration = Histogram(
            "tlog_integration_seconds",
            "Time to integrate, sign and durably commit one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tree_size = Gauge(
            "tlog_tree_size", "Size of the latest signed tree", ["log"], registry=r
        )
        self.pending = Gauge("tlog_pending_writes", "Writes queued or being integrated", registry=r)
        self.denials = Counter(
            "tlog_access_denied_total",
            "Requests refused by authentication or authorisation, by reason",
            ["reason"],
            registry=r,
        )
        self.threats = Counter(
            "tlog_threat_events_total", "Detected threat events, by threat", ["threat"], registry=r
        )

    def render(self) -> bytes:
        """Return every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)
