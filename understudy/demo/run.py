"""``understudy demo``: replay teacher, gateway, traffic, distillation cycles, summary.

1. A replay teacher starts on 127.0.0.1; the gateway starts as a real ``understudy serve``
   process with a config written into the demo's data directory.
2. History: train-split queries go through the gateway; the teacher answers them all (their
   gold intents stand in for a teacher) and the gateway logs them.
3. Live traffic: the test-split queries, answered with GPT-4's real answers. The teacher
   answers the first ``warmup`` alone; then a distillation run (``understudy distill run``)
   trains a tiny student on the whole log, holds that most recent slice out (so the router is
   calibrated on the teacher's own answers, the labels it is judged by), and promotes it if
   every gate passes; the gateway loads it.
4. The student answers what it is sure about, the teacher the rest, and ``shadow_rate`` of
   student answers are checked by the teacher. Every ``every`` teacher calls (deferrals and
   shadow checks), another run retrains on the grown log and is judged against the champion.
5. The summary: the gateway's own figures over the whole hours holding the demo (requests,
   share served by the student, teacher calls, dollars saved: the same function, window and
   definitions as the dashboard and ``understudy report``), then what only the demo knows:
   agreement of the live answers with the teacher against the quality target, and accuracy
   against the gold intents.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from understudy.demo.banking77 import Query, load_banking77, sample
from understudy.demo.config import ADMIN_KEY, TASK, DemoOptions, gateway_config
from understudy.demo.processes import DemoError, Gateway, distill, pick_port
from understudy.demo.report import (
    Printer,
    Summary,
    bill_cost,
    run_lines,
    teacher_only_cost,
    traffic_line,
)
from understudy.demo.teacher import GOLD_LABELS, ReplayTeacher
from understudy.demo.traffic import Answered, Client
from understudy.gateway.accounting.prices import Price
from understudy.gateway.accounting.summary import Summary as Figures
from understudy.gateway.accounting.summary import describe_window
from understudy.report import build_summary
from understudy.settings import load_settings

MARKER = ".understudy-demo"
CHUNK = 50
"""Most live requests sent between two checks for a distillation run."""
MIN_HISTORY = 50
"""Fewest history queries for a run before the live traffic (the distiller's minimum)."""
PROGRESS_EVERY = 100
"""A progress line each time this many more live requests were answered."""
FLUSH_WAIT_S = 10.0
"""Longest wait for the gateway's log to hold every answered request before the summary."""


@dataclass
class Demo:
    """The running pieces, shared by the steps."""

    options: DemoOptions
    say: Printer
    teacher: ReplayTeacher
    gateway: Gateway
    client: Client
    config_path: Path
    promotions: list[str]
    runs: int = 0
    mode: str | None = None


def run_demo(options: DemoOptions, out: IO[str] | None = None) -> Summary:
    """Run the whole demo and return its summary (printed too)."""
    say = Printer(out)
    data = options.data or load_banking77()
    data = data.restricted(data.most_frequent(max(1, min(options.intents, len(data.intents)))))
    history = sample(data.train, options.history, options.seed)
    live = sample(data.test, options.requests, options.seed + 1)
    data_dir = prepare_data_dir(options.data_dir)
    say.phase("understudy demo: Banking77, a tiny student learning from GPT-4's answers")
    say.line(
        f"{len(data.intents)} intents · {len(history)} history queries (gold labels standing in"
        f" for the teacher) · {len(live)} live queries (GPT-4's real answers)"
    )
    # gold labels are logged as the labeller's answers, not the teacher's (a student is judged
    # against the live teacher only)
    tested = {q.text.strip() for q in data.test}
    gold = [q.text.strip() for q in data.train if data.train_gold]
    teacher = ReplayTeacher(
        {q.text: q.teacher for q in data.train + data.test},
        labelled_by={text: GOLD_LABELS for text in gold if text not in tested},
    )
    teacher.start()
    gateway: Gateway | None = None
    client: Client | None = None
    try:
        port = pick_port(options.port)
        config_path = data_dir / "understudy.toml"
        config_path.write_text(
            gateway_config(options, teacher_url=teacher.base_url, port=port, model=teacher.model)
        )
        gateway = Gateway(config_path, port, data_dir / "gateway.log")
        say.line(f"replay teacher on {teacher.base_url} ({teacher.model}, recorded answers)")
        gateway.start()
        say.line(f"gateway on {gateway.url}/v1 (config {config_path}, log {gateway.log_path})")
        client = Client(gateway.url + "/v1", options.concurrency)
        demo = Demo(options, say, teacher, gateway, client, config_path, [])
        summary = _loop(demo, history, live)
        _print_summary(demo, summary)
        if options.keep_running:
            _stay_up(demo)
        return summary
    finally:
        if client is not None:
            client.close()
        if gateway is not None:
            gateway.stop()
        teacher.stop()


def _loop(demo: Demo, history: Sequence[Query], live: Sequence[Query]) -> Summary:
    started = time.monotonic()
    started_at = time.time()
    say = demo.say
    o = demo.options
    if history:
        say.phase(f"history: {len(history)} requests through the gateway, the teacher answers")
        say.line(traffic_line(demo.client.send(history), len(history)))
        demo.teacher.wait_idle()
        if not o.warmup and len(history) >= MIN_HISTORY:
            _distill(demo, f"{len(history)} logged teacher answers")
    first = f"the teacher answers the first {o.warmup} alone, then " if o.warmup else ""
    sooner = (
        f" ({o.first_every} until a student is promoted)"
        if o.first_every and o.first_every != o.every
        else ""
    )
    say.phase(
        f"live traffic: {len(live)} requests; {first}a distillation run every "
        f"{max(1, o.every)} teacher calls{sooner}"
    )
    price = Price(o.price_in, o.price_out)
    before = demo.teacher.snapshot()
    mark = before.calls  # teacher calls when the last run started
    answered: list[Answered] = []
    while len(answered) < len(live):
        runs_left = not o.max_runs or demo.runs < o.max_runs
        every = run_interval(o, demo.runs, promoted=bool(demo.promotions))
        due = every - (demo.teacher.snapshot().calls - mark)
        size = max(1, min(CHUNK, due)) if runs_left else CHUNK
        shown = len(answered) // PROGRESS_EVERY
        answered += demo.client.send(live[len(answered) : len(answered) + size])
        demo.teacher.wait_idle()  # shadow checks in flight are counted before deciding
        if len(answered) // PROGRESS_EVERY > shown or len(answered) == len(live):
            say.line(traffic_line(answered, len(live)))
        _report_mode(demo)
        calls = demo.teacher.snapshot().calls - mark
        if len(answered) < len(live) and calls >= every and runs_left:
            mark += calls
            why = "the teacher's answers to live traffic" if demo.runs == 0 and o.warmup else ""
            _distill(demo, f"{calls} new teacher answers" + (f": {why}" if why else ""))
            say.phase(f"live traffic, continued from {len(answered)}/{len(live)}")
    calls, cost = bill_cost(before, demo.teacher.snapshot(), price)
    figures = gateway_figures(demo, started_at, len(history) + len(answered))
    # The dashboard's window that holds the whole demo while its summary is read.
    window = "1h" if time.time() - started_at < 3000 else "24h"
    return Summary(
        history=len(history),
        answered=answered,
        teacher_calls=calls,
        teacher_cost=cost,
        teacher_only_cost=teacher_only_cost(live, price),
        quality_target=o.quality_target,
        promotions=demo.promotions,
        dashboard=f"{demo.gateway.url}/dashboard?window={window}&key={ADMIN_KEY}",
        seconds=time.monotonic() - started,
        gateway=figures,
        window=window,
    )


def run_interval(options: DemoOptions, runs: int, *, promoted: bool) -> int:
    """Teacher calls between two distillation runs: ``warmup`` before the first (when set),
    ``first_every`` (when set) until a run has promoted a student, ``every`` after."""
    if not runs and options.warmup:
        return options.warmup
    if not promoted and options.first_every:
        return options.first_every
    return max(1, options.every)


def gateway_figures(demo: Demo, started_at: float, requests: int) -> Figures | None:
    """The gateway's summary from the demo's start to now (whole hours), once its log holds
    every answered request and every teacher call (the log is written behind)."""
    settings = load_settings(config_file=demo.config_path, env={})
    deadline = time.monotonic() + FLUSH_WAIT_S
    figures: Figures | None = None
    while time.monotonic() < deadline:
        now = time.time()
        figures = build_summary(settings, max(now - started_at, 1.0), now=now)
        teacher_calls = figures.requests - figures.student + figures.shadow_calls
        if figures.requests >= requests and teacher_calls >= demo.teacher.snapshot().calls:
            break
        time.sleep(0.2)
    return figures


def _report_mode(demo: Demo) -> None:
    """Say so when the task's serving mode changes (e.g. live agreement fell: teacher-only)."""
    state = demo.gateway.task_state(TASK)
    mode = state.get("mode") if state else None
    if mode and mode != demo.mode:
        if demo.mode is not None:
            demo.say.line(f"task {TASK}: mode {demo.mode} -> {mode} ({state.get('reason')})")
        demo.mode = mode


def _distill(demo: Demo, why: str) -> None:
    """One ``understudy distill run``; on promotion, route the task to the new student."""
    demo.runs += 1
    say = demo.say
    say.phase(f"distillation run {demo.runs} ({why}): train, evaluate, gate")
    log_path = demo.config_path.parent / f"distill-{demo.runs}.log"
    shown = {"at": 0.0}

    def progress(record: dict[str, Any]) -> None:
        if "loss" not in record:
            return
        last = record.get("step") == record.get("max_steps")
        if last or time.monotonic() - shown["at"] >= 10:
            shown["at"] = time.monotonic()
            say.line(
                f"training step {record.get('step')}/{record.get('max_steps')} · epoch "
                f"{record.get('epoch', 0):.1f} · loss {record['loss']:.3f} · "
                f"{record.get('elapsed_s', 0):.0f} s"
            )

    outcome = distill(demo.config_path, TASK, log_path, progress)
    for line in run_lines(outcome):
        say.line(line)
    if outcome.get("promoted"):
        demo.gateway.route_to_student(TASK)
        demo.mode = "routed"
        demo.promotions.append(str(outcome["candidate_id"]))
        say.line(f"the gateway now serves {outcome['candidate_id']} (loaded without a restart)")


def _print_summary(demo: Demo, summary: Summary) -> None:
    say = demo.say
    say.phase("summary")
    if summary.gateway is not None:
        window = summary.window
        say.line(
            f"the gateway's figures, {describe_window(summary.gateway, named=False)}: the "
            f"history and the live traffic, as the dashboard's {window} window and "
            f"`understudy report --since {window}` show them"
        )
    for line in summary.lines():
        say.line(line)
    o = demo.options
    say.line(f"(teacher priced at ${o.price_in:g} / ${o.price_out:g} per 1M input / output tokens)")
    say.line(f"dashboard: {summary.dashboard}")
    say.line(f"data, logs and students: {demo.config_path.parent}")


def _stay_up(demo: Demo) -> None:
    say = demo.say
    say.phase("the gateway stays up: Ctrl-C stops it")
    say.line(f"OpenAI base URL: {demo.gateway.url}/v1 (task header X-Understudy-Task: {TASK})")
    for command in ("report --since 1h", f"distill history --task {TASK}", "tasks --since 1h"):
        say.line(f"try: understudy {command} --config {demo.config_path}")
    try:
        while demo.gateway.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        say.line("stopping")


def prepare_data_dir(path: Path) -> Path:
    """An empty data directory: a fresh one, or a previous demo's, emptied."""
    path = Path(path).resolve()
    if path.exists():
        if not (path / MARKER).exists() and any(path.iterdir()):
            raise DemoError(f"{path} exists and is not a demo directory; choose another --data-dir")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by `understudy demo`; emptied by the next run\n")
    return path
