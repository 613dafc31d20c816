"""Settings: one typed object, read once at start-up from defaults, a TOML file and env vars.

Precedence (lowest first): defaults, the config file (``--config FILE``, ``$UNDERSTUDY_CONFIG``
or ``./understudy.toml`` when present), ``UNDERSTUDY_*`` environment variables, command-line
flags. Top-level keys map to ``UNDERSTUDY_<KEY>``; keys of a section map to
``UNDERSTUDY_<SECTION>_<KEY>`` (``teacher.api_key`` is ``UNDERSTUDY_TEACHER_API_KEY``), and so
on for nested sections (``distiller.train.epochs`` is ``UNDERSTUDY_DISTILLER_TRAIN_EPOCHS``).
An environment name is matched against the known setting paths, so underscores inside key
names are never ambiguous. An unknown key in the file or an unknown ``UNDERSTUDY_*`` variable
is an error naming the key. Reading is :mod:`understudy.config_reader`'s; each section checks
its own values beside its code (``validate``); this module assembles the tree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from understudy.config_reader import (
    ENV_PREFIX,
    ConfigError,
    build,
    env_name,
    env_names,
    field_docs,
    from_env,
    merge,
    put,
    read_toml,
    settings_of,
)
from understudy.distiller.config import DistillConfig
from understudy.gateway.accounting.prices import parse_price
from understudy.gateway.config import GatewayConfig

DEFAULT_CONFIG_FILE = "understudy.toml"
FILE_ONLY = frozenset({"distiller.tasks"})
"""Settings that only a config file can set (nested tables have no environment form)."""


@dataclass
class Settings(GatewayConfig):
    """Everything ``understudy`` reads: the gateway's settings and the distiller's."""

    distiller: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        # distiller.gates.quality_target is an alias: unset, it follows router.quality_target.
        if self.distiller.gates.quality_target is None:
            self.distiller.gates.quality_target = self.router.quality_target

    def validate(self) -> None:
        """Every section's own checks; raise ``ValueError`` naming the first bad setting."""
        super().validate()
        self.distiller.validate()
        for model, text in self.costs.prices.items():
            try:
                parse_price(text)
            except ValueError as exc:
                raise ValueError(f"costs.prices.{model}: {exc}") from None


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
    merge(data, from_env(env, env_names(Settings, FILE_ONLY), FILE_ONLY))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            put(data, dotted.split("."), value)
    settings = build(Settings, data)
    _one_quality_target(settings, data)
    try:
        settings.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return settings


def _one_quality_target(settings: Settings, data: Mapping[str, Any]) -> None:
    """``router.quality_target`` is the quality target; ``distiller.gates.quality_target`` is
    its alias. Set alone, the alias sets both; set to another value than the router's, it is
    an error naming both."""
    gates = settings.distiller.gates
    alias_set = "quality_target" in data.get("distiller", {}).get("gates", {})
    if not alias_set:
        return
    if "quality_target" not in data.get("router", {}):
        settings.router.quality_target = gates.target
    elif gates.quality_target != settings.router.quality_target:
        raise ConfigError(
            f"distiller.gates.quality_target ({gates.quality_target:g}) differs from "
            f"router.quality_target ({settings.router.quality_target:g}): set "
            "router.quality_target only (the distiller fits the threshold with it)"
        )


def iter_setting_docs() -> list[tuple[str, str, str, str]]:
    """(dotted key, env var, default, description) for every setting, for docs and tests."""
    docs = field_docs(Settings)
    rows: list[tuple[str, str, str, str]] = []
    for dotted, f in settings_of(Settings):
        default = f.default_factory() if callable(f.default_factory) else f.default
        env = "" if dotted in FILE_ONLY else env_name(dotted)
        rows.append((dotted, env, repr(default), docs.get(dotted, "")))
    return rows
