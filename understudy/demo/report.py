"""What the demo prints: progress lines, promotions with their gates, and the final summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from understudy.demo.banking77 import Query
from understudy.demo.teacher import Bill, estimate_tokens, prompt_tokens
from understudy.demo.traffic import Answered, messages
from understudy.gateway.accounting import fmt
from understudy.gateway.accounting.prices import Price
from understudy.gateway.accounting.summary import Summary as Figures
from understudy.router import lower_bound, upper_bound


class Printer:
    """Progress output: phases, indented detail lines, flushed at once."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.started = time.monotonic()

    def phase(self, title: str) -> None:
        """A new step: a blank line, then the time since the start and the title."""
        elapsed = time.monotonic() - self.started
        self._write(f"\n[{elapsed:4.0f} s] == {title}")

    def line(self, text: str) -> None:
        """A detail of the current step, indented."""
        self._write(" " * 11 + text)

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def traffic_line(answered: Sequence[Answered], total: int, window: int = 100) -> str:
    """``live 300/800 · student 41% (last 100: 55%) · agreement 0.93 · accuracy 0.88``."""
    recent = answered[-window:]
    student = sum(a.served_by == "student" for a in answered)
    recent_student = sum(a.served_by == "student" for a in recent)
    agree = share(sum(a.agrees for a in answered), len(answered))
    correct = share(sum(a.correct for a in answered), len(answered))
    served = share(student, len(answered))
    return (
        f"{len(answered):>5}/{total} sent · served by the student {served:4.0%}"
        f" (last {len(recent)}: {share(recent_student, len(recent)):4.0%})"
        f" · agreement {agree:.3f} · accuracy {correct:.3f}"
    )


def run_lines(outcome: dict[str, Any]) -> list[str]:
    """A distillation run: verdict, then one line per gate."""
    metrics = outcome.get("metrics") or {}
    train = metrics.get("train") or {}
    dataset = outcome.get("dataset") or {}
    head = (
        f"promoted {outcome['candidate_id']}"
        if outcome.get("promoted")
        else f"not promoted: {outcome.get('reason')}"
    )
    lines = [head]
    if train:
        # The chosen candidate's own figures: a cross-fitted classical one trains on its
        # held-out answers too and may be judged on more of them than the run's slice.
        engine = metrics.get("engine")
        lines.append(
            f"{f'{engine} candidate ' if engine else ''}trained on "
            f"{train.get('examples', dataset.get('train'))} examples in "
            f"{train.get('seconds', 0):.0f} s ({train.get('examples_per_s', 0):.0f} examples/s), "
            f"held out {metrics.get('eval_examples', dataset.get('eval', '?'))}"
        )
        if train.get("warm_start_from"):
            lines[-1] += f"; continued from {train['warm_start_from']}"
    for gate in outcome.get("gates") or []:
        verdict = "pass" if gate.get("passed") else "FAIL"
        lines.append(
            f"  gate {gate['name']:<16} {_num(gate.get('value')):>8}  "
            f"needs {_num(gate.get('threshold')):>7}  {verdict}"
        )
    if "coverage" in metrics and metrics.get("threshold") is not None:
        lines.append(
            f"router: serve when P(agree) >= {metrics['threshold']:.3f}; expected share served "
            f"{metrics['coverage']:.0%}"
        )
    return lines


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3f}"
    return str(value)


