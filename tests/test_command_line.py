"""The ``understudy`` command line as a user meets it: ``--version``, help that names every
default, read-only commands that never create a database, and task-name typos refused with the
closest known names, nothing written."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.distiller.conftest import log_intents
from understudy.cli import build_parser, main
from understudy.storage.database import open_database

ROOT = Path(__file__).resolve().parents[1]


def understudy(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m understudy ...`` as a process, no settings from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    return subprocess.run(
        [sys.executable, "-m", "understudy", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    """``understudy ...`` through the entry point's ``main``, the data directory ``tmp_path``."""
    for name in [n for n in os.environ if n.startswith("UNDERSTUDY_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        words = 2 if argv[0] in ("distill", "golden") else 1
        code = main([*argv[:words], "--data-dir", str(tmp_path), *argv[words:]])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def tree(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_version_prints_the_installed_version(tmp_path):
    done = understudy("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == f"understudy {version('understudy')}\n"


READ_ONLY = [
    ("tasks",),
    ("tasks", "--json"),
    ("report",),
    ("export", "--task", "intent"),
    ("distill", "history", "--task", "intent"),
    ("golden", "list"),
]


@pytest.mark.parametrize("argv", READ_ONLY, ids=" ".join)
def test_a_read_only_command_never_creates_a_database(cli, tmp_path, argv):
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert err == (
        f"understudy: no database in {tmp_path} (start `understudy serve` there first, "
        "or pass --data-dir)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_default_data_dir_is_named_and_left_alone(tmp_path):
    done = understudy("tasks", cwd=tmp_path)
    assert done.returncode == 2
    assert "no database in understudy-data " in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def known(tmp_path) -> Iterator[Path]:
    """A data directory whose log holds one task, ``intent``."""
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, "intent", 3)
    db.conn.close()
    yield tmp_path


def dump(data_dir: Path) -> list[str]:
    db = open_database(data_dir / "understudy.db", migrate_schema=False)
    try:
        return list(db.conn.iterdump())
    finally:
        db.conn.close()


@pytest.mark.parametrize(
    "argv",
    [
        ("export", "--task", "intnet", "-o", "out.jsonl"),
        ("distill", "run", "--task", "intnet"),
        ("distill", "history", "--task", "intnet"),
        ("mode", "--task", "intnet", "shadow"),
        ("rollback", "--task", "intnet"),
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_an_unknown_task_is_refused_with_the_closest_names(cli, known, argv):
    before, files = dump(known), tree(known)
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert err == (
        "understudy: unknown task 'intnet': did you mean 'intent'? (see `understudy tasks`)\n"
    )
    assert dump(known) == before  # no skipped run, mode or event recorded
    assert tree(known) == files  # no output file either


def test_an_unknown_task_with_nothing_close_lists_the_known_ones(cli, known):
    code, _, err = cli("export", "--task", "weather")
    assert code == 2 and "unknown task 'weather': known tasks: intent" in err


def test_export_counts_in_the_singular_for_one_example(cli, tmp_path):
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, "intent", 1)
    db.conn.close()
    code, out, err = cli("export", "--task", "intent")
    assert code == 0 and len(out.splitlines()) == 1
    assert err == "exported 1 example of task 'intent'\n"


def options(parser: argparse.ArgumentParser, prefix: str = "understudy") -> Iterator[tuple]:
    """(command, option, help) of every option that takes a value and may be left out."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, f"{prefix} {name}")
        elif action.option_strings and not action.required and action.nargs != 0:
            yield prefix, action.option_strings[-1], action.help or ""


def test_every_optional_option_names_its_default_in_help():
    found = list(options(build_parser()))
    assert ("understudy report", "--since") in {(c, o) for c, o, _ in found}
    missing = [(c, o, h) for c, o, h in found if "default" not in h]
    assert missing == []


def test_report_help_shows_the_window_default_and_the_formats(tmp_path):
    done = understudy("report", "--help", cwd=tmp_path)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "(default 7d)" in text and "json or csv for scripts (default table)" in text


def commands(parser: argparse.ArgumentParser, prefix: str = "understudy") -> Iterator[tuple]:
    """(command, parser) of the program and every command under it."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prefix} {name}")


def test_every_command_ends_its_help_with_examples_of_itself():
    found = dict(commands(build_parser()))
    assert {"understudy serve", "understudy distill run", "understudy golden add"} <= set(found)
    for name, parser in found.items():
        text = parser.format_help()
        assert "\nexamples:\n" in text, name
        examples = text.split("\nexamples:\n", 1)[1].split("\n\n")[0].splitlines()
        assert examples and all(line.startswith("  ") for line in examples), name
        assert any(line.strip().startswith(name) for line in examples), (name, examples)


def test_the_programs_help_lists_the_exit_codes():
    text = build_parser().format_help()
    codes = text.split("\nexit codes:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in codes] == ["0", "1", "2", "3", "75"]


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """``understudy export ... | head -1``: the pipe closes after the first line; the command
    stops quietly (it printed a BrokenPipeError traceback)."""
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, "intent", 400)
    db.conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    command = [sys.executable, "-m", "understudy", "export", "--task", "intent"]
    command += ["--data-dir", str(tmp_path)]
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert code == 1
