"""The README keeps up with the code: every setting and every command is documented."""

import argparse
from pathlib import Path

from understudy.cli import build_parser
from understudy.settings import iter_setting_docs
from understudy.settings_docs import END, START, render

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def commands(parser: argparse.ArgumentParser, prefix: str = "understudy") -> list[str]:
    """Every command line the parser accepts, subcommands of subcommands included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix} {name}")
                found.extend(commands(sub, f"{prefix} {name}"))
    return found


def command_table() -> str:
    section = README[README.index("## Command line") :]
    return section[: section.index("\n## ", 1)]


def test_settings_table_matches_the_code():
    assert README.count(START) == 1 and README.count(END) == 1
    assert render(README) == README, "run: python -m understudy.settings_docs"


def test_every_setting_and_its_environment_variable_is_in_the_readme():
    for key, env, _, _ in iter_setting_docs():
        assert f"| `{key}` |" in README, key
        assert not env or f"`{env}`" in README, env


def test_every_command_and_subcommand_is_in_the_command_table():
    found = commands(build_parser())
    assert "understudy distill run" in found and "understudy golden remove" in found
    table = command_table()
    for command in found:
        assert f"| `{command}" in table, command


def test_parsers_used_for_the_check_see_nested_commands():
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers()
    inner = sub.add_parser("a").add_subparsers()
    inner.add_parser("b")
    assert commands(parser, "x") == ["x a", "x a b"]
