"""The ``understudy`` command line.

Each command imports what it runs when it runs (the web server, sqlite-utils and pandas, the
distiller take about a second to import), so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from understudy.config_reader import ConfigError
from understudy.demo.cli import add_arguments as add_demo_arguments
from understudy.distiller.cli import command_parser, task_name, with_examples
from understudy.distiller.cli import register as register_distiller
from understudy.settings import Settings, load_settings


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return load_settings(
        config_file=args.config,
        overrides={"data_dir": getattr(args, "data_dir", None), **overrides},
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from understudy.gateway.server import STARTUP_FAILED, serve
    from understudy.schedule import schedule_for
    from understudy.storage.database import data_dir_problem

    settings = _settings(args, host=args.host, port=args.port, **{"teacher.url": args.teacher_url})
    problem = data_dir_problem(settings.data_dir, settings.db_path)
    if problem is not None:  # one line, not the lifespan's traceback
        print(f"understudy: {problem}", file=sys.stderr)
        return STARTUP_FAILED
    schedule = schedule_for(settings)  # refuses to start when its packages are missing
    companions = [schedule] if schedule is not None else []
    return serve(settings, companions=companions, workers=args.workers)


def cmd_tasks(args: argparse.Namespace) -> int:
    from understudy.commands import print_tasks

    return print_tasks(_settings(args), as_json=args.json, window_s=args.since)


def cmd_export(args: argparse.Namespace) -> int:
    from understudy.commands import export

    return export(_settings(args), task=args.task, fmt=args.format, output=args.output)


def cmd_mode(args: argparse.Namespace) -> int:
    from understudy.commands import set_task_mode

    return set_task_mode(_settings(args), task=args.task, mode=args.mode)


def cmd_report(args: argparse.Namespace) -> int:
    from understudy.report import report

    return report(_settings(args), window_s=args.since, fmt_name=args.format)


def _duration(text: str) -> float:
    from understudy.gateway.accounting.summary import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


MAX_WORKERS = 64


def _workers(text: str) -> int:
    """``--workers``: a whole number from 1 to :data:`MAX_WORKERS`."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_WORKERS}, got {n}")
    return n


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from understudy.commands import tiny_model

    return tiny_model(
        args.path,
        texts_file=args.texts,
        hidden=args.hidden,
        layers=args.layers,
        vocab_size=args.vocab_size,
        context=args.context,
        seed=args.seed,
    )


def _augmentation_teacher(settings: Settings) -> object:
    """The teacher the distiller asks for synthetic examples (a blocking httpx call)."""
    from understudy.gateway.teacher.sync import SyncTeacher

    return SyncTeacher.from_settings(settings)


def cmd_prune(args: argparse.Namespace) -> int:
    from understudy.prune import prune_log

    return prune_log(
        _settings(args), older_than=args.older_than, dry_run=args.dry_run, vacuum_after=args.vacuum
    )


def cmd_migrate_db(args: argparse.Namespace) -> int:
    from understudy.migrate_db import migrate_db

    return migrate_db(_settings(args), to=args.to)


