"""The router stored with a model version: the task's kind, its quality target, the calibrated
policy and the certified threshold.

The distiller fits it (``distiller/calibrate.py``) and stores :meth:`RouterSpec.to_dict` in the
registry; serving reads it back with :meth:`RouterSpec.from_dict`. Reading is tolerant of what
older versions stored: unknown keys are ignored, and a missing or empty policy or threshold
means none (serving then uses the mean token probability and the fixed threshold).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from understudy.router.policy import CalibratedPolicy
from understudy.router.threshold import ThresholdChoice


@dataclass(frozen=True)
class RouterSpec:
    """How one model version is routed."""

    kind: str = "label"
    """The task's kind (``label``, ``json`` or ``text``): which agreement metric applies."""
    quality_target: float | None = None
    """The agreement the router was fitted for; ``None``: the serving settings' target."""
    policy: CalibratedPolicy | None = None
    """P(agree) fitted on the candidate's held-out answers; ``None`` when none was fitted."""
    threshold: ThresholdChoice | None = None
    """The threshold certified for ``quality_target``; ``None`` when none was chosen."""

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON stored in the registry (``policy`` and ``threshold`` only when set)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.quality_target is not None:
            out["quality_target"] = self.quality_target
        if self.policy is not None:
            out["policy"] = self.policy.to_dict()
        if self.threshold is not None:
            out["threshold"] = self.threshold.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RouterSpec:
        """Inverse of :meth:`to_dict`; ``None`` or ``{}`` (a model registered without a
        router) is the default spec."""
        data = data or {}
        target = data.get("quality_target")
        policy = data.get("policy")
        threshold = data.get("threshold")
        return cls(
            kind=str(data.get("kind", "label")),
            quality_target=None if target is None else float(target),
            policy=CalibratedPolicy.from_dict(policy) if policy else None,
            threshold=ThresholdChoice.from_dict(threshold) if threshold else None,
        )
