"""Settings: one typed object, read once at start-up from defaults, a TOML file and env vars.

Precedence (lowest first): defaults, the config file (``--config FILE``, ``$UNDERSTUDY_CONFIG``
or ``./understudy.toml`` when present), ``UNDERSTUDY_*`` environment variables, command-line
flags. Top-level keys map to ``UNDERSTUDY_<KEY>``; keys of a section map to
``UNDERSTUDY_<SECTION>_<KEY>`` (``teacher.api_key`` is ``UNDERSTUDY_TEACHER_API_KEY``), and so
on for nested sections (``distiller.train.epochs`` is ``UNDERSTUDY_DISTILLER_TRAIN_EPOCHS``).
An environment name is matched against the known setting paths, so underscores inside key
names are never ambiguous. An unknown key in the file or an unknown ``UNDERSTUDY_*`` variable
is an error naming the key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from gateway.config_source import (
    ENV_PREFIX,
    build,
    class_docs,
    env_name,
    from_env,
    is_section,
    merge,
    put,
    read_toml,
    sections,
)
from gateway.errors import ConfigError

DEFAULT_CONFIG_FILE = "understudy.toml"
FILE_ONLY = frozenset({"distiller.tasks"})
"""Settings that only a config file can set (nested tables have no environment form)."""


@dataclass
class TeacherSettings:
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


@dataclass
class StorageSettings:
    """The request log (SQLite, WAL, write-behind queue with group commit)."""

    queue_size: int = 20000
    """Rows waiting to be written; when full, new rows are dropped and counted, never blocked."""
    commit_interval_ms: float = 50.0
    """Longest time a row waits before its group commit: the most a crash can lose."""
    batch_size: int = 1000
    """Largest number of rows written in one transaction."""
    busy_timeout_ms: int = 2000
    """How long a write waits for a lock held by another process before retrying later."""
    retention_days: float = 0.0
    """Delete requests, student attempts and feedback older than this many days (0: keep all)."""
    retention_interval_s: float = 3600.0
    """How often the gateway applies ``retention_days`` (in small batches, off the serving path)."""


@dataclass
class StudentSettings:
    """The student engine that answers confident requests."""

    backend: str = "local"
    """``local`` (transformers in this process), ``vllm`` (a vLLM server over HTTP) or ``none``."""
    vllm_url: str = "http://127.0.0.1:8001/v1"
    """Base URL of the vLLM OpenAI server (``vllm serve BASE --enable-lora``)."""
    vllm_api_key: str | None = None
    """Key for the vLLM server, if it was started with ``--api-key``."""
    device: str = "auto"
    """Local backend device: ``auto`` (a GPU when present), ``cpu`` or ``cuda``."""
    max_batch_size: int = 16
    """Local backend: most requests generated together in one batch."""
    batch_window_ms: float = 5.0
    """Local backend: how long the first request of a batch waits for others."""
    max_tokens: int = 256
    """Longest student answer, whatever the request asks."""
    timeout_s: float = 30.0
    """Longest a student generation may take before the request goes to the teacher."""
    tools: bool = False
    """Whether students answer requests carrying ``tools`` (off: those go to the teacher)."""
    degraded_mode: str = "serve"
    """Teacher failed, student answered: ``serve`` it (marked degraded) or ``fail``."""
    reload_interval_s: float = 2.0
    """How often serving checks the registry for a new champion, a rollback or a mode change."""


@dataclass
class RouterSettings:
    """How the router decides between the student and the teacher."""

    quality_target: float = 0.97
    """Required agreement with the teacher on student-served traffic (used when fitting)."""
    confidence: float = 0.95
    """Confidence of the lower bound used to check the quality target."""
    threshold_mode: str = "calibrated"
    """``calibrated`` (the threshold stored with the student) or ``fixed`` (``fixed_threshold``)."""
    fixed_threshold: float = 0.9
    """Threshold on P(agree) in fixed mode."""
    shadow_rate: float = 0.05
    """Share of student-served requests also sent to the teacher, off the response path."""
    drift_margin: float = 0.03
    """Live agreement this far below the target sends the task back to the teacher."""
    drift_window: int = 200
    """Shadow comparisons the live agreement is computed over."""
    drift_min_samples: int = 30
    """Shadow comparisons needed before drift can trip."""
    drift_confidence: float = 0.95
    """Drift trips only when live agreement is below ``quality_target - drift_margin`` with
    this confidence (the one-sided Wilson upper bound of the window's agreement is below it),
    so noise over a few dozen comparisons does not send a good student back; 0.5 compares the
    plain share."""


@dataclass
class LimitSettings:
    """Per-key request rate and monthly budget; a refused request gets 429 with ``retry-after``."""

    requests_per_minute: int = 0
    """Requests a minute each gateway key (open gateway: each client address) may make; 0: off."""
    burst: int = 0
    """Requests a key may make at once before the per-minute rate applies (0: the rate)."""
    monthly_tokens: int = 0
    """Tokens (prompt + completion) each gateway key may use per calendar month, UTC; 0: off."""
    monthly_usd: float = 0.0
    """Teacher spend (USD, priced by ``[costs]``) each gateway key may run up a month; 0: off."""


@dataclass
class CostSettings:
    """Prices used to account teacher spend and student savings (USD)."""

    prices: dict[str, str] = field(default_factory=dict)
    """Teacher prices, model to ``"INPUT/OUTPUT"`` USD per 1M tokens, over the built-in table
    (``gpt-4o``, ``gpt-4o-mini``, ``gpt-4.1``, ``gpt-4.1-mini``, ``gpt-4.1-nano``, ``o3``,
    ``o4-mini``, ``gpt-3.5-turbo``); a dated name (``gpt-4o-2024-08-06``) takes its prefix's
    price."""
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


@dataclass
class Settings:
    """Everything the gateway needs; ``understudy serve`` validates it before starting."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    data_dir: Path = Path("understudy-data")
    """Directory holding the SQLite database (``understudy.db``) and student artefacts."""
    api_keys: list[str] = field(default_factory=list)
    """Gateway keys clients must present as ``Authorization: Bearer KEY`` (empty: open)."""
    admin_key: str | None = None
    """Key for admin endpoints and the dashboard (empty: admin endpoints are disabled)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest accepted request body; larger ones get 413."""
    log_level: str = "info"
    """Log level of the gateway process (debug, info, warning, error)."""
    routes: dict[str, str] = field(default_factory=dict)
    """Requested ``model`` name to task name, e.g. ``{"support-bot" = "support-intent"}``."""
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    student: StudentSettings = field(default_factory=StudentSettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    costs: CostSettings = field(default_factory=CostSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    distiller: DistillConfig = field(default_factory=DistillConfig)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "understudy.db"


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and validate the settings; raise :class:`ConfigError` naming any bad key."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        data = read_toml(Path(path))
    merge(data, from_env(env, env_names(), FILE_ONLY))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            put(data, dotted.split("."), value)
    settings = build(Settings, data, "")
    _validate(settings)
    return settings


def iter_setting_docs() -> list[tuple[str, str, str, str]]:
    """(dotted key, env var, default, description) for every setting, for docs and tests."""
    rows: list[tuple[str, str, str, str]] = []
    for prefix, cls in sections(Settings):
        docs = class_docs(cls)
        for f in dataclasses.fields(cls):
            if is_section(f, cls):
                continue
            dotted = f"{prefix}.{f.name}" if prefix else f.name
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            env = "" if dotted in FILE_ONLY else env_name(prefix, f.name)
            rows.append((dotted, env, repr(default), docs.get(f.name, "")))
    return rows


def env_names() -> dict[str, str]:
    """Every ``UNDERSTUDY_*`` variable a setting reads, to its dotted setting name."""
    names: dict[str, str] = {}
    for prefix, cls in sections(Settings):
        for f in dataclasses.fields(cls):
            dotted = f"{prefix}.{f.name}" if prefix else f.name
            if is_section(f, cls) or dotted in FILE_ONLY:
                continue
            name = env_name(prefix, f.name)
            if name in names:  # pragma: no cover - a naming mistake in the dataclasses
                raise ConfigError(f"{dotted} and {names[name]} both read {name}")
            names[name] = dotted
    return names


def _validate(s: Settings) -> None:
    checks = [
        (1 <= s.port <= 65535, "port must be between 1 and 65535"),
        (s.max_body_bytes > 0, "max_body_bytes must be positive"),
        (s.teacher.url.startswith(("http://", "https://")), "teacher.url must be an http(s) URL"),
        (s.teacher.max_retries >= 0, "teacher.max_retries must be >= 0"),
        (s.teacher.timeout_s > 0, "teacher.timeout_s must be positive"),
        (s.storage.queue_size > 0, "storage.queue_size must be positive"),
        (0 < s.storage.commit_interval_ms <= 100, "storage.commit_interval_ms must be in (0, 100]"),
        (s.storage.batch_size > 0, "storage.batch_size must be positive"),
        (s.storage.retention_days >= 0, "storage.retention_days must be >= 0"),
        (s.storage.retention_interval_s > 0, "storage.retention_interval_s must be positive"),
        (s.limits.requests_per_minute >= 0, "limits.requests_per_minute must be >= 0"),
        (s.limits.burst >= 0, "limits.burst must be >= 0"),
        (s.limits.monthly_tokens >= 0, "limits.monthly_tokens must be >= 0"),
        (s.limits.monthly_usd >= 0, "limits.monthly_usd must be >= 0"),
        (
            s.student.backend in ("local", "vllm", "none"),
            "student.backend must be one of local, vllm, none",
        ),
        (
            s.student.degraded_mode in ("serve", "fail"),
            "student.degraded_mode must be serve or fail",
        ),
        (0 < s.router.quality_target <= 1, "router.quality_target must be in (0, 1]"),
        (0 <= s.router.shadow_rate <= 1, "router.shadow_rate must be in [0, 1]"),
        (s.router.drift_margin >= 0, "router.drift_margin must be >= 0"),
        (s.router.drift_window >= 1, "router.drift_window must be >= 1"),
        (0.5 <= s.router.drift_confidence < 1, "router.drift_confidence must be in [0.5, 1)"),
        (
            1 <= s.router.drift_min_samples <= s.router.drift_window,
            "router.drift_min_samples must be between 1 and router.drift_window",
        ),
        (
            s.router.threshold_mode in ("calibrated", "fixed"),
            "router.threshold_mode must be calibrated or fixed",
        ),
        (
            s.log_level in ("debug", "info", "warning", "error"),
            "log_level must be one of debug, info, warning, error",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for model, task in s.routes.items():
        if not valid_task_name(task):
            raise ConfigError(f"routes.{model}: invalid task name {task!r}")
    _validate_distiller(s.distiller)
    _validate_costs(s.costs)


def _validate_distiller(config: DistillConfig) -> None:
    """The distiller's own checks, and every per-task override applied once."""
    try:
        config.validate()
    except ValueError as exc:
        raise ConfigError(f"distiller.{exc}") from None
    for task in config.tasks:
        if not valid_task_name(task):
            raise ConfigError(f"distiller.tasks: invalid task name {task!r}")
        try:
            config.for_task(task).validate()
        except ValueError as exc:
            message = str(exc)
            if "distiller." not in message:
                message = f"distiller.tasks.{task}.{message}"
            raise ConfigError(message) from None


def _validate_costs(costs: CostSettings) -> None:
    from gateway.costs import parse_price

    for model, text in costs.prices.items():
        try:
            parse_price(text)
        except ValueError as exc:
            raise ConfigError(f"costs.prices.{model}: {exc}") from None
    for name in ("student_per_million", "student_gpu_hour", "student_tokens_per_s"):
        if getattr(costs, name) < 0:
            raise ConfigError(f"costs.{name} must be >= 0")
    if costs.ratio_refresh_s <= 0:
        raise ConfigError("costs.ratio_refresh_s must be positive")


def valid_task_name(name: str) -> bool:
    """Task names are 1-64 characters of letters, digits, ``.``, ``_`` and ``-``."""
    return (
        0 < len(name) <= 64
        and all(c.isalnum() or c in "._-" for c in name)
        and name.isascii()
        and name.strip(".") != ""  # "." and ".." would name directories in paths
    )
