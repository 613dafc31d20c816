"""The README keeps up with the code: every setting and every command is documented."""

from pathlib import Path

from gateway.cli import build_parser
from gateway.settings_docs import render

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_settings_table_matches_the_code():
    assert render(README) == README, "run: python -m gateway.settings_docs"


def test_every_command_is_in_the_readme():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        assert f"understudy {name}" in README, name
