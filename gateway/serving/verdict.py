"""What the student path decides for one request: serve the student, defer to the teacher
(keeping the student's attempt), or no student at all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from understudy.gateway.serving.pool import Slot
from understudy.gateway.serving.routing import Judgement
from understudy.student.base import StudentAnswer

AttemptKind = Literal["failure", "shadow", "audit"]


@dataclass(frozen=True)
class Attempt:
    """The student's answer to one request and the router's judgement of it."""

    slot: Slot
    answer: StudentAnswer
    judgement: Judgement


@dataclass(frozen=True)
class Serve:
    """The student is sure: its answer goes to the client."""

    attempt: Attempt


@dataclass(frozen=True)
class Defer:
    """The teacher answers; the attempt is kept beside it as a failure case (the router was
    unsure), as a shadow pair (the task is in shadow mode) or as an audit (drawn at random
    from routed traffic, whatever the router decided)."""

    attempt: Attempt
    kind: AttemptKind
    reason: str


@dataclass(frozen=True)
class NoStudent:
    """No student answered (none serves the task, it may not try, or it failed)."""

    reason: str | None = None


Verdict = Serve | Defer | NoStudent
