"""Prometheus metrics, on a registry owned by the app (no global state).

Label values are task names, who served, statuses and model version ids: never a key. Each
label drawn from what clients send has a bounded set of values (:class:`LabelCap`): the first
:data:`MAX_TASK_LABELS` tasks, :data:`MAX_FAMILY_LABELS` pass-through families and
:data:`MAX_METHOD_LABELS` methods keep their names, the rest are counted as ``(other)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from understudy.gateway.accounting.metrics_state import (
    DistillCollector,
    LogTotalsCollector,
    ServingStudents,
    StudentCollector,
)
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter

MAX_TASK_LABELS = 2000
MAX_FAMILY_LABELS = 64
MAX_METHOD_LABELS = 16
OTHER = "(other)"

COVERAGE_WINDOW = 1000  # coverage is the student's share of a task's last 1,000 requests

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class LabelCap:
    """The values one label may take: the first ``limit`` seen keep their names, later ones
    become :data:`OTHER`, so a client cannot grow a metric without end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER


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
        yield CounterMetricFamily(
            "understudy_log_poison_rows",
            "Request log rows that could not be written even with their values coerced: dropped",
            value=stats.poison_rows,
        )
        yield CounterMetricFamily(
            "understudy_log_writer_restarts",
            "Times the request log writer was started again after an unexpected error",
            value=stats.restarts,
        )
        yield CounterMetricFamily(
            "understudy_log_reopened",
            "Times the database file was found deleted or replaced and opened again",
            value=stats.reopened,
        )
        yield GaugeMetricFamily(
            "understudy_log_unwritten_age_seconds",
            "Age of the oldest request log row not yet written: what a crash now would lose",
            value=stats.unwritten_age_s,
        )
        yield GaugeMetricFamily(
            "understudy_log_commit_lag_max_seconds",
            "The longest a request log row waited from submit to commit since the start",
            value=stats.max_commit_lag_s,
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
        self.overhead = Histogram(
            "understudy_gateway_overhead_seconds",
            "Time the gateway adds: total latency less teacher and student time",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.teacher_spend = Counter(
            "understudy_teacher_spend_usd",
            "Teacher cost in USD by task and call kind (teacher, fallback, shadow)",
            ["task", "kind"],
            registry=self.registry,
        )
        self.avoided = Counter(
            "understudy_teacher_cost_avoided_usd",
            "Teacher cost in USD avoided by student-served requests",
            ["task"],
            registry=self.registry,
        )
        self.student_cost = Counter(
            "understudy_student_cost_usd",
            "Cost in USD of the student's work (served, deferred and shadow-mode answers)",
            ["task"],
            registry=self.registry,
        )
        self.savings = Gauge(
            "understudy_savings_usd",
            "Net savings in USD since the gateway started: avoided - student - shadow cost",
            ["task"],
            registry=self.registry,
        )
        self.coverage = Gauge(
            "understudy_coverage",
            f"Share of the task's last {COVERAGE_WINDOW} requests the student served",
            ["task"],
            registry=self.registry,
        )
        self.passthrough = Counter(
            "understudy_passthrough_requests",
            "Calls relayed to the teacher as they are (embeddings, files, audio, ...) by "
            "endpoint family, method and HTTP status",
            ["endpoint", "method", "code"],
            registry=self.registry,
        )
        self.passthrough_latency = Histogram(
            "understudy_passthrough_latency_seconds",
            "Latency of relayed calls (to the last byte)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.passthrough_bytes = Counter(
            "understudy_passthrough_bytes",
            "Body bytes of relayed calls, in (from clients) and out (from the teacher)",
            ["endpoint", "direction"],
            registry=self.registry,
        )
        self.passthrough_tokens = Counter(
            "understudy_passthrough_tokens",
            "Tokens the teacher reported on relayed calls (embeddings, ...)",
            ["endpoint"],
            registry=self.registry,
        )
        self.passthrough_spend = Counter(
            "understudy_passthrough_spend_usd",
            "Teacher cost in USD of relayed calls that report usage",
            ["endpoint"],
            registry=self.registry,
        )
        self.auto_tasks_overflowed = Counter(
            "understudy_auto_tasks_overflowed",
            "Requests logged under the task auto-overflow: their prompt fingerprint came after "
            "max_auto_tasks others",
            registry=self.registry,
        )
        self.task = LabelCap(MAX_TASK_LABELS)
        self.family = LabelCap(MAX_FAMILY_LABELS)
        self.method = LabelCap(MAX_METHOD_LABELS)
        self._served: dict[str, deque[bool]] = {}
        self.registry.register(_LogCollector(writer))

    def watch(self, students: ServingStudents, db_path: Path) -> None:
        """Also export the serving students' state, the distillation runs and the log's
        totals (every worker's requests)."""
        self.registry.register(StudentCollector(students))
        self.registry.register(DistillCollector(db_path))
        self.registry.register(LogTotalsCollector(db_path))

    def observe_request(self, record: RequestRecord, teacher_s: float, student_s: float) -> None:
        """Coverage, gateway overhead and costs of a finished client request."""
        task = self.task(record.task)
        window = self._served.setdefault(task, deque(maxlen=COVERAGE_WINDOW))
        window.append(record.served_by == "student")
        self.coverage.labels(task).set(sum(window) / len(window))
        if record.latency_ms is not None:
            overhead = record.latency_ms / 1000 - teacher_s - student_s
            self.overhead.observe(max(overhead, 0.0))
        self.observe_costs(record)

    def observe_passthrough(self, record: RequestRecord) -> None:
        """A relayed call: its family, method and status; latency, bytes, tokens, cost."""
        family = self.family(record.endpoint)
        code = str(record.http_status) if record.http_status is not None else "none"
        self.passthrough.labels(family, self.method(record.http_method or ""), code).inc()
        if record.latency_ms is not None:
            self.passthrough_latency.labels(family).observe(record.latency_ms / 1000)
        self.passthrough_bytes.labels(family, "in").inc(record.bytes_in or 0)
        self.passthrough_bytes.labels(family, "out").inc(record.bytes_out or 0)
        if record.total_tokens:
            self.passthrough_tokens.labels(family).inc(record.total_tokens)
        if record.teacher_cost_usd:
            self.passthrough_spend.labels(family).inc(record.teacher_cost_usd)

    def observe_costs(self, record: RequestRecord) -> None:
        task = self.task(record.task)
        if record.teacher_cost_usd:
            self.teacher_spend.labels(task, _call_kind(record)).inc(record.teacher_cost_usd)
        if record.avoided_cost_usd:
            self.avoided.labels(task).inc(record.avoided_cost_usd)
        if record.student_cost_usd:
            self.student_cost.labels(task).inc(record.student_cost_usd)
        if record.saved_usd:
            self.savings.labels(task).inc(record.saved_usd)


def _call_kind(record: RequestRecord) -> str:
    if record.served_by == "shadow":
        return "shadow"
    if (record.route_reason or "").startswith("deferred"):
        return "fallback"
    return "teacher"
