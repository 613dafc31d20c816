"""Running a training job in its own process and watching it.

The job runs as ``python -m understudy.distiller.worker JOB.json`` (optionally behind a launcher
such as ``accelerate launch``), with its output in the run's ``train.log``. The parent relays a
short progress line per logging step, kills the job on timeout or when it is itself interrupted,
and reports a dead job with its exit code or signal.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from understudy.distiller.job import JobResult
from understudy.distiller.worker import LOG_FILE, PROGRESS_FILE, RESULT_FILE
from understudy.student.threads import thread_environment

log = logging.getLogger("understudy.distiller")

PID_FILE = "worker.pid"


class TrainingFailed(Exception):
    """The training job died, timed out or wrote no result."""


def run_job_process(
    job_path: Path,
    *,
    timeout_s: float,
    threads: int = 0,
    launcher: Sequence[str] = (),
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 0.5,
) -> JobResult:
    """Run the job to its end and return its result; raise :class:`TrainingFailed`.

    ``threads`` > 0 holds the job's math libraries (OpenMP, MKL) to that many threads."""
    run_dir = job_path.parent
    command = [*launcher, "-m", "understudy.distiller.worker", str(job_path)]
    if not launcher:
        command = [sys.executable, *command]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads > 0:
        env.update(thread_environment(threads))
    with (run_dir / LOG_FILE).open("ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=run_dir, close_fds=True
        )
    (run_dir / PID_FILE).write_text(str(proc.pid))
    log.info("training job started: pid %d, log %s", proc.pid, run_dir / LOG_FILE)
    tail = _ProgressTail(run_dir / PROGRESS_FILE, on_progress)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                code = proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                tail.poll()
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise TrainingFailed(f"training timed out after {timeout_s:g} s") from None
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    tail.poll()
    if code != 0:
        raise TrainingFailed(f"training process {_describe(code)}{_last_error(run_dir)}")
    result_path = run_dir / RESULT_FILE
    if not result_path.is_file():
        raise TrainingFailed("training process ended without writing a result")
    return JobResult.read(result_path)


def _describe(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def _last_error(run_dir: Path) -> str:
    try:
        lines = (run_dir / LOG_FILE).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines[-50:]):
        if "Error" in line or "error" in line:
            return f": {line.strip()[:300]}"
    return f" (see {run_dir / LOG_FILE})"


class _ProgressTail:
    """Reads new JSON lines of the progress file and hands each to a callback."""

    def __init__(self, path: Path, callback: Callable[[dict[str, Any]], None] | None) -> None:
        self.path, self.callback, self.offset = path, callback, 0

    def poll(self) -> None:
        if self.callback is None or not self.path.is_file():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            if line.strip():
                self.callback(json.loads(line))
