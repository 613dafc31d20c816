"""Training and evaluation of one run, as a job: ``python -m understudy.distiller.worker
JOB.json``.

The job file names the run directory and the data files; the worker trains the candidate,
evaluates it and the current champion on the same held-out and golden examples, and writes
``result.json`` into the run directory (written whole, or not at all). It can also be started
under ``accelerate launch -m understudy.distiller.worker JOB.json`` (``train.num_processes``,
``train.accelerate_config``): every process trains, only the first writes the model, evaluates
it and writes the result, of the same shape as a single process's.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from understudy.distiller.dataset import Example
from understudy.distiller.job import Job, JobResult
from understudy.distiller.launch import (
    is_main_process,
    leave_process_group,
    process_threads,
    rank,
    world_size,
)
from understudy.student.threads import use_threads

log = logging.getLogger("understudy.distiller")

RESULT_FILE = "result.json"
JOB_FILE = "job.json"
LOG_FILE = "train.log"
PROGRESS_FILE = "progress.jsonl"
FAILURE_MARK = "training failed: "
"""Starts the log line that says why the job failed (the run's reason is read from it: behind a
launcher, the launcher's own report comes last and names no cause)."""
RUN_PID_VARIABLE = "UNDERSTUDY_DISTILL_RUN_PID"
"""The process id of the run that started the job: the job stops when that process is gone,
also with a launcher (``accelerate launch``) between the two."""


def write_examples(path: Path, examples: list[Example]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")


def read_examples(path: Path) -> list[Example]:
    with path.open(encoding="utf-8") as fh:
        return [Example.from_dict(json.loads(line)) for line in fh if line.strip()]


def run_job(job: Job) -> JobResult | None:
    """Train, evaluate candidate and champion; return (and write) the result. Under a
    multi-GPU launcher, only the main rank evaluates: the others return ``None``."""
    from understudy.distiller.evaluate import evaluate_student
    from understudy.distiller.generate import StudentRunner
    from understudy.distiller.train import train_candidate

    run_dir = Path(job.run_dir)
    if job.train.threads > 0:
        threads = process_threads(job.train.threads, world_size())
        use_threads(threads)
        log.info("torch threads: %d", threads)
    train = read_examples(run_dir / "train.jsonl")
    held_out = read_examples(run_dir / "eval.jsonl")
    golden = json.loads((run_dir / "golden.json").read_text())
    trained = train_candidate(
        train,
        job.train,
        run_dir / "candidate",
        log_path=run_dir / PROGRESS_FILE,
        warm_start=job.warm_start,
    )
    leave_process_group()
    if not is_main_process():
        return None
    log.info("evaluating the candidate on %d held-out examples", len(held_out))
    device = job.train.device
    models = 1 if job.champion is None else 2
    report = _evaluation_progress(run_dir / PROGRESS_FILE, models)
    runner = StudentRunner(trained.weights, trained.adapter_path, device)
    candidate = evaluate_student(
        runner,
        held_out,
        golden,
        kind=job.kind,
        config=job.gates,
        system_prompt=job.system_prompt,
        on_progress=report(0),
    )
    del runner
    champion = None
    if job.champion is not None:
        log.info("evaluating the champion %s on the same examples", job.champion.id)
        runner = StudentRunner(job.champion.weights, job.champion.adapter_path, device)
        champion = evaluate_student(
            runner,
            held_out,
            golden,
            kind=job.kind,
            config=job.gates,
            system_prompt=job.system_prompt,
            on_progress=report(1),
        )
    result = JobResult(trained, candidate, champion)
    result.write(run_dir / RESULT_FILE)
    return result


def _evaluation_progress(path: Path, models: int) -> Callable[[int], Callable[[int, int], None]]:
    """For the ``index``-th of ``models`` evaluated on the same examples: a callback appending
    ``{"evaluated": done, "to_evaluate": total}`` (over all of them) to the progress file, which
    ``distill run`` shows as the evaluate phase's bar."""

    def for_model(index: int) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            record = {"evaluated": index * total + done, "to_evaluate": models * total}
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

        return report

    return for_model


def setup_logging() -> None:
    """Log lines to stderr, which the parent sends to ``train.log`` with the progress bars;
    of several training processes, the others log warnings and errors only, named by rank."""
    main = is_main_process()
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s"
        + ("" if main else f" [process {rank()}]")
        + ": %(message)s",
    )


def exit_with_parent(interval_s: float = 1.0) -> None:
    """Stop this process when the run that started it is gone (no orphaned training): its
    parent, or the run named by ``UNDERSTUDY_DISTILL_RUN_PID`` (a launcher in between)."""
    import threading
    import time

    parent = os.getppid()
    run = int(os.environ.get(RUN_PID_VARIABLE) or 0)

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent or (run and not process_alive(run)):
                log.error("the distillation run that started this job is gone; stopping")
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def process_alive(pid: int) -> bool:
    """``pid`` runs (a zombie, dead but not yet waited for, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal said it exists
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m understudy.distiller.worker JOB.json", file=sys.stderr)
        return 2
    job = Job.read(Path(args[0]))
    setup_logging()
    exit_with_parent()
    try:
        run_job(job)
    except Exception as exc:
        log.error("%s%s: %s", FAILURE_MARK, type(exc).__name__, exc)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
