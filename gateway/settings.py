"""Settings: one typed object, read once at start-up from defaults, a TOML file and env vars.

Precedence (lowest first): defaults, the config file (``--config FILE``, ``$UNDERSTUDY_CONFIG``
or ``./understudy.toml`` when present), ``UNDERSTUDY_*`` environment variables, command-line
flags. Top-level keys map to ``UNDERSTUDY_<KEY>``; keys of a section map to
``UNDERSTUDY_<SECTION>_<KEY>`` (``teacher.api_key`` is ``UNDERSTUDY_TEACHER_API_KEY``). An
unknown key in the file or an unknown ``UNDERSTUDY_*`` variable is an error naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

ENV_PREFIX = "UNDERSTUDY_"
DEFAULT_CONFIG_FILE = "understudy.toml"


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
        data = _read_file(Path(path))
    _merge(data, _from_env(env))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        (data.setdefault(section, {}) if section else data)[key] = value
    settings = _build(Settings, data, "")
    _validate(settings)
    return settings


def iter_setting_docs() -> list[tuple[str, str, str, str]]:
    """(dotted key, env var, default, description) for every setting, for docs and tests."""
    rows: list[tuple[str, str, str, str]] = []
    docs = _field_docs()
    for prefix, cls in _sections():
        for f in dataclasses.fields(cls):
            if _is_section(f, cls):
                continue
            dotted = f"{prefix}.{f.name}" if prefix else f.name
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((dotted, _env_name(prefix, f.name), repr(default), docs.get(dotted, "")))
    return rows


# -- internals ---------------------------------------------------------------------------


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _sections() -> list[tuple[str, type]]:
    out: list[tuple[str, type]] = [("", Settings)]
    for f in dataclasses.fields(Settings):
        if _is_section(f):
            out.append((f.name, _resolve(Settings, f)))
    return out


def _is_section(f: dataclasses.Field, cls: type = Settings) -> bool:
    return dataclasses.is_dataclass(_resolve(cls, f))


def _resolve(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def _env_name(section: str, key: str) -> str:
    return (ENV_PREFIX + (f"{section}_{key}" if section else key)).upper()


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    known: dict[str, tuple[str, str]] = {ENV_PREFIX + "CONFIG": ("", "")}
    for prefix, cls in _sections():
        for f in dataclasses.fields(cls):
            if not _is_section(f, cls):
                known[_env_name(prefix, f.name)] = (prefix, f.name)
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        if name not in known:
            raise ConfigError(f"unknown environment variable {name}")
        section, key = known[name]
        if key:
            (out.setdefault(section, {}) if section else out)[key] = _EnvString(value)
    return out


class _EnvString(str):
    """A raw string from the environment, parsed according to the target field's type."""


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"setting {prefix.rstrip('.')!r} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown setting {prefix}{key!s}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name], key + ".")
        else:
            kwargs[f.name] = _coerce(data[f.name], tp, key)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:  # noqa: C901 - one branch per type
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, _EnvString) and value == ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    raw = isinstance(value, _EnvString)
    try:
        if tp is bool:
            if raw:
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise TypeError
            return value
        if tp in (int, float):
            if isinstance(value, bool) or not (raw or isinstance(value, (int, float))):
                raise TypeError
            if tp is int and not raw and not isinstance(value, int):
                raise TypeError
            return tp(value)
        if tp is str:
            if not isinstance(value, str):
                raise TypeError
            return str(value)
        if tp is Path:
            if not isinstance(value, str):
                raise TypeError
            return Path(value)
        if origin is list:
            items = [v.strip() for v in value.split(",") if v.strip()] if raw else value
            if not isinstance(items, list):
                raise TypeError
            return [_coerce(_EnvString(v) if raw else v, args[0], key) for v in items]
        if origin is dict:
            if raw:
                pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
                if any(len(p) != 2 for p in pairs):
                    raise ValueError(value)
                return {k.strip(): v.strip() for k, v in pairs}
            if not isinstance(value, Mapping):
                raise TypeError
            return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {key} has an invalid value {value!r} (expected {_type_name(tp)})"
        ) from None
    raise ConfigError(f"setting {key} has an unsupported type")  # pragma: no cover


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list (comma-separated in env)"
    if origin is dict:
        return "a table (model=task,... in env)"
    return getattr(tp, "__name__", str(tp))


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


def valid_task_name(name: str) -> bool:
    """Task names are 1-64 characters of letters, digits, ``.``, ``_`` and ``-``."""
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "._-" for c in name) and name.isascii()


def _field_docs() -> dict[str, str]:
    """Attribute docstrings of the settings dataclasses, read from this module's source."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(__import__(__name__, fromlist=["x"])))
    section_of = {"Settings": ""} | {cls.__name__: prefix for prefix, cls in _sections() if prefix}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name not in section_of:
            continue
        prefix = section_of[node.name]
        last: str | None = None
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                last = stmt.target.id
            elif (
                last
                and isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                docs[f"{prefix}.{last}" if prefix else last] = stmt.value.value.strip()
                last = None
    return docs
