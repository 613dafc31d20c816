"""Numbers printed so that a comparison reads as it came out.

A gate's value and its threshold are printed with as many decimals as it takes to tell them
apart (3 at least, 6 at most): ``-0.0203`` against ``-0.020`` prints ``-0.0203 < -0.0200``, never
``-0.020 < -0.020``.
"""

from __future__ import annotations

MIN_DECIMALS = 3
MAX_DECIMALS = 6


def distinct(value: float | None, other: float | None, *, signed: bool = False) -> tuple[str, str]:
    """``value`` and ``other`` as text with the same decimals, the fewest (from 3) at which two
    different numbers print differently; ``-`` for None. ``signed`` prints ``+`` on positives."""
    decimals = MIN_DECIMALS
    if value is not None and other is not None and value != other:
        while decimals < MAX_DECIMALS and _fmt(value, decimals, signed) == _fmt(
            other, decimals, signed
        ):
            decimals += 1
    return _fmt(value, decimals, signed), _fmt(other, decimals, signed)


def _fmt(value: float | None, decimals: int, signed: bool) -> str:
    if value is None:
        return "-"
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    return text.replace("-0." + "0" * decimals, "0." + "0" * decimals)  # no "-0.000"
