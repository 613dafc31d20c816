"""Commands: ``distill run|schedule|history``, ``golden add|list|remove``, ``rollback``.

:func:`register` adds their arguments to the ``understudy`` parser; what each does is in
:mod:`understudy.distiller.commands`. ``settings_loader(args)`` returns the
settings object: its ``data_dir`` is used, and its ``distiller`` attribute (a
:class:`~distiller.config.DistillConfig`) when it has one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from understudy.storage.records import valid_task_name

SettingsLoader = Callable[[argparse.Namespace], Any]
TeacherFactory = Callable[[Any], Any]

EXAMPLES = {
    "distill": [
        "understudy distill run --task support-intent",
        "understudy distill history --task support-intent",
        "understudy distill schedule",
    ],
    "distill run": [
        "understudy distill run --task support-intent",
        "understudy distill run --task support-intent --verbose   # the trainer's log too",
        "understudy distill run --task support-intent --json      # for scripts",
    ],
    "distill schedule": ["understudy distill schedule --config understudy.toml"],
    "distill history": [
        "understudy distill history --task support-intent",
        "understudy distill history --task support-intent --limit 5 --json",
    ],
    "golden": [
        "understudy golden add --task support-intent --input 'I lost my card' --expected lost_card",
        "understudy golden list --task support-intent",
        "understudy golden remove 3",
    ],
    "golden add": [
        "understudy golden add --task support-intent --input 'I lost my card' "
        "--expected lost_card --note 'must never regress'",
    ],
    "golden list": ["understudy golden list", "understudy golden list --task support-intent"],
    "golden remove": ["understudy golden remove 3"],
    "rollback": [
        "understudy rollback --task support-intent",
        "understudy rollback --task support-intent --to support-intent@v1",
    ],
}
"""Examples shown at the end of each command's ``--help``."""


def with_examples(parser: argparse.ArgumentParser, examples: list[str]) -> None:
    """End ``parser``'s ``--help`` with ``examples``, one a line, as written."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)


def task_name(value: str) -> str:
    """An argparse type: a valid task name (1-64 of ``[A-Za-z0-9._-]``, not ``.``/``..``)."""
    if not valid_task_name(value):
        raise argparse.ArgumentTypeError(
            f"invalid task name {value[:80]!r}: 1-64 characters of letters, digits, '.', '_' "
            "and '-' (not '.' or '..')"
        )
    return value


def register(
    subparsers: argparse._SubParsersAction,
    settings_loader: SettingsLoader,
    teacher_factory: TeacherFactory | None = None,
) -> None:
    """Add the distiller's commands. ``teacher_factory(settings)`` gives the teacher callable
    used by synthetic augmentation (none: augmentation is skipped)."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML config file (default: ./understudy.toml if present)")
        p.add_argument("--data-dir", help="data directory (default: ./understudy-data)")

    def bind(p: argparse.ArgumentParser, name: str) -> None:
        def run(args: argparse.Namespace) -> int:
            # Loaded when a command runs, not to print --help (training and storage are heavy).
            from understudy.distiller import commands

            return int(getattr(commands, name)(args, settings_loader(args), teacher_factory))

        p.set_defaults(func=run)

    distill = subparsers.add_parser("distill", help="train, evaluate and promote students")
    steps = distill.add_subparsers(dest="distill_command", required=True)
    p = steps.add_parser("run", help="one distillation run of a task, now")
    common(p)
    p.add_argument(
        "--task", required=True, type=task_name, help="task name (see `understudy tasks`)"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show the run's log and the training libraries' output (loss lines, their "
        "progress bars) on stderr (default: they go to the run's train.log)",
    )
    bind(p, "cmd_run")
    p = steps.add_parser("schedule", help="run the schedule: nightly and on new data")
    common(p)
    bind(p, "cmd_schedule")
    p = steps.add_parser("history", help="every run of a task: data, gates, promoted or why not")
    common(p)
    p.add_argument("--task", required=True, type=task_name, help="task name")
    p.add_argument("--limit", type=int, default=50, help="most recent runs shown (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bind(p, "cmd_history")

    golden = subparsers.add_parser("golden", help="must-pass examples of a task")
    gsteps = golden.add_subparsers(dest="golden_command", required=True)
    p = gsteps.add_parser("add", help="add a golden example")
    common(p)
    p.add_argument("--task", required=True, type=task_name, help="task name")
    p.add_argument(
        "--input",
        required=True,
        help="the user message (the task's system prompt is put first), or a JSON list of "
        "chat messages",
    )
    p.add_argument("--expected", required=True, help="the answer the student must give")
    p.add_argument("--note", help="why this example matters (default: none)")
    bind(p, "cmd_golden_add")
    p = gsteps.add_parser("list", help="list golden examples")
    common(p)
    p.add_argument("--task", type=task_name, help="only this task (default: every task)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bind(p, "cmd_golden_list")
    p = gsteps.add_parser("remove", help="remove a golden example by id")
    common(p)
    p.add_argument("id", type=int, help="the example's id (see `understudy golden list`)")
    bind(p, "cmd_golden_remove")

    p = subparsers.add_parser("rollback", help="serve an earlier champion of a task again")
    common(p)
    p.add_argument("--task", required=True, type=task_name, help="task name")
    p.add_argument(
        "--to", help="the version to serve, e.g. intent@v1 (default: the newest earlier champion)"
    )
    bind(p, "cmd_rollback")
    for name, examples in EXAMPLES.items():
        target = command_parser(subparsers, name)
        if target is not None:
            with_examples(target, examples)


def command_parser(
    subparsers: argparse._SubParsersAction, name: str
) -> argparse.ArgumentParser | None:
    """The parser of a command named by its words (``"distill run"``); None if there is none."""
    first, *rest = name.split()
    parser: argparse.ArgumentParser | None = subparsers.choices.get(first)
    for word in rest:
        if parser is None:
            return None
        steps = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = steps.choices.get(word)
    return parser
