"""Server-rendered SVG charts: no JavaScript, no external assets. Every text is escaped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#16a34a", "#d97706", "#9333ea", "#db2777", "#0891b2", "#65a30d", "#dc2626")
GRID = "#e5e7eb"
AXIS_TEXT = "#6b7280"


def color_for(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass
class Series:
    name: str
    color: str
    values: Sequence[float | None]
    width: float = 2.0


@dataclass
class Frame:
    """The plot area inside an SVG of ``width`` x ``height``."""

    width: int = 660
    height: int = 240
    left: int = 64
    right: int = 30
    top: int = 12
    bottom: int = 28
    cls: str = ""
    """A class beside ``chart`` (the page shows a ``narrow`` frame on phones instead)."""

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom


def line_chart(
    xs: Sequence[float],
    series: Sequence[Series],
    *,
    y_format: Callable[[float], str],
    label: str,
    y_min: float | None = None,
    y_max: float | None = None,
    target: float | None = None,
    frame: Frame | None = None,
    tick_labels: Callable[[Sequence[float]], list[str]] | None = None,
) -> str:
    """Lines over time (``xs`` are epoch seconds, one per value); ``target`` draws a dashed
    reference line. A ``None`` value leaves a gap. ``y_format`` labels a point;
    ``tick_labels`` labels the axis ticks all together (default: ``y_format`` each)."""
    f = frame or Frame()
    values = [v for s in series for v in s.values if v is not None]
    lo = min([*values, 0.0]) if y_min is None else y_min
    hi = max([*values, lo + 1e-9]) if y_max is None else y_max
    if target is not None:
        hi = max(hi, target)
    lo, hi, ticks = _nice_range(lo, hi)
    n = max(len(xs), 2)

    def px(i: int) -> float:
        return f.left + f.plot_w * (i / (n - 1))

    def py(v: float) -> float:
        return f.top + f.plot_h * (1 - (v - lo) / (hi - lo))

    parts = [_open(f, label)]
    names = tick_labels(ticks) if tick_labels else [y_format(t) for t in ticks]
    for t, name in zip(ticks, names, strict=True):
        y = py(t)
        parts.append(
            f'<line x1="{f.left}" y1="{y:.1f}" x2="{f.width - f.right}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{f.left - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{AXIS_TEXT}">{escape(name)}</text>'
        )
    parts += _x_labels(xs, px, f)
    if target is not None:
        y = py(target)
        parts.append(
            f'<line x1="{f.left}" y1="{y:.1f}" x2="{f.width - f.right}" y2="{y:.1f}" '
            f'stroke="#111827" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{f.width - f.right}" y="{y - 5:.1f}" text-anchor="end" font-size="11" '
            f'fill="#111827">target {escape(y_format(target))}</text>'
        )
    for s in series:
        parts += _polyline(s, px, py, y_format)
    parts.append("</svg>")
    return "".join(parts)


def bullet(value: float | None, target: float | None, *, width: int = 220, ok: bool) -> str:
    """A 0-100% bar with a target tick: green when ``ok``, red otherwise, grey without data."""
    h = 14
    fill = "#9ca3af" if value is None else ("#16a34a" if ok else "#dc2626")
    w = 0 if value is None else max(0.0, min(1.0, value)) * width
    label = "no data" if value is None else f"{value * 100:.1f}%"
    parts = [
        f'<svg class="bullet" width="{width}" height="{h + 4}" viewBox="0 0 {width} {h + 4}" '
        f'role="img" aria-label="{escape(label)}">',
        f'<rect x="0" y="2" width="{width}" height="{h}" rx="3" fill="#f3f4f6"/>',
        f'<rect x="0" y="2" width="{w:.1f}" height="{h}" rx="3" fill="{fill}"/>',
    ]
    if target is not None:
        x = max(0.0, min(1.0, target)) * width
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{h + 4}" stroke="#111827" '
            f'stroke-width="2"><title>target {target * 100:.1f}%</title></line>'
        )
    parts.append("</svg>")
    return "".join(parts)


# -- internals ---------------------------------------------------------------------------


def _open(f: Frame, label: str) -> str:
    return (
        f'<svg class="chart {f.cls}" viewBox="0 0 {f.width} {f.height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="inherit">'
    )


def _polyline(
    s: Series, px: Callable[[int], float], py: Callable[[float], float], fmt: Callable
) -> list[str]:
    out: list[str] = []
    run: list[str] = []
    points = list(s.values)
    for i, v in enumerate(points):
        if v is None:
            out += _flush(run, s)
            run = []
            continue
        run.append(f"{px(i):.1f},{py(v):.1f}")
    out += _flush(run, s)
    for i, v in enumerate(points):  # hover labels on every point
        if v is not None:
            out.append(
                f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="2.5" fill="{s.color}">'
                f"<title>{escape(s.name)}: {escape(fmt(v))}</title></circle>"
            )
    return out


def _flush(run: list[str], s: Series) -> list[str]:
    if not run:
        return []
    return [
        f'<polyline points="{" ".join(run)}" fill="none" stroke="{s.color}" '
        f'stroke-width="{s.width}" stroke-linejoin="round" stroke-linecap="round"/>'
    ]


def _x_labels(xs: Sequence[float], px: Callable[[int], float], f: Frame) -> list[str]:
    if not xs:
        return []
    span = xs[-1] - xs[0]
    fmt = "%H:%M" if span <= 2 * 86400 else "%b %d"
    count = min(len(xs), max(3, min(6, int(f.plot_w // 90))))
    step = max(1, (len(xs) - 1) // max(count - 1, 1))
    out = []
    y = f.height - 8
    for i in range(0, len(xs), step):
        label = dt.datetime.fromtimestamp(xs[i], dt.UTC).strftime(fmt)
        x = px(i)
        anchor = "end" if x > f.width - f.right - 25 else "middle"  # inside the frame
        out.append(
            f'<text x="{x:.1f}" y="{y}" text-anchor="{anchor}" font-size="11" '
            f'fill="{AXIS_TEXT}">{escape(label)}</text>'
        )
    return out


def _nice_range(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """Round bounds and about four evenly spaced ticks."""
    if hi - lo <= 0:
        hi = lo + 1
    raw = (hi - lo) / 4
    magnitude = 10 ** _floor_log10(raw)
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = (lo // step) * step
    end = -((-hi) // step) * step
    ticks = []
    t = start
    while t <= end + step / 2:
        ticks.append(round(t, 10))
        t += step
    return start, end, ticks


def _floor_log10(x: float) -> int:
    import math

    return math.floor(math.log10(x)) if x > 0 else 0
