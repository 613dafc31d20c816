"""Number formatting shared by the dashboard and ``understudy report``."""

from __future__ import annotations

import datetime as dt


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


def axis_usd(value: float) -> str:
    """Axis labels: cents below $100, whole dollars above."""
    return f"${value:,.2f}" if abs(value) < 100 else f"${value:,.0f}"


def duration(seconds: float) -> str:
    """``7d``, ``12h``, ``30m``, ``45s``: the largest whole unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 86400:
        days = seconds / 86400
        return f"{days:.0f}d" if days >= 3 else f"{days:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{int(seconds // 60)}m {int(seconds % 60)}s"
    return f"{int(seconds)}s"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
