"""The gateway's settings: the teacher, limits, costs and the top-level keys.

The router's, the student's and the storage's sections live beside their code
(:mod:`understudy.router.config`, :mod:`understudy.student.config`,
:mod:`understudy.storage.config`); :class:`GatewayConfig` nests them. The composition root
(:mod:`understudy.settings`) adds the distiller's section and reads the whole tree. Each
section checks its own values (``validate``, a ``ValueError`` naming the setting).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from understudy.router.config import RouterConfig
from understudy.storage.config import StorageConfig, database_address
from understudy.storage.records import valid_task_name
from understudy.student.config import StudentConfig


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class TeacherConfig:
    """The upstream OpenAI-compatible API (the teacher)."""

    url: str = "https://api.openai.com/v1"
    """Base URL of the teacher, including ``/v1``."""
    api_key: str | None = None
    """Key sent to the teacher. Never stored or logged."""
    pass_through_auth: bool = False
    """Forward the client's own ``Authorization`` header to the teacher instead of ``api_key``."""
    timeout_s: float = 120.0
    """Read timeout for one teacher call (seconds)."""
    connect_timeout_s: float = 5.0
    """Connect timeout for one teacher call (seconds)."""
    max_retries: int = 2
    """Retries after a 5xx, connection error or timeout (never once a stream has sent bytes)."""
    retry_budget_s: float = 30.0
    """Total time a request may spend retrying the teacher before giving up with 502/504."""
    backoff_s: float = 0.25
    """First retry delay; doubles on each retry, capped by the remaining budget."""
    max_connections: int = 512
    """Connection pool size towards the teacher."""
    deadline_s: float = 600.0
    """Longest a whole (non-streamed) teacher call may take in all, retries and a slow body
    included, and a stream until its first byte; past it the client gets 504
    ``teacher_timeout``."""
    stream_idle_s: float = 120.0
    """Longest a teacher stream may go without an event carrying data (keep-alive comments do
    not count); past it the stream ends with a ``teacher_timeout`` error event."""
    stream_max_s: float = 1800.0
    """Longest a teacher stream may last in all; past it the stream ends with a
    ``teacher_timeout`` error event."""
    max_answer_bytes: int = 64 * 1024 * 1024
    """Largest teacher answer taken, whole or streamed, counted after decompression (a gzip
    answer is inflated step by step and refused once past it); larger ones are a 502 (a stream
    ends with an error event). Pass-through calls are relayed as they are, not held to it."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``teacher.*`` setting with an impossible value."""
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("teacher.url must be an http(s) URL")
        if self.max_retries < 0:
            raise ValueError("teacher.max_retries must be >= 0")
        for name in ("timeout_s", "deadline_s", "stream_idle_s", "stream_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"teacher.{name} must be positive")
        if self.max_answer_bytes <= 0:
            raise ValueError("teacher.max_answer_bytes must be positive")


@dataclass
class LimitConfig:
    """Per-key request rate and monthly budget; a refused request gets 429 with ``retry-after``."""

    requests_per_minute: int = 0
    """Requests a minute each gateway key (open gateway: each client address) may make; 0: off."""
    burst: int = 0
    """Requests a key may make at once before the per-minute rate applies (0: the rate)."""
    monthly_tokens: int = 0
    """Tokens (prompt + completion) each gateway key may use per calendar month, UTC; 0: off."""
    monthly_usd: float = 0.0
    """Teacher spend (USD, priced by ``[costs]``; an unpriced model at the table's highest prices)
    each gateway key may run up a month; 0: off."""
    rate_lease_s: float | None = None
    """Whether the rate limit is shared by every gateway process on the database. Above 0:
    shared, every process leasing a key's tokens for at most this many seconds at a time (one
    database round trip per lease; leased tokens a process does not spend in time are lost).
    0: each process counts its own (with N processes or replicas a key gets up to N times the
    rate). Unset: 0.5 on PostgreSQL (replicas), 0 on SQLite (one gateway has nothing to share;
    set it for ``serve --workers N``)."""
    reserve_tokens: int = 256
    """Tokens a request in flight holds of its key's ``monthly_tokens`` for its answer (with its
    body's, four characters a token) until it is logged: concurrent requests cannot all start
    on the same unspent budget."""
    budget_lease_s: float = 30.0
    """How long a request in flight holds its key's budget in the database unless its gateway
    process renews the hold (every second while it lives): a process killed with requests in
    flight keeps their tokens held this long."""
    failed_auth_per_minute: int = 10
    """Failed key checks (gateway, admin, dashboard sign-in) an address may make a minute before
    its key checks get 429 until the minute has passed; each failure is logged without the key.
    0: off."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``limits.*`` setting below zero."""
        names = ("requests_per_minute", "burst", "monthly_tokens", "monthly_usd", "rate_lease_s")
        for name in (*names, "reserve_tokens", "budget_lease_s", "failed_auth_per_minute"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"limits.{name} must be >= 0")


@dataclass
class PassthroughConfig:
    """Every other path under ``/v1/`` (embeddings, files, audio, ...), relayed to the teacher
    as it comes and logged as a metered metadata row."""

    allow: list[str] = field(default_factory=lambda: ["/v1/"])
    """Path prefixes relayed to the teacher (empty: none); others get 403."""
    deny: list[str] = field(default_factory=list)
    """Path prefixes refused with 403 even when allowed, e.g. ``["/v1/fine_tuning"]``."""
    max_body_bytes: int = 512 * 1024 * 1024
    """Largest request body relayed (uploads); larger ones get 413. Chat keeps
    ``max_body_bytes``."""
    store_json_bodies: bool = False
    """Also store JSON request and response bodies of at most ``store_max_bytes`` in the log
    (never used for training)."""
    store_max_bytes: int = 64 * 1024
    """Largest JSON body stored when ``store_json_bodies`` is on."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``passthrough.*`` setting out of range."""
        for name in ("allow", "deny"):
            for prefix in getattr(self, name):
                if not prefix.startswith("/v1/"):
                    raise ValueError(f"passthrough.{name}: {prefix!r} must start with /v1/")
        if self.max_body_bytes <= 0:
            raise ValueError("passthrough.max_body_bytes must be positive")
        if self.store_max_bytes < 0:
            raise ValueError("passthrough.store_max_bytes must be >= 0")

    def refuses(self, path: str) -> bool:
        """True when ``path`` is not allowed, or denied."""
        allowed = any(path.startswith(p) for p in self.allow)
        return not allowed or any(path.startswith(p) for p in self.deny)


@dataclass
class CostConfig:
    """Prices used to account teacher spend and student savings (USD)."""

    prices: dict[str, str] = field(default_factory=dict)
    """Teacher prices, model to ``"INPUT/OUTPUT"`` USD per 1M tokens, over the built-in table
    (``gpt-4o``, ``gpt-4o-mini``, ``gpt-4.1``, ``gpt-4.1-mini``, ``gpt-4.1-nano``, ``o3``,
    ``o4-mini``, ``gpt-3.5-turbo``, and the embedding models ``text-embedding-3-small``,
    ``text-embedding-3-large``, ``text-embedding-ada-002``); a dated name
    (``gpt-4o-2024-08-06``, ``gpt-4-0613``) takes its name's price, a longer name
    (``o3-pro``) never a shorter one's. While ``limits.monthly_usd`` is on, a model with no
    price is charged the table's highest prices (warned once per model)."""
    teacher_model: str | None = None
    """Model whose price a student answer is valued at (default: the task's latest teacher
    model, else the requested model)."""
    student_per_million: float = 0.0
    """Student cost in USD per 1M tokens (prompt + completion); 0 with ``student_gpu_hour`` 0:
    the student is free (a CPU box)."""
    student_gpu_hour: float = 0.0
    """Price of the student's GPU per hour (USD); charged as tokens / throughput."""
    student_tokens_per_s: float = 0.0
    """Measured student throughput (tokens a second, batched); 0: each generation's own rate,
    which overstates the GPU cost of batched traffic."""
    ratio_refresh_s: float = 60.0
    """How often each task's teacher/student token ratio is re-learned from logged pairs."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``costs.*`` number out of range.

        The prices' text is parsed where prices are (the accounting), at assembly.
        """
        for name in ("student_per_million", "student_gpu_hour", "student_tokens_per_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"costs.{name} must be >= 0")
        if self.ratio_refresh_s <= 0:
            raise ValueError("costs.ratio_refresh_s must be positive")


@dataclass
class ServerConfig:
    """The HTTP server's limits towards clients, and how a stop drains."""

    header_timeout_s: float = 10.0
    """Longest time a client may take to send a request's headers (from connecting, or from the
    request's first byte); slower connections are closed."""
    keep_alive_s: float = 5.0
    """How long an idle keep-alive connection stays open between requests."""
    max_header_bytes: int = 64 * 1024
    """Largest request line and headers together; larger ones get 431."""
    max_headers: int = 128
    """Most header lines in one request; more get 431."""
    max_connections: int = 4096
    """Open connections (and requests in progress) beyond which new requests get 503; the
    process's open-file limit is raised to fit it where the system allows."""
    shutdown_drain_s: float = 5.0
    """On SIGTERM, how long requests in flight may finish before they are cancelled (their rows
    logged ``incomplete``); with ``shutdown_flush_s`` it must fit the platform's grace period
    (Docker: 10 s by default; ``stop_grace_period`` in ``deploy/compose.yaml``)."""
    shutdown_flush_s: float = 3.0
    """On stop, how long the request log may keep retrying writes that fail (a locked or full
    database) before the rows left are counted dropped."""
    read_threads: int = 2
    """Threads of their own for slow reads (the dashboard's queries, rendering ``/metrics``), so
    they never hold the threads readiness, feedback and serving use."""
    read_waiting: int = 16
    """Slow reads that may wait for a read thread; more get 503 at once."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``server.*`` setting out of range."""
        for name in ("header_timeout_s", "keep_alive_s", "shutdown_flush_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"server.{name} must be positive")
        if self.shutdown_drain_s < 0:
            raise ValueError("server.shutdown_drain_s must be >= 0")
        if self.read_waiting < 0:
            raise ValueError("server.read_waiting must be >= 0")
        for name in ("max_header_bytes", "max_headers", "max_connections", "read_threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"server.{name} must be positive")


@dataclass
class GatewayConfig:
    """Everything the gateway needs: top-level settings and the sections it serves with."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    data_dir: Path = Path("understudy-data")
    """Directory holding the SQLite database (``understudy.db``) and student artefacts."""
    api_keys: list[str] = field(default_factory=list)
    """Gateway keys clients must present as ``Authorization: Bearer KEY`` (empty: open)."""
    admin_key: str | None = None
    """Key for admin endpoints and the dashboard (empty: admin endpoints are disabled, and the
    dashboard is open only on a gateway with no ``api_keys``)."""
    allow_open: bool = False
    """Serve on a non-loopback ``host`` with no ``api_keys`` (anyone who reaches it spends the
    teacher key and reads the dashboard; in pass-through mode, without ``admin_key``): refused
    unless this is true."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Addresses of reverse proxies whose ``X-Forwarded-For``/``X-Forwarded-Proto`` are believed
    (e.g. ``["10.0.0.5"]``, ``["*"]`` behind a private load balancer); empty: a client's address
    is the connection's, so the header cannot dodge per-address limits."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest accepted request body of chat and completions; larger ones get 413
    (pass-through paths: ``passthrough.max_body_bytes``)."""
    log_level: str = "info"
    """Log level of the gateway process (debug, info, warning, error)."""
    routes: dict[str, str] = field(default_factory=dict)
    """Requested ``model`` name to task name, e.g. ``{"support-bot" = "support-intent"}``."""
    max_auto_tasks: int = 1000
    """Most tasks named by a prompt fingerprint (those already in the log count); requests of
    further fingerprints are logged under the task ``auto-overflow`` and counted
    (``understudy_auto_tasks_overflowed``). Header and route tasks are not limited."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    costs: CostConfig = field(default_factory=CostConfig)
    limits: LimitConfig = field(default_factory=LimitConfig)
    passthrough: PassthroughConfig = field(default_factory=PassthroughConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    @property
    def db_path(self) -> Path | str:
        """The database: a SQLite file, or a PostgreSQL URL (``storage.url``)."""
        return database_address(self.data_dir, self.storage.url)

    def exposure_problem(self) -> str | None:
        """Why serving on ``host`` as configured would be open to anyone who reaches it (None:
        the address is loopback, ``allow_open`` says so, ``api_keys`` are set, or clients bring
        their own teacher keys and the dashboard has ``admin_key``)."""
        if self.allow_open or is_loopback(self.host) or self.api_keys:
            return None
        if self.teacher.pass_through_auth and self.admin_key:
            return None
        exposed = (
            "its dashboard would be open to anyone who reaches it (set admin_key)"
            if self.teacher.pass_through_auth
            else "anyone who reaches it could spend the teacher key and read the dashboard "
            "(set api_keys)"
        )
        return (
            f"refusing to serve on {self.host}: {exposed}. Listen on 127.0.0.1, or set "
            "allow_open = true (UNDERSTUDY_ALLOW_OPEN=true) if an open gateway is meant."
        )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting with an impossible value."""
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be between 1 and 65535")
        if self.max_auto_tasks < 1:
            raise ValueError("max_auto_tasks must be at least 1")
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.teacher.validate()
        self.storage.validate()
        self.limits.validate()
        self.passthrough.validate()
        self.server.validate()
        self.student.validate()
        self.router.validate()
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be one of debug, info, warning, error")
        for model, task in self.routes.items():
            if not valid_task_name(task):
                raise ValueError(f"routes.{model}: invalid task name {task!r}")
        self.costs.validate()
