"""The settings table of ``docs/settings.md``, generated from the settings dataclasses.

``python -m understudy.settings_docs`` rewrites the table between the markers in
docs/settings.md (or in the file named as its argument); ``tests/test_docs.py`` fails when the
page falls behind the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from understudy.settings import iter_setting_docs

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
PAGE = "docs/settings.md"


def settings_table() -> str:
    lines = [
        "| setting | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, env, default, doc in iter_setting_docs():
        default = (
            default.replace("PosixPath(", "").replace(")", "") if "Path" in default else (default)
        )
        env_cell = f"`{env}`" if env else "(config file only)"
        lines.append(f"| `{key}` | {env_cell} | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(lines)


def render(page: str) -> str:
    """The page with the table between its markers regenerated."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{settings_table()}\n{END}", page)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else PAGE)
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
