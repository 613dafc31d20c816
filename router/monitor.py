"""Live agreement between served student answers and their shadow teacher answers."""

from __future__ import annotations

from collections import deque

from understudy.router.threshold import upper_bound

_EPSILON = 1e-9
"""Slack so that agreement exactly at ``quality_target - margin`` does not trip."""


class AgreementMonitor:
    """Agreement over the last ``window`` shadow comparisons.

    It trips when it holds at least ``min_samples`` comparisons and their agreement is below
    ``quality_target - margin`` with ``confidence``: the one-sided Wilson upper bound of the
    window's agreement is below that floor, so a student that keeps its target is not sent back
    by the noise of a few dozen comparisons, while a real drop trips within a few dozen
    (``confidence = 0.5`` compares the plain share). It untrips when agreement recovers or
    after :meth:`reset`.
    """

    def __init__(
        self,
        quality_target: float,
        margin: float,
        window: int,
        min_samples: int,
        confidence: float = 0.95,
    ) -> None:
        if not 0 < quality_target <= 1:
            raise ValueError(f"quality_target must be in (0, 1], got {quality_target}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 1 <= min_samples <= window:
            raise ValueError(f"min_samples must be in [1, window], got {min_samples}")
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        self.quality_target = quality_target
        self.confidence = confidence
        self.margin = margin
        self.window = window
        self.min_samples = min_samples
        self._samples: deque[bool] = deque(maxlen=window)
        self._agreed = 0

    def record(self, agreed: bool) -> None:
        """Add one comparison (the oldest drops out once the window is full)."""
        if len(self._samples) == self.window:
            self._agreed -= self._samples[0]
        self._samples.append(bool(agreed))
        self._agreed += bool(agreed)

    def reset(self) -> None:
        """Forget every comparison (e.g. when a new student starts serving)."""
        self._samples.clear()
        self._agreed = 0

    @property
    def samples(self) -> int:
        """Comparisons in the window."""
        return len(self._samples)

    @property
    def agreement(self) -> float | None:
        """Share of the window that agreed; ``None`` before the first comparison."""
        return self._agreed / len(self._samples) if self._samples else None

    @property
    def upper_bound(self) -> float | None:
        """Upper confidence bound of live agreement; ``None`` before the first comparison."""
        if not self._samples:
            return None
        return upper_bound(self._agreed, len(self._samples), self.confidence)

    @property
    def tripped(self) -> bool:
        """True when live agreement is below ``quality_target - margin`` with ``confidence``."""
        if len(self._samples) < self.min_samples:
            return False
        bound = self.upper_bound
        return bound is not None and bound < self.quality_target - self.margin - _EPSILON
