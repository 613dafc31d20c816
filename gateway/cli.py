"""The ``understudy`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return load_settings(
        config_file=args.config,
        overrides={"data_dir": getattr(args, "data_dir", None), **overrides},
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    settings = _settings(args, host=args.host, port=args.port, **{"teacher.url": args.teacher_url})
    serve(settings)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from gateway.commands import print_tasks

    return print_tasks(_settings(args), as_json=args.json)


def cmd_export(args: argparse.Namespace) -> int:
    from gateway.commands import export

    return export(_settings(args), task=args.task, fmt=args.format, output=args.output)


def cmd_mode(args: argparse.Namespace) -> int:
    from gateway.commands import set_task_mode

    return set_task_mode(_settings(args), task=args.task, mode=args.mode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="understudy",
        description="OpenAI-compatible gateway that distils your teacher model into a student.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML config file (default: ./understudy.toml if present)")
        p.add_argument("--data-dir", help="data directory (default: ./understudy-data)")

    p = sub.add_parser("serve", help="run the gateway")
    common(p)
    p.add_argument("--teacher-url", help="teacher base URL including /v1")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("tasks", help="list tasks with request counts")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("export", help="write logged teacher answers as fine-tuning data")
    common(p)
    p.add_argument("--task", required=True, help="task name (see `understudy tasks`)")
    p.add_argument("--format", default="jsonl", choices=["jsonl"], help="output format")
    p.add_argument("--output", "-o", help="output file (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("mode", help="set a task's serving mode (picked up by a running gateway)")
    common(p)
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("mode", choices=["teacher-only", "shadow", "routed"], help="the new mode")
    p.set_defaults(func=cmd_mode)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"understudy: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
