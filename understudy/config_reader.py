"""Reading a tree of settings dataclasses from a TOML file and ``UNDERSTUDY_*`` variables.

Generic over the dataclasses: :mod:`gateway.settings` declares them and validates the result.
Every value is coerced to its field's type (environment strings parsed: ``1``/``true`` for
booleans, comma-separated lists, ``k=v,k2=v2`` tables); an unknown key is an error naming it.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from understudy.gateway.errors import ConfigError

ENV_PREFIX = "UNDERSTUDY_"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """Every settings dataclass with its dotted prefix, nested sections included."""
    out: list[tuple[str, type]] = [(prefix, cls)]
    for f in dataclasses.fields(cls):
        if is_section(f, cls):
            out.extend(sections(_resolve(cls, f), f"{prefix}.{f.name}" if prefix else f.name))
    return out


def is_section(f: dataclasses.Field, cls: type) -> bool:
    return dataclasses.is_dataclass(_resolve(cls, f))


def _resolve(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def env_name(section: str, key: str) -> str:
    return (ENV_PREFIX + (f"{section}_{key}" if section else key)).replace(".", "_").upper()


def from_env(
    env: Mapping[str, str], known: Mapping[str, str], file_only: frozenset[str]
) -> dict[str, Any]:
    """The ``UNDERSTUDY_*`` variables of ``env`` as a nested table (``known``: name to path)."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        if name not in known:
            hint = " (set in the config file only)" if _file_only_env(name, file_only) else ""
            raise ConfigError(f"unknown environment variable {name}{hint}")
        put(out, known[name].split("."), EnvString(value))
    return out


def _file_only_env(name: str, file_only: frozenset[str]) -> bool:
    return any(name.startswith(env_name("", dotted)) for dotted in file_only)


def put(data: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


class EnvString(str):
    """A raw string from the environment, parsed according to the target field's type."""


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
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
            kwargs[f.name] = build(tp, data[f.name], key + ".")
        else:
            kwargs[f.name] = _coerce(data[f.name], tp, key)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:  # noqa: C901 - one branch per type
    if tp is Any:  # free-form tables (per-task overrides), checked where they are applied
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, EnvString) and value == ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    raw = isinstance(value, EnvString)
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
            return [_coerce(EnvString(v) if raw else v, args[0], key) for v in items]
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


def class_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of one settings dataclass (field name to text), from its source."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # a section may extend another (Settings, GatewayConfig)
        if dataclasses.is_dataclass(base):
            docs.update(_own_docs(base))
    return docs


def _own_docs(cls: type) -> dict[str, str]:
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    node = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(node, ast.ClassDef)
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
            docs[last] = " ".join(stmt.value.value.split())
            last = None
    return docs
