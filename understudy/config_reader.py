"""Reading a tree of settings dataclasses from tables, ``UNDERSTUDY_*`` variables and overrides.

Generic over the dataclasses, and a leaf: it imports no part of Understudy, so both the
composition root (:mod:`understudy.settings`) and the distiller (per-task overrides) use it.
A walk over the dataclasses' fields refuses an unknown key by its full dotted name; msgspec's
``convert`` turns each value into its field's type (strictly for values from a file or code;
leniently for environment strings, after ``1``/``true``/``yes``/``on`` booleans,
comma-separated lists and ``k=v,k2=v2`` tables are parsed). Each section checks its own
values (its ``validate``); the field docs are the attribute docstrings below each field.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

ENV_PREFIX = "UNDERSTUDY_"

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid settings; raised at start-up, never while serving."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "", base: T | None = None) -> T:
    """``cls`` from a table; the fields it leaves out keep ``base``'s values (else defaults).

    ``prefix`` is the table's dotted place in the settings (``"distiller."``): an unknown key
    or a value of the wrong type raises :class:`ConfigError` naming the full key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"setting {prefix.rstrip('.')!r} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown setting {prefix}{key!s}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[name] = build(tp, value, f"{prefix}{name}.", getattr(base, name, None))
        else:
            values[name] = _convert(value, tp, prefix + name)
    if base is None:
        return cls(**values)
    return dataclasses.replace(base, **values)  # type: ignore[type-var]


class EnvString(str):
    """A raw string from the environment, parsed according to the target field's type."""


def _convert(value: Any, tp: Any, key: str) -> Any:
    try:
        if isinstance(value, EnvString):
            return msgspec.convert(_parse_env(value, tp), tp, strict=False, dec_hook=_dec_hook)
        return msgspec.convert(value, tp, dec_hook=_dec_hook)
    except ValueError:  # msgspec.ValidationError is one
        raise ConfigError(
            f"setting {key} has an invalid value {value!r} (expected {_type_name(tp)})"
        ) from None


def _parse_env(value: str, tp: Any) -> Any:
    """An environment string in the shape ``tp`` needs before conversion."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        if value == "":
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if tp is bool:
        lowered = value.strip().lower()
        if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ValueError(value)
        return lowered in ("1", "true", "yes", "on")
    if tp in (int, float):
        return value.strip()
    if origin is list:
        return [v.strip() for v in value.split(",") if v.strip()]
    if origin is dict:
        pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(value)
        return {k.strip(): v.strip() for k, v in pairs}
    return value


def _dec_hook(tp: Any, value: Any) -> Any:
    if tp is Path and isinstance(value, str | Path):
        return Path(value)
    raise TypeError(f"expected {tp}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list (comma-separated in env)"
    if origin is dict:
        return "a table (model=task,... in env)"
    return getattr(tp, "__name__", str(tp))


def sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """Every settings dataclass with its dotted prefix, nested sections included."""
    out: list[tuple[str, type]] = [(prefix, cls)]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(sections(hints[f.name], f"{prefix}.{f.name}" if prefix else f.name))
    return out


def settings_of(cls: type) -> list[tuple[str, dataclasses.Field[Any]]]:
    """Every leaf setting (not a section) of a dataclass tree: its dotted name and field."""
    out: list[tuple[str, dataclasses.Field[Any]]] = []
    for prefix, section in sections(cls):
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            if not dataclasses.is_dataclass(hints[f.name]):
                out.append((f"{prefix}.{f.name}" if prefix else f.name, f))
    return out


def env_name(dotted: str) -> str:
    """The variable a setting reads: ``teacher.api_key`` is ``UNDERSTUDY_TEACHER_API_KEY``."""
    return (ENV_PREFIX + dotted).replace(".", "_").upper()


def env_names(cls: type, file_only: frozenset[str]) -> dict[str, str]:
    """Every ``UNDERSTUDY_*`` variable a setting of ``cls`` reads, to its dotted name."""
    names: dict[str, str] = {}
    for dotted, _ in settings_of(cls):
        if dotted in file_only:
            continue
        name = env_name(dotted)
        if name in names:  # pragma: no cover - a naming mistake in the dataclasses
            raise ConfigError(f"{dotted} and {names[name]} both read {name}")
        names[name] = dotted
    return names


def from_env(
    env: Mapping[str, str], known: Mapping[str, str], file_only: frozenset[str]
) -> dict[str, Any]:
    """The ``UNDERSTUDY_*`` variables of ``env`` as a nested table (``known``: name to path)."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        if name not in known:
            file_only_name = any(name.startswith(env_name(dotted)) for dotted in file_only)
            hint = " (set in the config file only)" if file_only_name else ""
            raise ConfigError(f"unknown environment variable {name}{hint}")
        put(out, known[name].split("."), EnvString(value))
    return out


def put(data: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def field_docs(cls: type) -> dict[str, str]:
    """Dotted setting name (``train.epochs``) to its attribute docstring, for a whole tree.

    A section may extend another (``Settings`` extends ``GatewayConfig``): the docstrings of
    the base classes' fields count too.
    """
    docs: dict[str, str] = {}
    for prefix, section in sections(cls):
        for name, text in _class_docs(section).items():
            docs[f"{prefix}.{name}" if prefix else name] = text
    return docs


def _class_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(_own_docs(base))
    return docs


def _own_docs(cls: type) -> dict[str, str]:
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
