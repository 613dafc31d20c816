"""What the distiller's commands do: ``distill run|schedule|history``, ``golden add|list|remove``,
``rollback``. :mod:`understudy.distiller.cli` declares their arguments and loads this module when
one of them runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from understudy.distiller.command_checks import existing_store, require_known_task
from understudy.distiller.config import DistillConfig
from understudy.distiller.history import render_history, render_result
from understudy.distiller.lock import RunInProgress
from understudy.distiller.pipeline import run_distillation
from understudy.distiller.progress import LOG_FILE, command_line_progress
from understudy.distiller.schedule import DistillScheduler
from understudy.storage.config import db_path
from understudy.storage.database import Store
from understudy.storage.distill_queries import add_golden, list_golden, list_runs, remove_golden
from understudy.storage.engine import Address
from understudy.storage.registry import RegistryError, rollback, run_outcome, task_state

if TYPE_CHECKING:
    import sqlite_utils

TeacherFactory = Callable[[Any], Any]

EXIT_FAILED = 1
EXIT_BUSY = 75  # EX_TEMPFAIL: another run of the task is going


def database_of(settings: Any) -> Address:
    """The settings' database: ``storage.url``'s, else the data directory's SQLite file."""
    found = getattr(settings, "db_path", None)
    return db_path(Path(settings.data_dir)) if found is None else found


def distill_settings(settings: Any) -> tuple[Path, DistillConfig]:
    """The data directory and the distiller config of a settings object."""
    config = getattr(settings, "distiller", None)
    if isinstance(config, dict):
        config = DistillConfig.from_mapping(config)
    return Path(settings.data_dir), config or DistillConfig()


@contextlib.contextmanager
def _db(settings: Any, *, existing: bool = False) -> Iterator[sqlite_utils.Database]:
    """The settings' database, its schema brought up to date first; with ``existing``, a missing
    one is refused rather than created."""
    data_dir = Path(settings.data_dir)
    database = database_of(settings)
    store = existing_store(data_dir, database) if existing else Store(database)
    store.migrate()
    with store.write() as db:
        yield db


def _require_task(settings: Any, task: str) -> None:
    """Refuse a missing database or a task it has never seen, writing nothing."""
    store = existing_store(settings.data_dir, database_of(settings))
    store.migrate()
    with store.read() as db:
        require_known_task(db, task)


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def cmd_run(args: argparse.Namespace, settings: Any, teacher_factory: TeacherFactory | None) -> int:
    """One run, now: a line (or bar) per phase on stderr, then the result on one screen (or
    JSON); the run's logs and the training libraries' output in its ``train.log`` unless
    ``--verbose``."""
    _require_task(settings, args.task)  # a typo records no skipped run
    data_dir, config = distill_settings(settings)
    teacher = teacher_factory(settings) if teacher_factory else None
    verbose = bool(getattr(args, "verbose", False))
    try:
        with _exit_on_sigterm(), command_line_progress(verbose=verbose, stream=sys.stderr) as shown:
            outcome = run_distillation(
                data_dir,
                args.task,
                config,
                trigger="manual",
                teacher=teacher,
                progress=shown,
                database=database_of(settings),
            )
    except RunInProgress as exc:
        print(f"understudy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    result = outcome.to_dict() | {"outcome": run_outcome(outcome.status, outcome.promoted)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        log_path = data_dir / "distill" / outcome.task / outcome.run_id / LOG_FILE
        render_result(result, sys.stdout, log_path=str(log_path) if log_path.exists() else None)
    return EXIT_FAILED if outcome.status == "failed" else 0


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """SIGTERM ends a run like Ctrl-C: the run is marked failed and its training stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_schedule(
    args: argparse.Namespace, settings: Any, teacher_factory: TeacherFactory | None
) -> int:
    _logging()
    data_dir, config = distill_settings(settings)
    teacher = teacher_factory(settings) if teacher_factory else None
    DistillScheduler(
        data_dir, config, teacher=teacher, database=database_of(settings)
    ).serve_forever()
    return 0


def cmd_history(args: argparse.Namespace, settings: Any, _: TeacherFactory | None) -> int:
    with _db(settings, existing=True) as db:
        require_known_task(db, args.task)
        runs = list_runs(db, args.task, limit=args.limit)
    render_history(runs, sys.stdout, as_json=args.json)
    return 0


def cmd_golden_add(args: argparse.Namespace, settings: Any, _: TeacherFactory | None) -> int:
    value: Any = args.input
    if args.input.lstrip().startswith("["):
        try:
            value = json.loads(args.input)
        except ValueError:
            value = args.input
        if isinstance(value, list) and not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in value
        ):
            print("understudy: --input list must hold {role, content} messages", file=sys.stderr)
            return 2
    with _db(settings) as db:
        golden_id = add_golden(
            db, args.task, input_value=value, expected=args.expected, note=args.note
        )
    print(f"golden example {golden_id} added to task {args.task}")
    return 0


def cmd_golden_list(args: argparse.Namespace, settings: Any, _: TeacherFactory | None) -> int:
    with _db(settings, existing=True) as db:
        rows = list_golden(db, args.task)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no golden examples")
    for row in rows:
        shown = row["input"] if isinstance(row["input"], str) else json.dumps(row["input"])
        print(f"{row['id']:>4}  {row['task']}  {shown!r} -> {row['expected']!r}")
    return 0


def cmd_golden_remove(args: argparse.Namespace, settings: Any, _: TeacherFactory | None) -> int:
    with _db(settings) as db:
        removed = remove_golden(db, args.id)
    if not removed:
        print(f"understudy: no golden example with id {args.id}", file=sys.stderr)
        return EXIT_FAILED
    print(f"golden example {args.id} removed")
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Any, _: TeacherFactory | None) -> int:
    try:
        with _db(settings, existing=True) as db:
            require_known_task(db, args.task)
            left = task_state(db, args.task).champion_id
            state = rollback(db, args.task, reason="command line", to=args.to)
    except RegistryError as exc:
        print(f"understudy: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"task {args.task}: {state.champion_id} serves again (was {left}); "
        "a running gateway switches at its next registry check"
    )
    return 0
