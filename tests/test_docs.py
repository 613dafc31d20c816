"""The README and the reference pages in docs/ keep up with the code and with each other: every
setting and every command is documented, the settings table is the generated one, every link
resolves, the README's first screen is the quickstart, and its install and test commands are the
ones CI runs."""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path

import pytest

from understudy.cli import build_parser
from understudy.settings import iter_setting_docs
from understudy.settings_docs import END, PAGE, START, render

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
SETTINGS = (ROOT / PAGE).read_text()
CLI = (ROOT / "docs" / "cli.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()
FIRST_SCREEN = 45  # lines: what a reader sees before scrolling

FENCE = re.compile(r"^ *```.*?^ *```[^\n]*$", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def commands(parser: argparse.ArgumentParser, prefix: str = "understudy") -> list[str]:
    """Every command line the parser accepts, subcommands of subcommands included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix} {name}")
                found.extend(commands(sub, f"{prefix} {name}"))
    return found


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def section(text: str, heading: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    following = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE)
    end = following.search(text, start + len(heading) + 2)
    return text[start : end.start() if end else len(text)]


def code_blocks(text: str) -> list[str]:
    """The contents of each fenced block, indentation (a block in a list item) removed."""
    return [textwrap.dedent("\n".join(b.splitlines()[1:-1])) for b in FENCE.findall(text)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor in a page, repeated headings numbered as GitHub numbers them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", markdown).splitlines():
        match = re.match(r"^#{1,6} (.+)$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(markdown: str) -> list[str]:
    """Link targets in a page, outside code blocks and inline code."""
    return LINK.findall(INLINE.sub("", FENCE.sub("", markdown)))


def broken_links(page: Path, markdown: str) -> list[str]:
    """Relative links of a page whose file, or whose heading in a Markdown file, is missing."""
    broken = []
    for target in links(markdown):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if path and not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            text = markdown if file == page else file.read_text()
            if anchor not in anchors(text):
                broken.append(target)
    return broken


# --- settings and commands, documented -------------------------------------------------------


def test_settings_table_matches_the_code():
    assert SETTINGS.count(START) == 1 and SETTINGS.count(END) == 1
    assert render(SETTINGS) == SETTINGS, "run: python -m understudy.settings_docs"


def test_every_setting_and_its_environment_variable_is_on_the_settings_page():
    for key, env, _, _ in iter_setting_docs():
        assert f"| `{key}` |" in SETTINGS, key
        assert not env or f"`{env}`" in SETTINGS, env


def test_every_command_and_subcommand_is_in_the_command_table():
    found = commands(build_parser())
    assert "understudy distill run" in found and "understudy golden remove" in found
    table = section(CLI, "## Commands")
    for command in found:
        assert f"| `{command}" in table, command


def test_every_demo_option_is_in_the_demo_table_with_its_default():
    table = section(CLI, "## `understudy demo`")
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`--"):
            names = re.findall(r"`(--[\w-]+)", cells[0])
            defaults = [value.strip("` ") for value in cells[1].split(",")]
            if len(defaults) != len(names):
                defaults = [cells[1]] * len(names)
            rows.update(zip(names, defaults, strict=True))
    demo = subparser(build_parser(), "demo")
    options = [a for a in demo._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 10
    for action in options:
        name = action.option_strings[0]
        assert name in rows, f"{name} of `understudy demo` is not in docs/cli.md"
        default = action.default
        if default is None:  # chosen at run time; the table says how
            continue
        if isinstance(default, bool):
            expected = "on" if default else "off"
        elif isinstance(default, float):
            expected = f"{default:g}"
        else:
            expected = str(default)
        assert expected.removeprefix("./") in rows[name], (name, expected, rows[name])


def test_parsers_used_for_the_check_see_nested_commands():
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers()
    inner = sub.add_parser("a").add_subparsers()
    inner.add_parser("b")
    assert commands(parser, "x") == ["x a", "x a b"]


# --- links ------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page: Path):
    assert not broken_links(page, page.read_text())


def test_the_link_check_finds_missing_files_and_headings(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other\n\n## The dashboard: `GET /dashboard`\n")
    page = tmp_path / "page.md"
    text = (
        "# Page\n\n## Try it offline: `understudy demo`\n\n## Notes\n\n## Notes\n\n"
        "[a](#try-it-offline-understudy-demo) [b](#notes-1)"
        " [c](other.md#the-dashboard-get-dashboard) [d](https://example.com/x)"
        " [e](missing.md) [f](other.md#nope) [g](#nope)\n"
        "`[h](ignored.md)`\n```\n[i](ignored.md)\n```\n"
    )
    assert broken_links(page, text) == ["missing.md", "other.md#nope", "#nope"]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.partition("#")[0] for target in links(README)}
    assert DOCS
    for page in DOCS:
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"


# --- the README's first screen and its contents -----------------------------------------------


def test_the_first_screen_is_the_quickstart_against_the_real_api():
    screen = "\n".join(README.splitlines()[:FIRST_SCREEN])
    assert "export UNDERSTUDY_TEACHER_API_KEY=sk-" in screen
    assert "understudy serve" in screen
    assert 'OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=' in screen
    assert "any `api_key` works" in screen and "UNDERSTUDY_API_KEYS" in screen
    # what it saves: a measured figure, and the command that measured it
    assert re.search(r"saved \d+(\.\d+)?% of the teacher calls", screen)
    assert "python bench/replay.py" in screen


def test_the_savings_command_on_the_first_screen_is_a_recorded_one():
    command = re.search(r"`(OMP_NUM_THREADS=1 python bench/replay.py [^`]+)`", README)
    assert command
    options = command.group(1).split("python bench/replay.py ", 1)[1]
    benchmarks = re.sub(r"\s*\\\n\s*", " ", (ROOT / "BENCHMARKS.md").read_text())
    recorded = options.replace("--teacher gpt-label", "--teacher $t")
    assert recorded in benchmarks, "the README's savings command is not one BENCHMARKS.md records"


def test_the_contents_link_every_section_of_the_readme():
    contents = section(README, "## Contents")
    listed = {target.removeprefix("#") for target in links(contents) if target.startswith("#")}
    headings = {
        slug(line[3:]) for line in FENCE.sub("", README).splitlines() if line.startswith("## ")
    }
    assert listed <= headings
    assert headings - {"contents", "quickstart-in-front-of-the-openai-api"} <= listed


def test_the_install_and_test_commands_are_the_ones_ci_runs():
    (install,) = code_blocks(section(README, "## Install"))
    (quickstart_install, *_) = code_blocks(
        section(README, "## Quickstart: in front of the OpenAI API")
    )
    assert install == quickstart_install
    pip = install.split(" && ")[-1]
    assert pip.startswith("pip install -e ") and f"\n{pip}\n" in CI
    (test,) = code_blocks(section(README, "## Test"))
    assert test == "python -m pytest -q -n 2" and f"\n{test}\n" in CI
    # and the end-to-end suite again with every gateway on PostgreSQL, as the README says
    on_postgres = f"{test} tests/e2e --e2e-storage postgresql"
    assert f"`{on_postgres}`" in section(README, "## Test") and f"\n{on_postgres}\n" in CI


def test_requirements_name_the_python_version_and_the_cpu_torch_build():
    requirements = section(README, "## Requirements")
    assert "Python 3.11 or newer" in requirements
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject
    pin = re.search(r'"torch==([\d.]+)"', pyproject)
    assert pin
    cpu = f"pip install torch=={pin.group(1)} --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in requirements


def test_troubleshooting_answers_what_new_users_ran_into():
    troubleshooting = section(README, "## Troubleshooting")
    for symptom in (
        "Missing credentials",
        "teacher_auth_failed",
        "401 Incorrect API key provided",
        "address already in use",
        "unknown task",
        "no database in",
    ):
        assert re.search(rf"^### .*{re.escape(symptom)}", troubleshooting, re.MULTILINE), symptom


def test_upgrading_says_to_back_up_and_how_to_roll_back():
    upgrading = section(README, "## Upgrading")
    assert "Back up" in upgrading and "migration" in upgrading
    assert "understudy rollback --task T" in upgrading
