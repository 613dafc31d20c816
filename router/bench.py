"""Micro-benchmark of one routing decision (``python -m understudy.router.bench``)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from understudy.router.decision import Router
from understudy.router.features import Features, extract_features
from understudy.router.policy import CalibratedPolicy
from understudy.router.threshold import choose_threshold

SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "intent",
        "schema": {
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": ["refund", "lost_card", "balance"]},
                "urgency": {"type": "integer", "minimum": 0, "maximum": 3},
            },
            "required": ["intent", "urgency"],
            "additionalProperties": False,
        },
    },
}


def synthetic_answers(n: int, seed: int = 0) -> tuple[list[Features], list[bool]]:
    """Answers whose agreement grows with their mean token log-probability."""
    rng = random.Random(seed)
    features, labels = [], []
    for _ in range(n):
        quality = rng.random()
        length = rng.randint(2, 12)
        logprobs = [min(0.0, rng.gauss(-2.5 * (1 - quality), 0.3)) for _ in range(length)]
        alternatives = sorted((logprobs[0], logprobs[0] - rng.expovariate(0.5)), reverse=True)
        features.append(extract_features(logprobs, alternatives, text="refund"))
        labels.append(rng.random() < 0.3 + 0.7 * quality)
    return features, labels


def bench_decision_time(n_fit: int = 2000, n_calls: int = 20000) -> dict[str, Any]:
    """Microseconds per call of ``Router.decide`` with a fitted ``logistic_isotonic`` policy,
    and of feature extraction plus decision for an 8-token label answer and a JSON answer
    checked against a schema."""
    features, labels = synthetic_answers(n_fit)
    policy = CalibratedPolicy.fit(features, labels)
    choice = choose_threshold(policy.scores(features), labels, quality_target=0.9)
    router = Router(policy, choice)
    logprobs = [-0.01, -0.2, -0.05, -0.3, -0.02, -0.01, -0.4, -0.1]
    alternatives = [-0.01, -4.6, -5.3, -6.0, -7.1]
    json_text = '{"intent": "refund", "urgency": 2}'

    def label_call() -> None:
        router.decide(extract_features(logprobs, alternatives, "card_lost", "stop"))

    def json_call() -> None:
        router.decide(
            extract_features(logprobs, alternatives, json_text, "stop", SCHEMA_FORMAT, None)
        )

    sample = features[0]
    return {
        "policy_method": policy.method,
        "decide_us": _time_per_call(lambda: router.decide(sample), n_calls),
        "extract_and_decide_label_us": _time_per_call(label_call, n_calls),
        "extract_and_decide_json_schema_us": _time_per_call(json_call, n_calls),
    }


def _time_per_call(call: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 1000)):
        call()
    start = time.perf_counter()
    for _ in range(n):
        call()
    return round((time.perf_counter() - start) / n * 1e6, 2)


if __name__ == "__main__":
    for key, value in bench_decision_time().items():
        print(f"{key:36} {value}")