@dataclass
class Summary:
    """The demo's outcome: the gateway's own figures (requests, coverage, savings: the same
    function, window and definitions as the dashboard and ``understudy report``) and what only
    the demo knows (agreement and accuracy of each live answer against the recorded teacher
    and the gold intents)."""

    history: int
    answered: list[Answered]
    teacher_calls: int
    """Calls the replay teacher received during the live traffic (deferrals and shadow checks)."""
    teacher_cost: float
    """What those calls cost by the replay teacher's bill, USD."""
    teacher_only_cost: float
    """What the live traffic would have cost by that bill with the teacher answering
    everything, USD."""
    quality_target: float = 0.0
    """The agreement with the teacher the router was asked to keep on student answers."""
    promotions: list[str] = field(default_factory=list)
    dashboard: str = ""
    seconds: float = 0.0
    gateway: Figures | None = None
    """The gateway's summary over the whole hours holding the demo: history and live traffic,
    as the dashboard and ``understudy report`` show them."""
    window: str = "1h"
    """The dashboard's window (and ``report --since``) that holds the whole demo."""

    @property
    def requests(self) -> int:
        return len(self.answered)

    @property
    def student_served(self) -> int:
        return sum(a.served_by == "student" for a in self.answered)

    @property
    def saved(self) -> float:
        """Saved on the live traffic by the replay teacher's bill (a check on the gateway's
        figure, which is the one printed)."""
        return self.teacher_only_cost - self.teacher_cost

    def lines(self) -> list[str]:
        n = self.requests
        student = [a for a in self.answered if a.served_by == "student"]
        teacher_alone = share(sum(a.query.teacher == a.query.gold for a in self.answered), n)
        return [
            *gateway_lines(self.gateway, self.history, n, self._late_share()),
            self._quality_line(student),
            f"agreement w/ teacher  {share(sum(a.agrees for a in self.answered), n):.3f} on "
            f"everything the {n} live requests received",
            f"accuracy vs gold      {share(sum(a.correct for a in self.answered), n):.3f} "
            f"(the teacher alone: {teacher_alone:.3f}; student answers: "
            f"{share(sum(a.correct for a in student), len(student)):.3f})",
            f"students promoted     {', '.join(self.promotions) or 'none'}",
            f"time                  {self.seconds:.0f} s",
        ]

    def _quality_line(self, student: list[Answered]) -> str:
        """Agreement with the teacher on what the student served, against the target."""
        if not student:
            return "student answers       none served: the quality target was not put to the test"
        agreed = sum(a.agrees for a in student)
        agreement = share(agreed, len(student))
        line = (
            f"student answers       agreement with the teacher {agreement:.3f} on {len(student)}"
            f" (quality target {self.quality_target:g}: "
        )
        if agreement >= self.quality_target:
            return line + "met)"
        return line + "NOT met: " + why_missed(agreed, len(student), self.quality_target) + ")"

    def _late_share(self) -> float:
        late = self.answered[-max(1, len(self.answered) // 4) :]
        return share(sum(a.served_by == "student" for a in late), len(late))


def gateway_lines(g: Figures | None, history: int, live: int, late_share: float) -> list[str]:
    """Requests, coverage, teacher calls and savings as the gateway counted them: the same
    numbers, formatted the same, as the dashboard and ``understudy report`` over that window."""
    if g is None:
        return ["gateway figures       could not be read from the gateway's database"]
    alone = (
        f"{fmt.pct(g.saved_share)} of the {fmt.usd(g.teacher_alone_usd)} the teacher alone"
        " would have cost"
        if g.saved_share is not None
        else "no teacher cost yet"
    )
    return [
        f"requests              {fmt.count(g.requests)} ({history} history + {live} live)",
        f"served by the student {fmt.count(g.student)}: coverage {fmt.pct(g.coverage)} of all "
        f"requests; {share(g.student, live):.1%} of the {live} live ones (last quarter of "
        f"them: {late_share:.1%})",
        f"teacher calls         {fmt.count(g.requests - g.student)} answers + "
        f"{fmt.count(g.shadow_calls)} shadow checks",
        f"saved                 {fmt.usd(g.saved_usd)}: {alone}; teacher spend "
        f"{fmt.usd(g.teacher_spend_usd)}",
    ]


def why_missed(agreed: int, n: int, target: float) -> str:
    """Why served agreement fell below the target: within the sampling noise of ``n`` answers
    (the target lies in their 95% interval), or beyond it (the certified bound did not hold on
    this traffic)."""
    low, high = lower_bound(agreed, n, 0.975), upper_bound(agreed, n, 0.975)
    if high >= target:
        return (
            f"{n} served answers give a 95% interval of {low:.3f}-{high:.3f}, which holds the "
            "target: within the noise of so few answers"
        )
    return (
        f"the 95% interval {low:.3f}-{high:.3f} of {n} served answers is below the target: "
        "the certified bound did not hold on this traffic"
    )


def teacher_only_cost(queries: Sequence[Query], price: Price) -> float:
    """What the teacher would have charged to answer every query."""
    return sum(price.cost(prompt_tokens(messages(q)), estimate_tokens(q.teacher)) for q in queries)


def bill_cost(before: Bill, after: Bill, price: Price) -> tuple[int, float]:
    """Calls and cost between two readings of the teacher's bill."""
    return (
        after.calls - before.calls,
        price.cost(
            after.prompt_tokens - before.prompt_tokens,
            after.completion_tokens - before.completion_tokens,
        ),
    )
