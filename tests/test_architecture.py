"""ARCHITECTURE.md stays true: every repository path it names exists, and the README's
architecture and layout sections point at real paths too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text()
README = (ROOT / "README.md").read_text()
PARTS = ("understudy/", "gateway/", "router/", "student/", "storage/", "distiller/")

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`([^`\n]+)`")
PATHLIKE = re.compile(r"^\.?[\w-][\w.-]*(/[\w.-]+)*/?$")
SUFFIXES = (".py", ".md", ".toml", ".yaml", ".yml", ".sh", ".json", ".txt", ".gz", ".csv")


def looks_like_path(token: str) -> bool:
    """A relative path in the repository: a folder (``a/``, ``a/b``) or a file (``a.py``)."""
    if not PATHLIKE.match(token):
        return False
    return "/" in token or token.endswith(SUFFIXES) or token.startswith(".ci")


def named_paths(text: str) -> set[str]:
    """Paths in inline code, and path-like words in fenced blocks (the diagrams)."""
    found = {span.strip() for span in INLINE.findall(FENCE.sub("", text))}
    for block in FENCE.findall(text):
        found.update(word.strip("()[],;:") for word in block.split())
    return {token for token in found if looks_like_path(token)}


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_path_finder_reads_inline_code_and_diagrams():
    text = "See `a/b.py`, `x-understudy-task`, `router.quality_target`, `/v1/models`.\n"
    text += "```\nc/d.py   (e/)  f.g  -> verdict\n```\n`README.md` `.ci/run`\n"
    assert named_paths(text) == {"a/b.py", "c/d.py", "e/", "README.md", ".ci/run"}


def test_the_architecture_page_names_every_part():
    paths = named_paths(ARCHITECTURE)
    assert set(PARTS) <= paths
    assert len(paths) > 40


@pytest.mark.parametrize("path", sorted(named_paths(ARCHITECTURE)))
def test_every_path_in_the_architecture_page_exists(path):
    assert (ROOT / path).exists(), f"ARCHITECTURE.md names {path}, which is not in the repository"


@pytest.mark.parametrize("title", ["Architecture", "Layout"])
def test_the_readme_architecture_and_layout_name_real_paths(title):
    paths = named_paths(section(README, title))
    assert paths
    missing = sorted(path for path in paths if not (ROOT / path).exists())
    assert not missing, f"README's {title} section names missing paths: {missing}"


def test_the_readme_links_the_architecture_page():
    assert "(ARCHITECTURE.md)" in section(README, "Architecture")
