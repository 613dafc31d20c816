"""The router's settings (``[router]``): the quality target, shadow sampling and drift."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RouterConfig:
    """How the router decides between the student and the teacher."""

    quality_target: float = 0.97
    """Required agreement with the teacher on student-served traffic (used when fitting)."""
    confidence: float = 0.95
    """Confidence of the lower bound used to check the quality target."""
    threshold_mode: str = "calibrated"
    """``calibrated`` (the threshold stored with the student) or ``fixed`` (``fixed_threshold``)."""
    fixed_threshold: float = 0.9
    """Threshold on P(agree) in fixed mode."""
    shadow_rate: float = 0.05
    """Share of student-served requests also sent to the teacher, off the response path."""
    audit_rate: float = 0.03
    """Share of all requests a routed student answers that the teacher answers instead,
    chosen uniformly at random whatever the router decided: the student's attempt is kept
    beside the teacher's answer (a ``student_attempts`` row of kind ``audit``) and the
    distiller calibrates and judges on these, an unbiased sample of traffic. 0: none."""
    sampling_seed: int | None = None
    """Seed of the shadow and audit draws of each serving student (unset: random). The same
    seed and the same requests in the same order give the same draws."""
    drift_margin: float = 0.03
    """Live agreement this far below the target sends the task back to the teacher."""
    drift_window: int = 200
    """Shadow comparisons the live agreement is computed over."""
    drift_min_samples: int = 30
    """Shadow comparisons needed before drift can trip."""
    drift_confidence: float = 0.95
    """Drift trips only when live agreement is below ``quality_target - drift_margin`` with
    this confidence (the one-sided Wilson upper bound of the window's agreement is below it),
    so noise over a few dozen comparisons does not send a good student back; 0.5 compares the
    plain share."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``router.*`` setting with an impossible value."""
        checks = [
            (0 < self.quality_target <= 1, "router.quality_target must be in (0, 1]"),
            (0 <= self.shadow_rate <= 1, "router.shadow_rate must be in [0, 1]"),
            (0 <= self.audit_rate <= 1, "router.audit_rate must be in [0, 1]"),
            (self.drift_margin >= 0, "router.drift_margin must be >= 0"),
            (self.drift_window >= 1, "router.drift_window must be >= 1"),
            (0.5 <= self.drift_confidence < 1, "router.drift_confidence must be in [0.5, 1)"),
            (
                1 <= self.drift_min_samples <= self.drift_window,
                "router.drift_min_samples must be between 1 and router.drift_window",
            ),
            (
                self.threshold_mode in ("calibrated", "fixed"),
                "router.threshold_mode must be calibrated or fixed",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
