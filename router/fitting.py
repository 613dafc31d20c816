"""Fitting the calibrated policy with scikit-learn (imported here only, when fitting)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ISOTONIC_FOLDS = 3
BLEND = 0.05
"""Share of the logistic probability mixed into the isotonic value (``CalibratedPolicy.blend``):
enough that no two answers the logistic regression ranks apart share a confidence, too little
to move a calibrated value by more than a few points."""
MIN_PER_LABEL_LOGISTIC = 2
MIN_PER_LABEL_ISOTONIC = 5


def fit_calibrated(
    vectors: Sequence[Sequence[float]],
    labels: Sequence[bool],
    *,
    min_samples: int = 10,
    isotonic_min_samples: int = 100,
) -> dict[str, Any]:
    """Keyword arguments for :class:`router.policy.CalibratedPolicy`.

    Chooses the method from the data: ``prior`` when there are fewer than ``min_samples``
    examples or fewer than two of either label, ``logistic_isotonic`` from
    ``isotonic_min_samples`` examples with at least five of each label, ``logistic`` between.
    The isotonic map is fitted on out-of-fold logistic scores, then the logistic regression is
    refitted on everything.
    """
    if len(vectors) != len(labels):
        raise ValueError(f"{len(vectors)} feature vectors but {len(labels)} labels")
    n, agreed = len(labels), sum(labels)
    minority = min(agreed, n - agreed)
    counts = {"n_samples": n, "n_agreed": agreed, "prior": (agreed + 1) / (n + 2)}
    if n < min_samples or minority < MIN_PER_LABEL_LOGISTIC:
        return {"method": "prior", **counts}

    import numpy as np

    x = np.asarray(vectors, dtype=float)
    y = np.asarray(labels, dtype=bool)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (x - mean) / scale
    model = _logistic(z, y)
    params: dict[str, Any] = {
        "method": "logistic",
        "mean": tuple(float(v) for v in mean),
        "scale": tuple(float(v) for v in scale),
        "coef": tuple(float(v) for v in model.coef_[0]),
        "intercept": float(model.intercept_[0]),
        **counts,
    }
    if n >= isotonic_min_samples and minority >= MIN_PER_LABEL_ISOTONIC:
        xs, ys = _isotonic_map(z, y)
        params.update(method="logistic_isotonic", isotonic_x=xs, isotonic_y=ys, blend=BLEND)
    return params


def _logistic(z: Any, y: Any) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=1000).fit(z, y)


def _isotonic_map(z: Any, y: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Smoothed isotonic map from logistic probabilities to P(agree), fitted on out-of-fold
    probabilities (folds stratified by label, assigned round-robin, so it is deterministic).

    Isotonic regression gives a step function: one value per block of neighbouring
    probabilities, so every answer of a block (often all the confident ones) would get the
    same confidence. The map goes instead through each block's centre (the mean probability
    of its answers, the block's agreement rate), linear in between: it rises across a block."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    folds = np.empty(len(y), dtype=int)
    for label in (True, False):
        idx = np.flatnonzero(y == label)
        folds[idx] = np.arange(len(idx)) % ISOTONIC_FOLDS
    oof = np.empty(len(y), dtype=float)
    for k in range(ISOTONIC_FOLDS):
        held = folds == k
        model = _logistic(z[~held], y[~held])
        oof[held] = model.predict_proba(z[held])[:, 1]
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(oof, y)
    fitted = iso.predict(oof)
    blocks = sorted({float(v) for v in fitted})
    centres = [float(oof[fitted == value].mean()) for value in blocks]
    return tuple(centres), tuple(blocks)
