"""The demo's child processes: ``understudy serve`` and ``understudy distill run``.

Both are started with this Python (``python -m understudy.cli``), so the demo works the same
from a checkout or an installed package. ``UNDERSTUDY_*`` variables of the caller's
environment are left out: the demo's config file says everything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from understudy.demo.config import ADMIN_KEY
from understudy.settings import load_settings


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and where the log is."""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "understudy.cli", *args]


def pick_port(wanted: int | None) -> int:
    """``wanted``; by default 8000, or a free port when 8000 is taken."""
    if wanted is not None:
        return wanted if wanted else _free_port()
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            return _free_port()
    return 8000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """``understudy serve --config FILE`` in a child process, its output in ``log_path``."""

    def __init__(self, config_path: Path, port: int, log_path: Path) -> None:
        self.config_path = config_path
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cli("serve", "--config", str(self.config_path)),
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"the gateway exited at start:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise DemoError(f"the gateway did not answer within {timeout_s:g} s:\n{self.tail()}")

    def route_to_student(self, task: str) -> None:
        """Switch the task to routed and make the gateway load its champion now (admin API)."""
        response = httpx.post(
            f"{self.url}/admin/tasks/{task}/mode",
            json={"mode": "routed"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120.0,
        )
        if response.status_code != 200:
            raise DemoError(f"the gateway refused the routing switch: {response.text}")

    def task_state(self, task: str) -> dict[str, Any] | None:
        """The task's serving state from the admin API (mode, champion, reason)."""
        try:
            response = httpx.get(
                f"{self.url}/admin/tasks",
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
                timeout=10.0,
            )
            states = response.json().get("data") or []
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return next((s for s in states if s.get("task") == task), None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self) -> None:
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the request log is flushed), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def distill(
    config_path: Path,
    task: str,
    log_path: Path,
    on_progress: Callable[[dict[str, Any]], None],
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """Run ``understudy distill run --task TASK --json``; hand each training progress record
    to ``on_progress`` while it runs; return the run's outcome."""
    runs_dir = _runs_dir(config_path, task)
    before = set(runs_dir.iterdir()) if runs_dir.is_dir() else set()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cli("distill", "run", "--task", task, "--config", str(config_path), "--json"),
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        tail = _ProgressTail(runs_dir, before, on_progress)
        try:
            while proc.poll() is None:
                time.sleep(poll_s)
                tail.poll()
        except BaseException:
            proc.send_signal(signal.SIGTERM)  # the run is marked failed, the champion untouched
            proc.wait()
            raise
        tail.poll()
        out = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
    outcome = _outcome(out)
    if outcome is None:
        log_text = log_path.read_text(errors="replace").splitlines()[-20:]
        raise DemoError(
            f"`understudy distill run` failed (exit {proc.returncode}); log {log_path}:\n"
            + "\n".join(log_text)
        )
    return outcome


def _outcome(stdout: str) -> dict[str, Any] | None:
    """The run's JSON outcome: the last top-level JSON object printed (training libraries
    may print their own lines before it)."""
    lines = stdout.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] == "{":
            try:
                value = json.loads("\n".join(lines[i:]))
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _runs_dir(config_path: Path, task: str) -> Path:
    return Path(load_settings(config_file=config_path, env={}).data_dir) / "distill" / task


class _ProgressTail:
    """New JSON lines of the newest run's ``progress.jsonl``."""

    def __init__(
        self, runs_dir: Path, before: set[Path], callback: Callable[[dict[str, Any]], None]
    ) -> None:
        self.runs_dir = runs_dir
        self.before = before
        self.callback = callback
        self.offset = 0

    def poll(self) -> None:
        if not self.runs_dir.is_dir():
            return
        new = [p for p in self.runs_dir.iterdir() if p not in self.before]
        if not new:
            return
        path = max(new, key=lambda p: p.name) / "progress.jsonl"
        if not path.is_file():
            return
        with path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                self.callback(record)