def _demo(args: argparse.Namespace) -> int:
    from understudy.demo.cli import main as demo

    return demo(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("understudy")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


EXAMPLES = {
    "": [
        "understudy serve --teacher-url https://api.openai.com/v1",
        "understudy demo",
        "understudy tasks",
        "understudy report --since 24h",
        "understudy distill run --task support-intent",
    ],
    "serve": [
        "export UNDERSTUDY_TEACHER_API_KEY=sk-...",
        "understudy serve                                  # the OpenAI API, on 127.0.0.1:8000",
        "understudy serve --teacher-url http://localhost:8001/v1 --port 9000",
        "understudy serve --host 0.0.0.0 --workers 4          # with api_keys set",
        "understudy serve --config understudy.toml --data-dir /var/lib/understudy",
    ],
    "tasks": ["understudy tasks", "understudy tasks --json"],
    "export": ["understudy export --task support-intent -o support-intent.jsonl"],
    "mode": [
        "understudy mode --task support-intent shadow        # student answers compared only",
        "understudy mode --task support-intent teacher-only  # the student stops serving",
    ],
    "report": [
        "understudy report",
        "understudy report --since 24h --format json",
        "understudy report --since 30d --format csv > savings.csv",
    ],
    "prune": [
        "understudy prune --older-than 90d --dry-run",
        "understudy prune --older-than 90d --vacuum",
    ],
    "migrate-db": ["understudy migrate-db --to postgresql://understudy@db-host/understudy"],
    "tiny-model": ["understudy tiny-model ./tiny --texts prompts.txt --layers 2"],
    "demo": ["understudy demo"],
}
"""Examples shown at the end of each command's ``--help`` (the distiller's: in its cli)."""


EXIT_CODES = """exit codes:
  0   done
  1   the command ran and failed (a failed distillation run, nothing to roll back to, ...)
  2   bad arguments or settings, no database in the data directory, an unknown task
  3   serve could not start (data directory not writable, port in use, ...)
  75  distill run: another run of the task is already going; try again later"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="understudy",
        description="OpenAI-compatible gateway that distils your teacher model into a student.",
    )
    parser.add_argument("--version", action="version", version=f"understudy {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML config file (default: ./understudy.toml if present)")
        p.add_argument("--data-dir", help="data directory (default: ./understudy-data)")

    p = sub.add_parser("serve", help="run the gateway")
    common(p)
    p.add_argument(
        "--teacher-url",
        help="teacher base URL including /v1 (default: the teacher.url setting, "
        "https://api.openai.com/v1 unless configured)",
    )
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8000)")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="gateway processes sharing the port, one event loop each (default 1)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("tasks", help="list tasks with request counts")
    common(p)
    p.add_argument(
        "--since",
        type=_duration,
        default=7 * 86400,
        help="window of the counts, as in `report`: a number and s, m, h, d or w (default 7d)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("export", help="write logged teacher answers as fine-tuning data")
    common(p)
    p.add_argument(
        "--task", required=True, type=task_name, help="task name (see `understudy tasks`)"
    )
    p.add_argument(
        "--format", default="jsonl", choices=["jsonl"], help="output format (default jsonl)"
    )
    p.add_argument("--output", "-o", help="output file (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("mode", help="set a task's serving mode (picked up by a running gateway)")
    common(p)
    p.add_argument("--task", required=True, type=task_name, help="task name")
    p.add_argument("mode", choices=["teacher-only", "shadow", "routed"], help="the new mode")
    p.set_defaults(func=cmd_mode)

    p = sub.add_parser("report", help="savings, coverage and agreement over a window")
    common(p)
    p.add_argument(
        "--since",
        type=_duration,
        default=7 * 86400,
        help="window: a number and s, m, h, d or w, e.g. 24h (default 7d)",
    )
    p.add_argument(
        "--format",
        default="table",
        choices=["table", "json", "csv"],
        help="table for reading, json or csv for scripts (default table)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("prune", help="delete logged requests older than an age (e.g. 90d)")
    common(p)
    p.add_argument("--older-than", required=True, help="age: a number and s, m, h, d or w")
    p.add_argument("--dry-run", action="store_true", help="count the rows, delete nothing")
    p.add_argument("--vacuum", action="store_true", help="then give the space back (slow)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("migrate-db", help="copy the SQLite database into a new PostgreSQL database")
    common(p)
    p.add_argument("--to", required=True, help="the PostgreSQL database: postgresql://...")
    p.set_defaults(func=cmd_migrate_db)

    p = sub.add_parser("tiny-model", help="build a tiny Llama student (model + tokenizer) at PATH")
    p.add_argument("path", help="directory to write (loadable with from_pretrained)")
    p.add_argument(
        "--texts",
        help="text file, one example per line, to train the tokenizer on "
        "(default: a built-in corpus)",
    )
    p.add_argument("--hidden", type=int, default=128, help="hidden size (default 128)")
    p.add_argument("--layers", type=int, default=2, help="transformer layers (default 2)")
    p.add_argument("--vocab-size", type=int, default=2048, help="vocabulary size (default 2048)")
    p.add_argument(
        "--context", type=int, default=256, help="context length in tokens (default 256)"
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.set_defaults(func=cmd_tiny_model)

    # distill run|schedule|history, golden add|list|remove, rollback
    register_distiller(sub, _settings, _augmentation_teacher)

    p = sub.add_parser("demo", help="the whole loop on Banking77, offline, in a few minutes")
    add_demo_arguments(p)
    p.set_defaults(func=_demo)

    for name, examples in EXAMPLES.items():
        target = command_parser(sub, name) if name else parser
        if target is not None:
            with_examples(target, examples)
    parser.epilog = f"{parser.epilog}\n\n{EXIT_CODES}"
    return parser


DATAFRAMES = ("pandas", "numpy")
"""What sqlite-utils imports when installed (about a second), and the reading commands never
hand it."""


def load_sqlite_utils_lean() -> None:
    """Import sqlite-utils without pandas and numpy (it imports both when it can, for DataFrame
    and numpy values no reading command gives it): ``report``, ``tasks`` and ``export`` start in
    a fraction of the time. Either can still be imported afterwards; sqlite-utils just does not
    know them. Nothing is done when sqlite-utils or either of them is already loaded."""
    if "sqlite_utils" in sys.modules or any(name in sys.modules for name in DATAFRAMES):
        return
    blocked: dict[str, object] = dict.fromkeys(DATAFRAMES)  # None: their import raises
    sys.modules.update(blocked)  # type: ignore[arg-type]
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in DATAFRAMES:
            del sys.modules[name]


LEAN_COMMANDS = ("report", "tasks", "export", "mode", "prune")
"""The commands that load sqlite-utils without pandas and numpy."""


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if next((w for w in words if not w.startswith("-")), None) in LEAN_COMMANDS:
        load_sqlite_utils_lean()  # before the arguments are parsed: --since reads the summary's
    args = build_parser().parse_args(argv)  # --version, --help and errors end here, at once

    from understudy.distiller.command_checks import ARGUMENT_ERROR, CommandRefused

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"understudy: configuration error: {exc}", file=sys.stderr)
        return ARGUMENT_ERROR
    except CommandRefused as exc:
        print(f"understudy: {exc}", file=sys.stderr)
        return ARGUMENT_ERROR
    except BrokenPipeError:
        # The reader went away (`understudy report | head`): stop quietly. Python flushes stdout
        # again at exit, so point it at /dev/null first (the recipe of Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
