"""How each teacher answer in the log was drawn from the task's traffic, and what it weighs.

A student is calibrated and judged on teacher answers drawn without regard to what the router
decided: those logged while no student routed the task (every request went to the teacher),
audits (``router.audit_rate`` of routed requests, drawn uniformly before the router decides)
and shadow checks (``router.shadow_rate`` of the requests the student served). Deferrals are
not drawn: they are the requests the student was unsure of.

Shadow checks sample only what the student served, so they are weighted by the inverse of
their chance to be drawn. A request the router would serve is drawn by an audit or, if not
audited, by a shadow check: with chance ``a + (1 - a) s`` (``a`` the audit rate, ``s`` the
shadow rate); one it would defer only by an audit, with chance ``a``. Weights are relative to
an audit of a deferral (1), so an audit or shadow check of a served request weighs
``a / (a + (1 - a) s)``, and with no audits a shadow check weighs ``1 / s``. Answers logged
before any student routed the task weigh 1, as a uniform sample of their time. The rates are
the ones realized in the log (audits per routed request, shadow checks per served one), so a
changed setting cannot skew them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

AUDIT_REASON = "audit"
"""How an audit's teacher row starts its ``route_reason`` (``audit: the student would ...``)."""

CENSUS = "census"
"""A teacher answer logged while no student routed the task (or in shadow mode)."""
AUDIT_DEFER = "audit_defer"
AUDIT_SERVE = "audit_serve"
SHADOW = "shadow"
"""A shadow check of a student-served request."""
UNIFORM = (CENSUS, AUDIT_DEFER, AUDIT_SERVE, SHADOW)


def how_drawn(row: Mapping[str, Any]) -> str | None:
    """How a logged row was drawn: one of :data:`UNIFORM`, ``served`` (the student answered),
    ``deferred`` (a teacher answer the router chose), or None for anything else."""
    reason = str(row.get("route_reason") or "")
    served_by = row.get("served_by")
    if served_by == "student":
        return "served"
    if served_by == "shadow":
        return SHADOW if reason.startswith("shadow of ") else None
    if served_by != "teacher":
        return None
    if not reason or reason.startswith("shadow mode"):
        return CENSUS
    if reason.startswith(AUDIT_REASON):
        return AUDIT_SERVE if "would serve" in reason else AUDIT_DEFER
    if reason.startswith("deferred"):
        return "deferred"
    return None


class Draws:
    """Counts of how the rows of one read of the log were drawn, and each row's weight."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._kind: dict[str, str] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        kind = how_drawn(row)
        if kind is None:
            return
        self.counts[kind] += 1
        if kind in UNIFORM:
            self._kind[str(row["id"])] = kind

    def rates(self) -> tuple[float, float]:
        """(audit rate, shadow rate) realized in the rows read."""
        c = self.counts
        audits = c[AUDIT_DEFER] + c[AUDIT_SERVE]
        routed = audits + c["deferred"] + c["served"]
        return (audits / routed if routed else 0.0, c[SHADOW] / c["served"] if c["served"] else 0.0)

    def weight(self, row_id: str) -> float | None:
        """The weight of the row ``row_id`` as a uniform draw; None when it is not one."""
        kind = self._kind.get(row_id)
        if kind is None:
            return None
        if kind in (CENSUS, AUDIT_DEFER):
            return 1.0
        return served_weight(*self.rates())


def served_weight(audit_rate: float, shadow_rate: float) -> float:
    """Weight of an audit or shadow check of a request the router would serve, relative to an
    audit of one it would defer: ``a / (a + (1 - a) s)``; ``1 / s`` with no audits."""
    if audit_rate > 0:
        return audit_rate / (audit_rate + (1 - audit_rate) * shadow_rate)
    return 1.0 / shadow_rate if shadow_rate > 0 else 1.0
