"""The reading commands start fast: ``report``, ``tasks`` and ``export`` never import the model
libraries or the dataframe ones (sqlite-utils imports pandas and numpy when it can: a second of
every command's start, most of ``understudy report``'s time on a big log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from understudy.storage.database import open_database
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import write_rows

HEAVY = ("torch", "transformers", "numpy", "pandas")

RUN = """
import json, runpy, sys
out, sys.argv = sys.argv[1], ["understudy", *sys.argv[2:]]
try:
    runpy.run_module("understudy", run_name="__main__")
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def run_understudy(cwd: Path, *argv: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    """``understudy ARGV`` in a process of its own: its exit code and the modules it loaded."""
    out = cwd / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(out), *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.read_text()), done


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data")
    db = open_database(path / "understudy.db")
    rows = [
        RequestRecord(
            id=f"req_{i}",
            created_at=time.time() - i * 60,
            endpoint="chat.completions",
            task="classify",
            task_source="header",
            requested_model="gpt-4o-mini",
            served_by="teacher",
            status="ok",
            request_json=json.dumps({"messages": [{"role": "user", "content": f"q {i}"}]}),
            response_json=json.dumps({"choices": [{"message": {"content": "a"}}]}),
        ).as_row()
        for i in range(20)
    ]
    write_rows(db, "requests", rows)
    db.conn.close()
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ("report", "--since", "30d"),
        ("tasks",),
        ("export", "--task", "classify"),
    ],
)
def test_reading_commands_import_no_model_or_dataframe_library(data_dir, tmp_path, argv):
    result, done = run_understudy(tmp_path, *argv, "--data-dir", str(data_dir))
    assert result["code"] in (0, None), done.stderr
    assert "classify" in done.stdout + done.stderr  # the command did its work
    loaded = {m.split(".")[0] for m in result["modules"]}
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_version_loads_no_database_library(tmp_path):
    # Found: `understudy --version` loaded sqlite-utils (and with it pandas and numpy): 0.8 s.
    result, done = run_understudy(tmp_path, "--version")
    assert result["code"] == 0 and "understudy" in done.stdout
    loaded = {m.split(".")[0] for m in result["modules"]}
    assert loaded.isdisjoint({*HEAVY, "sqlite_utils"}), sorted(loaded & {*HEAVY, "sqlite_utils"})
