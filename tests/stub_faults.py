"""Misbehaviour of the stand-in teacher: fault specs, the runtime script, OpenAI error bodies.

A fault is written as a status (``500``, ``"429"``: an OpenAI-shaped error), ``"drop"`` (close
the connection without a response), ``"timeout"`` (answer only after ``timeout_s``),
``"cut:N"`` (send N stream events, or N bytes of a JSON body, then close the connection) or
``"stall:N"`` (send N events or bytes, then hang for ``timeout_s`` and close).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.stub_misbehave import Misbehaviour

# status -> (type, code, message), as OpenAI words them
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid value for 'messages'."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM). Please try again in 1s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error_body(
    status: int, message: str | None = None, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` for ``status``."""
    default_type = "invalid_request_error" if status < 500 else "server_error"
    err_type, default_code, default_message = _ERRORS.get(
        status, (default_type, None, f"HTTP {status}.")
    )
    return {
        "error": {
            "message": message or default_message,
            "type": err_type,
            "param": param,
            "code": code or default_code,
        }
    }


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour. ``after``: events (stream) or bytes (JSON) sent before a cut or stall;
    None means halfway."""

    kind: str  # "status" | "drop" | "timeout" | "cut" | "stall"
    status: int = 0
    after: int | None = None


def parse_fault(value: int | str) -> Fault:
    """``500``, ``"429"``, ``"drop"``, ``"timeout"``, ``"cut"``, ``"cut:3"``, ``"stall:2"``."""
    text = str(value).strip().lower()
    if text.isdigit():
        status = int(text)
        if not 400 <= status <= 599:
            raise ValueError(f"fault status must be 400-599, not {status}")
        return Fault("status", status)
    if text in ("drop", "timeout"):
        return Fault(text)
    kind, colon, count = text.partition(":")
    if kind in ("cut", "stall") and (not colon or count.isdigit()):
        return Fault(kind, after=int(count) if colon else None)
    raise ValueError(
        f"unknown fault {value!r}: use a status (400-599), drop, timeout, cut[:N] or stall[:N]"
    )


class RandomFaults:
    """Faults drawn per request from a seeded generator: ``{"p500": 0.05, "ptimeout": 0.02,
    "pcut": 0.01, "seed": 1}``; any ``p<fault>`` key works (``p429``, ``pdrop``, ``pstall``)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)
        self._rng = random.Random(spec.get("seed"))
        self._odds: list[tuple[float, Fault]] = []
        for key, p in spec.items():
            if key == "seed":
                continue
            if not key.startswith("p") or not isinstance(p, int | float) or not 0 <= p <= 1:
                raise ValueError(f"random faults: {key!r} must be p<fault> with a 0-1 value")
            self._odds.append((float(p), parse_fault(key[1:])))
        if sum(p for p, _ in self._odds) > 1:
            raise ValueError("random faults: the probabilities add up to more than 1")

    def draw(self) -> Fault | None:
        roll, total = self._rng.random(), 0.0
        for p, fault in self._odds:
            total += p
            if roll < total:
                return fault
        return None


@dataclass
class Controls:
    """The runtime script. Scripted faults and delays apply to the generation endpoints."""

    fail_next: deque[Fault] = field(default_factory=deque)  # consumed one per request
    fail_always: Fault | None = None  # every request, until reset
    delay_ms: float = 0.0  # before answering, on top of the server's latency
    chunk_delay_ms: float = 0.0  # between stream events
    cut_stream_after: int | None = None  # every stream: N events, then the connection closes
    random: RandomFaults | None = None
    timeout_s: float = 30.0  # how long "timeout" and "stall" hang
    misbehave_next: deque[Misbehaviour] = field(default_factory=deque)  # one per request
    misbehave: Misbehaviour | None = None  # every request, until reset
    accept_keys: tuple[str, ...] | None = None  # only these bearer keys; others get 401

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``changes`` (control keys, JSON values); raise ValueError on a bad one."""
        for key, value in changes.items():
            setter = getattr(self, f"_set_{key}", None)
            if setter is None:
                raise ValueError(f"unknown control {key!r}")
            setter(value)

    def _set_fail_next(self, value: Any) -> None:
        items = value if isinstance(value, list | tuple) else [value]
        self.fail_next = deque(parse_fault(v) for v in items)

    def _set_fail_always(self, value: Any) -> None:
        self.fail_always = None if value is None else parse_fault(value)

    def _set_delay_ms(self, value: Any) -> None:
        self.delay_ms = _non_negative("delay_ms", value)

    def _set_chunk_delay_ms(self, value: Any) -> None:
        self.chunk_delay_ms = _non_negative("chunk_delay_ms", value)

    def _set_timeout_s(self, value: Any) -> None:
        self.timeout_s = _non_negative("timeout_s", value)

    def _set_cut_stream_after(self, value: Any) -> None:
        self.cut_stream_after = (
            None if value is None else int(_non_negative("cut_stream_after", value))
        )

    def _set_misbehave_next(self, value: Any) -> None:
        from tests.stub_misbehave import parse_misbehaviour  # it uses this module's error_body

        items = value if isinstance(value, list | tuple) else [value]
        self.misbehave_next = deque(parse_misbehaviour(v) for v in items)

    def _set_misbehave(self, value: Any) -> None:
        from tests.stub_misbehave import parse_misbehaviour

        self.misbehave = None if value is None else parse_misbehaviour(value)

    def next_misbehaviour(self) -> Misbehaviour | None:
        """The scripted misbehaviour for the next generation request, if any."""
        if self.misbehave_next:
            return self.misbehave_next.popleft()
        return self.misbehave

    def _set_accept_keys(self, value: Any) -> None:
        self.accept_keys = None if value is None else tuple(str(k) for k in value)

    def _set_random(self, value: Any) -> None:
        self.random = None if value is None else RandomFaults(value)

    def next_fault(self, stream: bool) -> Fault | None:
        """The scripted fault for the next generation request, if any."""
        if self.fail_next:
            return self.fail_next.popleft()
        if self.fail_always is not None:
            return self.fail_always
        fault = self.random.draw() if self.random is not None else None
        if fault is None and stream and self.cut_stream_after is not None:
            return Fault("cut", after=self.cut_stream_after)
        return fault

    def describe(self) -> dict[str, Any]:
        """The script as JSON-able data."""
        return {
            "fail_next": [_spec(f) for f in self.fail_next],
            "fail_always": _spec(self.fail_always) if self.fail_always else None,
            "delay_ms": self.delay_ms,
            "chunk_delay_ms": self.chunk_delay_ms,
            "cut_stream_after": self.cut_stream_after,
            "random": self.random.spec if self.random else None,
            "timeout_s": self.timeout_s,
            "misbehave_next": [m.spec() for m in self.misbehave_next],
            "misbehave": self.misbehave.spec() if self.misbehave else None,
        }


def _spec(fault: Fault) -> int | str:
    if fault.kind == "status":
        return fault.status
    return fault.kind if fault.after is None else f"{fault.kind}:{fault.after}"


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    return float(value)
