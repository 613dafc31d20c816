"""Running a training job in its own process and watching it.

The job runs as ``python -m understudy.distiller.worker JOB.json``, under ``accelerate launch``
when the job's ``train.num_processes`` is above 1 or it names an ``accelerate_config`` (or
behind ``train.launcher``), with the output of all its processes in the run's ``train.log``.
The parent relays a short progress line per logging step, kills the job and every process it
started on timeout or when it is itself interrupted, and reports a dead job with its exit code
or signal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from understudy.distiller.job import Job, JobResult
from understudy.distiller.launch import LaunchError, launch_command, process_threads
from understudy.distiller.worker import (
    FAILURE_MARK,
    LOG_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    RUN_PID_VARIABLE,
)
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

    ``threads`` > 0 holds the job's math libraries (OpenMP, MKL) to that many threads, shared
    among its training processes."""
    run_dir = job_path.parent
    train = Job.read(job_path).train
    try:
        prefix = launch_command(train, launcher)
    except LaunchError as exc:
        raise TrainingFailed(str(exc)) from None
    command = [*prefix, "-m", "understudy.distiller.worker", str(job_path)]
    env = _environment(process_threads(threads, train.num_processes) if threads > 0 else 0)
    with (run_dir / LOG_FILE).open("ab") as out:
        # In this process's group: whoever stops the run's group stops the job with it.
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=run_dir, close_fds=True
        )
    (run_dir / PID_FILE).write_text(str(proc.pid))
    log.info("training job started: pid %d, log %s", proc.pid, run_dir / LOG_FILE)
    if train.distributed:
        log.info("training job launched with: %s", " ".join(prefix))
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
                    raise TrainingFailed(f"training timed out after {timeout_s:g} s") from None
    finally:
        _stop(proc)
    tail.poll()
    if code != 0:
        raise TrainingFailed(f"training process {_describe(code)}{_last_error(run_dir)}")
    result_path = run_dir / RESULT_FILE
    if not result_path.is_file():
        raise TrainingFailed("training process ended without writing a result")
    return JobResult.read(result_path)


def _environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env[RUN_PID_VARIABLE] = str(os.getpid())
    if threads > 0:
        env.update(thread_environment(threads))
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the job: its process and every process it started (a launcher's
    training processes would train on, orphaned, until they noticed)."""
    descendants = _descendants(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (psutil comes with accelerate; without it,
    none: a plain job has none, and training processes stop when their run is gone)."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _describe(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def _last_error(run_dir: Path) -> str:
    """Why the job failed: the first process's own words (of several, the first to fail), else
    the log's last error line."""
    try:
        lines = (run_dir / LOG_FILE).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines[-500:]:
        if FAILURE_MARK in line:
            return f": {line.split(FAILURE_MARK, 1)[1].strip()[:300]}"
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
