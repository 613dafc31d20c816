"""What a run came to, in words: ``understudy distill history`` (every run of a task, as a table
or JSON) and the result ``understudy distill run`` prints.

A run's outcome is one of ``promoted``, ``rejected``, ``skipped``, ``failed`` (or ``running``):
never "succeeded" for a run whose gates rejected it. Each gate is printed with its value, its
threshold and its verdict, the numbers with as many decimals as it takes to tell them apart
(:mod:`~understudy.distiller.figures`), and a failed gate says why it failed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import IO, Any

from understudy.distiller.figures import distinct
from understudy.storage.registry import run_outcome

MEANING = {
    "agreement": "agreement with the teacher on the held-out set",
    "coverage": "share served at the quality target",
    "non_inferiority": "coverage, candidate - champion",
    "validity": "share of complete, well-formed answers",
    "golden": "share of golden examples passing",
}
"""What each gate's value is."""


def render_history(runs: Sequence[dict[str, Any]], out: IO[str], *, as_json: bool = False) -> None:
    """Write ``runs`` (rows from ``storage.distill_queries.list_runs``) to ``out``."""
    if as_json:
        shown = [
            {**run, "outcome": run_outcome(run["status"], run.get("promoted"))} for run in runs
        ]
        out.write(json.dumps(shown, indent=2, default=str) + "\n")
        return
    if not runs:
        out.write("no distillation runs yet\n")
        return
    header = ("run", "started (UTC)", "took", "outcome", "trigger", "train", "eval", "version")
    rows = [header] + [_summary(run) for run in runs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out.write(_line(header, widths))
    for run, row in zip(runs, rows[1:], strict=True):
        out.write(_line(row, widths))
        for line in gate_lines(run.get("gates") or []):
            out.write(f"    {line}\n")
        for line in _facts(run.get("metrics") or {}, run.get("dataset") or {}):
            out.write(f"    {line}\n")
        why = outcome_reason(run)
        if why:
            out.write(f"    {'result' if run.get('promoted') else 'why'}: {why}\n")


def render_result(run: Mapping[str, Any], out: IO[str], *, log_path: str | None = None) -> None:
    """The one-screen result of ``distill run``: the outcome first, then the data, the router,
    each gate, and where the run's log is (``run``: a run outcome's dict)."""
    outcome = run_outcome(run["status"], run.get("promoted"))
    first = f"run {run['run_id']} of task {run['task']}: {outcome}"
    if run.get("promoted"):
        first += f" as {run.get('candidate_id')} (every gate passed)"
    elif failed := [g["name"] for g in run.get("gates") or [] if not g.get("passed")]:
        first += f": {', '.join(failed)} failed (below)"
    elif run.get("reason"):
        first += f": {run['reason']}"
    out.write(first + "\n")
    data = run.get("dataset") or {}
    if data.get("examples") is not None:
        out.write(
            f"  data: {data['examples']} examples, {data.get('train', '-')} train, "
            f"{data.get('eval', '-')} held out\n"
        )
    for line in _facts(run.get("metrics") or {}, data):
        out.write(f"  {line}\n")
    for line in gate_lines(run.get("gates") or []):
        out.write(f"  {line}\n")
    seconds = (run.get("metrics") or {}).get("run_seconds")
    tail = [f"took {seconds:.0f} s"] if isinstance(seconds, int | float) else []
    if log_path:
        tail.append(f"log {log_path}")
    if tail:
        out.write("  " + "; ".join(tail) + "\n")


def outcome_reason(run: Mapping[str, Any]) -> str | None:
    """Why a run ended as it did: for a rejected run each failed gate's reason (worked out
    from the gates, with exact figures), else the stored reason."""
    failed = [g for g in run.get("gates") or [] if not g.get("passed")]
    if failed and not run.get("promoted"):
        return "; ".join(f"{g['name']}: {why_failed(g)}" for g in failed)
    return run.get("reason")


def gate_lines(gates: Sequence[Mapping[str, Any]]) -> list[str]:
    """A header and one line per gate: value, threshold, verdict, and what the value is (or,
    for a failed gate, why it failed)."""
    if not gates:
        return []
    rows = [("gate", "value", "threshold", "verdict", "")]
    for gate in gates:
        signed = gate["name"] == "non_inferiority"
        value, threshold = distinct(gate.get("value"), gate.get("threshold"), signed=signed)
        needs = f">= {threshold}" if gate.get("threshold") is not None else "-"
        if gate.get("passed"):
            verdict, note = "pass", _note(gate)
        else:
            verdict, note = "FAIL", why_failed(gate)
        if gate.get("bound") is not None:
            note = f"bound {distinct(gate['bound'], gate.get('threshold'))[0]}; {note}"
        rows.append((gate["name"], value, needs, verdict, note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
        + (f"  {row[4]}" if row[4] else "")
        for row in rows
    ]


def why_failed(gate: Mapping[str, Any]) -> str:
    """Why a gate failed, in words that match its figures."""
    name, value, threshold = gate["name"], gate.get("value"), gate.get("threshold")
    detail = gate.get("detail") or ""
    meaning = MEANING.get(name, name)
    if value is None or threshold is None:
        return detail or meaning
    shown, bar = distinct(value, threshold, signed=name == "non_inferiority")
    if value < threshold:
        return f"{meaning} {shown} < {bar}" + (f" ({detail})" if detail else "")
    if name == "coverage":
        return "nothing is served at the quality target" + (f" ({detail})" if detail else "")
    if name == "non_inferiority":
        return (
            f"coverage holds ({shown} >= {bar}), but its agreement on what it serves is more "
            f"than the margin below the champion's (or the target): {detail}"
        )
    return f"{shown} >= {bar}, yet failed: {detail}" if detail else meaning


def _note(gate: Mapping[str, Any]) -> str:
    detail = gate.get("detail") or ""
    meaning = MEANING.get(gate["name"], "")
    if gate["name"] == "non_inferiority" and detail:
        return f"{meaning}; {detail}"
    return detail or meaning


def _facts(metrics: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    lines = []
    if metrics.get("confidence_levels") is not None:
        lines.append(
            f"router: quality target {metrics['quality_target']:g}, "
            f"{metrics['confidence_levels']} confidence levels on "
            f"{metrics.get('eval_examples', 0)} held-out answers"
        )
    if metrics.get("certified_lower_bound") is not None:
        lines.append(
            f"certified: agreement >= {metrics['certified_lower_bound']:.3f} "
            f"(lower bound) on what it serves, {metrics.get('calibration_examples')} "
            "held-out examples drawn uniformly from traffic" + _certificate(metrics)
        )
    if data.get("corrections"):
        lines.append(
            f"corrections: {data['corrections']} from feedback "
            f"({data.get('corrections_reviewed', 0)} reviewed; unreviewed ones train only)"
        )
    return lines


def _summary(run: dict[str, Any]) -> tuple[str, ...]:
    data = run.get("dataset") or {}
    took = f"{run['finished_at'] - run['started_at']:.0f}s" if run.get("finished_at") else "-"
    version = run.get("candidate_id") if run.get("promoted") else "-"
    return (
        run["id"],
        _utc(run["started_at"]),
        took,
        run_outcome(run["status"], run.get("promoted")),
        run.get("trigger") or "-",
        str(data.get("train", "-")),
        str(data.get("eval", "-")),
        str(version),
    )


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n"


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _certificate(metrics: Mapping[str, Any]) -> str:
    """How many held-out examples the bound was taken on, and which bound it is."""
    served, bound = metrics.get("certified_served"), metrics.get("certified_bound")
    if served is None or bound is None:
        return ""
    confidence = float(metrics.get("certified_confidence") or 0.95)
    return f"; {served} of them served, {bound.replace('_', '-')} bound at {confidence:.0%}"
