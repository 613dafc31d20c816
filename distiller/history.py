"""``understudy distill history``: every run of a task, as a table or JSON."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import IO, Any


def render_history(runs: Sequence[dict[str, Any]], out: IO[str], *, as_json: bool = False) -> None:
    """Write ``runs`` (rows from ``storage.distill_queries.list_runs``) to ``out``."""
    if as_json:
        out.write(json.dumps(list(runs), indent=2, default=str) + "\n")
        return
    if not runs:
        out.write("no distillation runs yet\n")
        return
    header = ("run", "started (UTC)", "took", "status", "trigger", "train", "eval", "promoted")
    rows = [header] + [_summary(run) for run in runs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out.write(_line(header, widths))
    for run, row in zip(runs, rows[1:], strict=True):
        out.write(_line(row, widths))
        for gate in run.get("gates") or []:
            verdict = "pass" if gate["passed"] else "FAIL"
            out.write(
                f"    {gate['name']:<16} {_num(gate['value']):>7} "
                f"(threshold {_num(gate['threshold'])})  {verdict}  {gate.get('detail', '')}\n"
            )
        metrics = run.get("metrics") or {}
        if metrics.get("confidence_levels") is not None:
            out.write(
                f"    router: quality target {metrics['quality_target']:g}, "
                f"{metrics['confidence_levels']} confidence levels on "
                f"{metrics.get('eval_examples', 0)} held-out answers\n"
            )
        if metrics.get("certified_lower_bound") is not None:
            out.write(
                f"    certified: agreement >= {metrics['certified_lower_bound']:.3f} "
                f"(lower bound) on what it serves, {metrics.get('calibration_examples')} "
                f"held-out examples drawn uniformly from traffic\n"
            )
        data = run.get("dataset") or {}
        if data.get("corrections"):
            out.write(
                f"    corrections: {data['corrections']} from feedback "
                f"({data.get('corrections_reviewed', 0)} reviewed; unreviewed ones train only)\n"
            )
        if run.get("reason"):
            out.write(f"    {'why' if not run['promoted'] else 'result'}: {run['reason']}\n")


def _summary(run: dict[str, Any]) -> tuple[str, ...]:
    data = run.get("dataset") or {}
    took = f"{run['finished_at'] - run['started_at']:.0f}s" if run.get("finished_at") else "-"
    promoted = run.get("candidate_id") if run.get("promoted") else "no"
    return (
        run["id"],
        _utc(run["started_at"]),
        took,
        run["status"],
        run.get("trigger") or "-",
        str(data.get("train", "-")),
        str(data.get("eval", "-")),
        str(promoted),
    )


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
