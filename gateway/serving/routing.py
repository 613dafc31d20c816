"""The serving side of routing: one :class:`TaskRouter` per serving student.

It turns the :class:`~understudy.router.RouterSpec` stored with a model version (calibrated
policy, chosen threshold, agreement metric) into decisions, and holds the live state that
belongs to serving: the shadow sampler and the live agreement monitor. The decision logic
itself lives in ``router/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from understudy.router import (
    AgreementMonitor,
    Router,
    RouterSpec,
    ShadowSampler,
    answers_agree,
    extract_features,
)
from understudy.router.config import RouterConfig
from understudy.student.base import StudentAnswer, StudentRequest
from understudy.student.classical import fold_of, prompt_text


@dataclass
class Judgement:
    serve: bool
    confidence: float
    reason: str
    features: dict[str, Any] = field(default_factory=dict)


class TaskRouter:
    def __init__(self, spec: RouterSpec | Mapping[str, Any], settings: RouterConfig) -> None:
        """``spec``: the router stored with the model version (or its stored dict)."""
        spec = spec if isinstance(spec, RouterSpec) else RouterSpec.from_dict(spec)
        self.spec = spec
        self.settings = settings
        self.kind = spec.kind
        self.quality_target = (
            spec.quality_target if spec.quality_target is not None else settings.quality_target
        )
        if settings.threshold_mode == "fixed" or spec.threshold is None:
            self.router = Router(spec.policy, fixed_threshold=settings.fixed_threshold)
        else:
            self.router = Router(spec.policy, spec.threshold)
        seed = settings.sampling_seed
        self.sampler = ShadowSampler(settings.shadow_rate, seed)
        self.auditor = ShadowSampler(settings.audit_rate, None if seed is None else seed + 1)
        self.monitor = AgreementMonitor(
            self.quality_target,
            settings.drift_margin,
            settings.drift_window,
            settings.drift_min_samples,
            settings.drift_confidence,
        )

    def judge(
        self,
        answer: StudentAnswer,
        body: Mapping[str, Any],
        tool_calls: Sequence[Mapping[str, Any]] | None = None,
        request: StudentRequest | None = None,
    ) -> Judgement:
        """``body``'s ``response_format`` and ``tools`` (chat's shape) and the answer's
        ``tool_calls``, if it makes any, feed the validity checks. ``request`` is what the
        student was asked (by default ``body``'s chat messages or prompt): a policy with label
        rates per fold scores the answer with the rates of the fold of its text
        (:func:`~understudy.student.classical.prompt_text`), the one the distiller gives the
        same text."""
        first_alternatives = (
            [alt.logprob for alt in answer.top_logprobs[0]]
            if (answer.top_logprobs and answer.top_logprobs[0])
            else []
        )
        folds = len(getattr(self.router.policy, "fold_rates", ()))
        fold = None
        if folds:  # the text is read only for a policy that needs it
            asked = (
                (request.messages, request.prompt)
                if request is not None
                else (body.get("messages"), body.get("prompt"))
            )
            fold = fold_of(prompt_text(*asked), folds)
        features = extract_features(
            fold=fold,
            token_logprobs=answer.logprobs,
            first_token_alternatives=first_alternatives,
            text=answer.text,
            finish_reason=answer.finish_reason,
            response_format=body.get("response_format"),
            tools=body.get("tools"),
            tool_calls=tool_calls,
        )
        decision = self.router.decide(features)
        return Judgement(decision.serve, decision.confidence, decision.reason, features.to_dict())

    def agree(self, student_text: str, teacher_text: str) -> bool:
        return answers_agree(student_text, teacher_text, self.kind)

    def should_shadow(self) -> bool:
        return self.sampler.should_shadow()

    def should_audit(self) -> bool:
        """Whether the teacher answers this request instead, as an audit (drawn for every
        request the student answered, before its verdict is acted on)."""
        return self.auditor.should_shadow()

    def record_shadow(self, agreed: bool) -> bool:
        """Record one shadow comparison; True when this one made the monitor trip."""
        was = self.monitor.tripped
        self.monitor.record(agreed)
        return self.monitor.tripped and not was

    @property
    def live_agreement(self) -> float:
        return self.monitor.agreement or 0.0


def build_router(spec: RouterSpec | Mapping[str, Any], settings: RouterConfig) -> TaskRouter:
    return TaskRouter(spec, settings)
