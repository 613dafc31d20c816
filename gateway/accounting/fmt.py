"""Number formatting shared by the dashboard and ``understudy report``."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence


def usd(value: float) -> str:
    """``$1,234.57``; small amounts keep their significant digits (``$0.0042``)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value == 0:
        return "$0.00"
    if value < 0.001:
        return f"{sign}${value:.5f}"
    if value < 1:
        return f"{sign}${value:.3f}"
    return f"{sign}${value:,.2f}"


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def count(value: int) -> str:
    return f"{value:,}"


def utc(ts: float | None, with_time: bool = True) -> str:
    if ts is None:
        return "-"
    fmt = "%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


def short_time(ts: float | None) -> str:
    """``Nov 24 05:36`` (UTC)."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%b %d %H:%M")


def axis_usd(ticks: Sequence[float]) -> list[str]:
    """Labels of evenly spaced dollar ticks: the fewest decimals (cents at least below $100,
    whole dollars above) that tell every tick apart and show each exactly, so $0.002 steps
    read $0.000, $0.002, $0.004 and never $0.00, $0.00, $0.01."""
    top = max((abs(t) for t in ticks), default=0.0)
    least = 0 if top >= 100 else 2
    for decimals in range(least, 9):
        labels = [_dollars(t, decimals) for t in ticks]
        exact = all(abs(round(t, decimals) - t) < 1e-12 for t in ticks)
        if exact and len(set(labels)) == len(labels):
            return labels
    return [_dollars(t, 8) for t in ticks]


def _dollars(value: float, decimals: int) -> str:
    sign = "-" if value < 0 and round(abs(value), decimals) > 0 else ""
    return f"{sign}${abs(value):,.{decimals}f}"


def duration(seconds: float) -> str:
    """``7d``, ``24h``, ``30m``, ``45s`` for a whole unit; else the two largest units
    (``24h 22m``, ``3d 4h``, ``10m 55s``), never a rounded ``1.0d`` for a day and 22 minutes.
    Hours up to two days."""
    seconds = max(0, round(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    if 86400 <= seconds < 2 * 86400:
        units = units[1:]  # 24h, 25h 10m: not 1d, 1d 1h
    for (unit, size), (small, small_size) in itertools.pairwise(units):
        if seconds >= size:
            if seconds % size == 0:
                return f"{seconds // size}{unit}"
            return f"{seconds // size}{unit} {seconds % size // small_size}{small}"
    return f"{seconds}s"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
