"""A full disk under the database: serving goes on, /ready says so, logging resumes after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import ROOT, GatewayProcess

pytestmark = pytest.mark.sqlite_only(
    "a full or read-only disk under the data directory's SQLite file (PostgreSQL's disk is the"
    " server's)"
)

CHAT = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    # Unbuffered: a buffered file would keep the part of a write that did not fit and raise
    # ENOSPC again when it is closed.
    with path.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            pass


def test_full_disk_does_not_stop_serving(stub, teacher, small_disk):
    env = gateway_env(UNDERSTUDY_STUDENT_BACKEND="none")
    with GatewayProcess(stub.base_url, small_disk / "data", env=env) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="m", messages=CHAT)
        assert len(gw.wait_rows()) == 1
        filler = small_disk / "filler"
        fill(filler)
        big = [{"role": "user", "content": "What is 2+2? " + "pad " * 20000}]
        started = time.monotonic()
        for _ in range(5):
            assert c.chat.completions.create(model="m", messages=big).choices
        assert time.monotonic() - started < 10
        ready = httpx.get(gw.url + "/ready")
        assert ready.status_code == 503 and ready.json()["database"]["ok"] is False
        filler.unlink()
        assert len(gw.wait_rows(count=6, timeout=10)) == 6  # kept, then written
        assert gw.ready_status(200) == 200


def serve_once(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "understudy.cli", "serve", "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "UNDERSTUDY_STUDENT_BACKEND": "none", "UNDERSTUDY_PORT": "1"},
    )


def test_start_up_on_a_full_disk_says_so_in_one_line(small_disk):
    fill(small_disk / "filler")
    result = serve_once(small_disk / "data")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert str(small_disk / "data") in result.stderr and "No space left" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_start_up_on_a_read_only_data_dir_says_so_in_one_line(small_disk):
    (small_disk / "data").mkdir()
    ro = subprocess.run(
        ["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True
    )
    if ro.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {ro.stderr.strip()}")
    result = serve_once(small_disk / "data")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert str(small_disk / "data") in result.stderr and "Read-only" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
