"""Shadow sampling: which served requests are also sent to the teacher for comparison."""

from __future__ import annotations

import random


class ShadowSampler:
    """Says yes to a ``rate`` share of calls, at random; the same ``seed`` gives the same
    sequence of answers."""

    def __init__(self, rate: float, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.rate = float(rate)
        self._random = random.Random(seed)

    def should_shadow(self) -> bool:
        """True for about ``rate`` of calls (never for 0, always for 1)."""
        return self._random.random() < self.rate
