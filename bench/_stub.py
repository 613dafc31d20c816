"""The stand-in teacher of ``tests/`` started as a process for the benches that need its
faults and modes (``bench/soak.py``, ``bench/chaos.py``)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.gateway_process import free_port

ROOT = Path(__file__).resolve().parent.parent


def start_stub_teacher(*options: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m tests.teacher_stub`` with ``options`` on a free port, once it answers;
    returns the process and its root URL (without ``/v1``)."""
    port = free_port()
    cmd: Sequence[str] = [sys.executable, "-m", "tests.teacher_stub", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, *options], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/v1/models", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the stand-in teacher did not start")
