"""A full disk under the database: serving goes on, /ready says so, logging resumes after."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import GatewayProcess

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
    with path.open("wb") as fh:
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
        assert httpx.get(gw.url + "/ready").status_code == 200
