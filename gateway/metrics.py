"""Prometheus metrics, on a registry owned by the app (no global state)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from storage.request_log import RequestLogWriter

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _LogCollector(Collector):
    def __init__(self, writer: RequestLogWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.writer.stats()
        yield GaugeMetricFamily(
            "understudy_log_queue_depth",
            "Rows waiting to be written to the request log",
            value=stats.depth,
        )
        yield CounterMetricFamily(
            "understudy_log_dropped_rows",
            "Request log rows dropped (queue full or writer stopped)",
            value=stats.dropped,
        )
        yield CounterMetricFamily(
            "understudy_log_written_rows", "Request log rows written", value=stats.written
        )
        yield CounterMetricFamily(
            "understudy_log_failed_commits",
            "Request log commits that failed and were retried",
            value=stats.failed_commits,
        )
        yield GaugeMetricFamily(
            "understudy_log_healthy",
            "1 when the last request log write succeeded",
            value=1 if stats.healthy else 0,
        )


class Metrics:
    def __init__(self, writer: RequestLogWriter) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "understudy_requests",
            "Requests by task, who served them and outcome",
            ["task", "served_by", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "understudy_request_latency_seconds",
            "Total request latency (to the last byte)",
            ["served_by"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.teacher_latency = Histogram(
            "understudy_teacher_latency_seconds",
            "Teacher call latency (to the last byte)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.student_latency = Histogram(
            "understudy_student_latency_seconds",
            "Student generation latency",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_agreement = Counter(
            "understudy_shadow_agreements",
            "Shadow comparisons where the student agreed with the teacher",
            ["task"],
            registry=self.registry,
        )
        self.shadow_total = Counter(
            "understudy_shadow_comparisons",
            "Shadow comparisons made",
            ["task"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "understudy_tokens",
            "Tokens by task, who served them and kind",
            ["task", "served_by", "kind"],
            registry=self.registry,
        )
        self.teacher_retries = Counter(
            "understudy_teacher_retries",
            "Teacher calls retried after a 5xx, timeout or connection error",
            registry=self.registry,
        )
        self.registry.register(_LogCollector(writer))
