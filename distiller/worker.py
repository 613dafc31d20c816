"""Training and evaluation of one run, as a job: ``python -m understudy.distiller.worker
JOB.json``.

The job file names the run directory and the data files; the worker trains the candidate,
evaluates it and the current champion on the same held-out and golden examples, and writes
``result.json`` into the run directory (written whole, or not at all). It can also be started
under ``accelerate launch -m understudy.distiller.worker JOB.json`` for multi-GPU training:
every rank trains, only the main one evaluates and writes the result.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from understudy.distiller.config import GateConfig, TrainConfig
from understudy.distiller.dataset import Example

log = logging.getLogger("understudy.distiller")

RESULT_FILE = "result.json"
JOB_FILE = "job.json"
LOG_FILE = "train.log"
PROGRESS_FILE = "progress.jsonl"


def write_examples(path: Path, examples: list[Example]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")


def read_examples(path: Path) -> list[Example]:
    with path.open(encoding="utf-8") as fh:
        return [Example.from_dict(json.loads(line)) for line in fh if line.strip()]


def run_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Train, evaluate candidate and champion; return (and write) the result."""
    from understudy.distiller.evaluate import evaluate_student
    from understudy.distiller.generate import StudentRunner
    from understudy.distiller.train import train_candidate

    run_dir = Path(job["run_dir"])
    train_config = TrainConfig(**job["train"])
    gate_config = GateConfig(**job["gates"])
    train = read_examples(run_dir / "train.jsonl")
    held_out = read_examples(run_dir / "eval.jsonl")
    golden = json.loads((run_dir / "golden.json").read_text())
    trained = train_candidate(
        train,
        train_config,
        run_dir / "candidate",
        log_path=run_dir / PROGRESS_FILE,
        warm_start=job.get("warm_start"),
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    judge = {
        "kind": job["kind"],
        "config": gate_config,
        "system_prompt": job.get("system_prompt"),
    }
    log.info("evaluating the candidate on %d held-out examples", len(held_out))
    runner = StudentRunner(trained.weights, trained.adapter_path, train_config.device)
    candidate = evaluate_student(runner, held_out, golden, **judge)
    del runner
    champion = None
    if job.get("champion"):
        log.info("evaluating the champion %s on the same examples", job["champion"]["id"])
        ch = job["champion"]
        runner = StudentRunner(ch["weights"], ch.get("adapter_path"), train_config.device)
        champion = evaluate_student(runner, held_out, golden, **judge).to_dict()
    result = {
        "train": trained.to_dict(),
        "candidate": candidate.to_dict(),
        "champion": champion,
    }
    tmp = run_dir / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(run_dir / RESULT_FILE)
    return result


def setup_logging() -> None:
    """Log lines to stderr, which the parent sends to ``train.log`` with the progress bars."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def exit_with_parent(interval_s: float = 1.0) -> None:
    """Stop this process when the run that started it is gone (no orphaned training)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                log.error("the distillation run that started this job is gone; stopping")
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m understudy.distiller.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text())
    setup_logging()
    exit_with_parent()
    run_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
