"""Confidence policies: features in, P(student agrees with teacher) out.

A policy is one method (:meth:`ConfidencePolicy.score`) behind an ABC, with a name registry so
a stored policy dict (``{"name": ..., ...}``) can be loaded back with :func:`load_policy`.
Scoring is plain Python over a handful of numbers; fitting (scikit-learn) lives in
:mod:`router.fitting` and is imported only when :meth:`CalibratedPolicy.fit` is called.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from understudy.router.features import FEATURE_NAMES, Features

FeatureInput = Features | Mapping[str, Any]
"""A :class:`Features` or its :meth:`Features.to_dict` form."""

POLICIES: dict[str, type[ConfidencePolicy]] = {}
"""Policy name to class; filled by :func:`register_policy`."""


def register_policy(name: str) -> Callable[[type[ConfidencePolicy]], type[ConfidencePolicy]]:
    """Class decorator: make a policy loadable by ``name``."""

    def add(cls: type[ConfidencePolicy]) -> type[ConfidencePolicy]:
        cls.name = name
        POLICIES[name] = cls
        return cls

    return add


def as_features(item: FeatureInput) -> Features:
    return item if isinstance(item, Features) else Features.from_dict(item)


class ConfidencePolicy(ABC):
    """Maps the features of one answer to a confidence in [0, 1]."""

    name: ClassVar[str] = ""

    @abstractmethod
    def score(self, features: Features) -> float:
        """The confidence that the student's answer agrees with the teacher's."""

    def scores(self, items: Sequence[FeatureInput]) -> list[float]:
        """:meth:`score` of each item (``Features`` or their dicts)."""
        return [self.score(as_features(item)) for item in items]

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form, with the registry ``name``."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfidencePolicy:
        """Inverse of :meth:`to_dict`."""


def load_policy(data: Mapping[str, Any]) -> ConfidencePolicy:
    """The policy a :meth:`ConfidencePolicy.to_dict` dict describes."""
    name = data.get("name")
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name].from_dict(data)


@register_policy("mean_probability")
class MeanProbabilityPolicy(ConfidencePolicy):
    """Uncalibrated: the geometric mean token probability, ``exp(mean_token_logprob)``.

    Used when no policy has been fitted; 0 for an answer without tokens.
    """

    def score(self, features: Features) -> float:
        if features.length_tokens == 0:
            return 0.0
        return math.exp(features.mean_token_logprob)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeanProbabilityPolicy:
        return cls()


METHODS = ("prior", "logistic", "logistic_isotonic")


@register_policy("calibrated")
@dataclass(frozen=True)
class CalibratedPolicy(ConfidencePolicy):
    """P(agree) fitted per task on labelled answers.

    ``method``:

    * ``logistic_isotonic``: logistic regression on standardised features, its output mapped
      through isotonic calibration (breakpoints ``isotonic_x`` -> ``isotonic_y``, linear in
      between, clipped at the ends), then mixed with a ``blend`` share of the logistic output
      itself, so the confidence keeps the logistic ranking where the isotonic map is flat
      (policies stored before ``blend`` existed have 0: their scores are unchanged);
    * ``logistic``: the logistic output alone (too few examples for isotonic);
    * ``prior``: labels all alike or too few to fit: the smoothed agreement rate
      ``(agreed + 1) / (n + 2)`` times the geometric mean token probability, so it never
      exceeds the rate and still ranks answers by their log-probability. With
      ``label_rates`` (a one-label student's answers), the rate is the one of the answer's
      label: how often the teacher gave that label when the student did, measured on
      examples other than those the threshold is certified on (``label_default`` for a label
      without one), times the first-token margin (the label's probability minus the next
      one's): a label the teacher often answers otherwise is served only when the student
      is far surer of it.
    """

    method: str
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    coef: tuple[float, ...] = ()
    intercept: float = 0.0
    isotonic_x: tuple[float, ...] = ()
    isotonic_y: tuple[float, ...] = ()
    prior: float = 0.5
    n_samples: int = 0
    n_agreed: int = 0
    blend: float = 0.0
    label_rates: tuple[tuple[str, float], ...] = ()
    """(label, rate) pairs; see ``prior`` above. Empty: not used."""
    label_default: float = 0.0
    """The rate of a label not in ``label_rates`` (or an answer that is no label)."""
    fold_rates: tuple[tuple[tuple[str, float], ...], ...] = ()
    """Per fold of the requests' texts, (label, rate) pairs measured on the held-out answers of
    the other folds; an answer whose :attr:`Features.fold` is set is scored with its fold's
    (``fold_defaults`` for a label without one) instead of ``label_rates``. Empty: not used."""
    fold_defaults: tuple[float, ...] = ()
    _rates: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    _fold_rates: tuple[dict[str, float], ...] = field(
        default=(), init=False, repr=False, compare=False
    )
    _weights: tuple[float, ...] = field(default=(), init=False, repr=False, compare=False)
    _bias: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {METHODS}")
        if self.method != "prior":
            size = len(FEATURE_NAMES)
            if not len(self.mean) == len(self.scale) == len(self.coef) == size:
                raise ValueError(f"mean, scale and coef need {size} values each")
            if any(s <= 0 for s in self.scale):
                raise ValueError("scale values must be positive")
        if len(self.isotonic_x) != len(self.isotonic_y):
            raise ValueError("isotonic_x and isotonic_y differ in length")
        if self.method == "logistic_isotonic" and not self.isotonic_x:
            raise ValueError("logistic_isotonic needs isotonic breakpoints")
        if not 0.0 <= self.blend < 1.0:
            raise ValueError("blend must be in [0, 1)")
        rates = dict(self.label_rates)
        if any(not 0.0 <= r <= 1.0 for r in [*rates.values(), self.label_default]):
            raise ValueError("label rates must be in [0, 1]")
        object.__setattr__(self, "_rates", rates)
        if len(self.fold_rates) != len(self.fold_defaults):
            raise ValueError("fold_rates and fold_defaults differ in length")
        folds = tuple(dict(pairs) for pairs in self.fold_rates)
        if any(not 0.0 <= r <= 1.0 for f in folds for r in [*f.values()]) or any(
            not 0.0 <= d <= 1.0 for d in self.fold_defaults
        ):
            raise ValueError("fold rates must be in [0, 1]")
        object.__setattr__(self, "_fold_rates", folds)
        # Standardisation folded into the weights: w.z + b with z = (x - mean) / scale.
        weights = tuple(c / s for c, s in zip(self.coef, self.scale, strict=True))
        bias = self.intercept - math.fsum(w * m for w, m in zip(weights, self.mean, strict=True))
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_bias", bias)

    @classmethod
    def fit(
        cls,
        features: Sequence[FeatureInput],
        labels: Sequence[bool],
        *,
        min_samples: int = 10,
        isotonic_min_samples: int = 100,
    ) -> CalibratedPolicy:
        """Fit on labelled answers (``labels[i]``: the student agreed with the teacher).

        Logistic regression needs ``min_samples`` answers with at least two of each label;
        isotonic calibration (on out-of-fold logistic scores) needs ``isotonic_min_samples``
        and five of each. Otherwise the ``prior`` method is used. Never raises on degenerate
        data.
        """
        from understudy.router.fitting import fit_calibrated

        vectors = [as_features(item).as_vector() for item in features]
        params = fit_calibrated(
            vectors,
            [bool(label) for label in labels],
            min_samples=min_samples,
            isotonic_min_samples=isotonic_min_samples,
        )
        return cls(**params)

    def logit(self, features: Features) -> float:
        """The logistic regression's log-odds for these features."""
        x = features.as_vector()
        return self._bias + math.fsum(w * v for w, v in zip(self._weights, x, strict=True))

    def score(self, features: Features) -> float:
        fold = features.fold
        if self.method == "prior" and self._fold_rates and fold is not None:
            rates, default = self._fold_rates[fold], self.fold_defaults[fold]
            return rates.get(features.label or "", default) * features.first_token_margin
        if self.method == "prior" and self.label_rates:
            rate = self._rates.get(features.label or "", self.label_default)
            return rate * features.first_token_margin
        if self.method == "prior":
            geometric = math.exp(features.mean_token_logprob) if features.length_tokens else 0.0
            return self.prior * geometric
        p = _sigmoid(self.logit(features))
        if self.method == "logistic":
            return p
        calibrated = _interpolate(p, self.isotonic_x, self.isotonic_y)
        return (1.0 - self.blend) * calibrated + self.blend * p

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "features": list(FEATURE_NAMES),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "isotonic_x": list(self.isotonic_x),
            "isotonic_y": list(self.isotonic_y),
            "prior": self.prior,
            "n_samples": self.n_samples,
            "n_agreed": self.n_agreed,
            "blend": self.blend,
            **({"label_rates": dict(self.label_rates)} if self.label_rates else {}),
            **({"label_default": self.label_default} if self.label_rates else {}),
            **(
                {
                    "fold_rates": [dict(pairs) for pairs in self.fold_rates],
                    "fold_defaults": list(self.fold_defaults),
                }
                if self.fold_rates
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibratedPolicy:
        """Inverse of :meth:`to_dict`; refuses a policy fitted on other features."""
        names = data.get("features", list(FEATURE_NAMES))
        if list(names) != list(FEATURE_NAMES):
            raise ValueError(f"policy was fitted on features {names}, not {list(FEATURE_NAMES)}")
        return cls(
            method=str(data["method"]),
            mean=_floats(data.get("mean")),
            scale=_floats(data.get("scale")),
            coef=_floats(data.get("coef")),
            intercept=float(data.get("intercept", 0.0)),
            isotonic_x=_floats(data.get("isotonic_x")),
            isotonic_y=_floats(data.get("isotonic_y")),
            prior=float(data.get("prior", 0.5)),
            n_samples=int(data.get("n_samples", 0)),
            n_agreed=int(data.get("n_agreed", 0)),
            blend=float(data.get("blend", 0.0)),
            label_rates=tuple(
                (str(k), float(v)) for k, v in sorted((data.get("label_rates") or {}).items())
            ),
            label_default=float(data.get("label_default", 0.0)),
            fold_rates=tuple(
                tuple((str(k), float(v)) for k, v in sorted(rates.items()))
                for rates in data.get("fold_rates") or ()
            ),
            fold_defaults=tuple(float(d) for d in data.get("fold_defaults") or ()),
        )


def _floats(values: Sequence[Any] | None) -> tuple[float, ...]:
    return tuple(float(v) for v in values or ())


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Piecewise-linear through (xs, ys), constant beyond the ends (``xs`` ascending)."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
