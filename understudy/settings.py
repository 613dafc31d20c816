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

from understudy.config_reader import (
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
from understudy.distiller.config import DistillConfig
from understudy.gateway.config import CostConfig, GatewayConfig
from understudy.gateway.errors import ConfigError
from understudy.storage.records import valid_task_name

DEFAULT_CONFIG_FILE = "understudy.toml"
FILE_ONLY = frozenset({"distiller.tasks"})
"""Settings that only a config file can set (nested tables have no environment form)."""


@dataclass
class Settings(GatewayConfig):
    """Everything ``understudy`` reads: the gateway's settings and the distiller's."""

    distiller: DistillConfig = field(default_factory=DistillConfig)


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


def _validate_costs(costs: CostConfig) -> None:
    from understudy.gateway.accounting.prices import parse_price

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
