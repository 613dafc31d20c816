"""One distillation run of one task: dataset, (augmentation), training, evaluation, gates,
promotion. The run row is written as ``running`` first and always ends ``succeeded``,
``skipped`` or ``failed`` with a reason; only a run whose gates all pass touches the champion.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from understudy.distiller.augment import Teacher, augment
from understudy.distiller.calibrate import (
    Calibration,
    calibrate,
    champion_served,
    confidence_levels,
    unseen_by,
)
from understudy.distiller.classical import BASE as CLASSICAL_BASE
from understudy.distiller.classical import ENGINE as CLASSICAL
from understudy.distiller.classical import (
    classical_split,
    read_label_agreement,
    train_classical,
)
from understudy.distiller.classical import fits as classical_fits
from understudy.distiller.config import DistillConfig
from understudy.distiller.dataset import Dataset, build_dataset
from understudy.distiller.evaluate import ModelEval, evaluate_student
from understudy.distiller.gates import GateResult, evaluate_gates, failed_reason
from understudy.distiller.generate import StudentRunner
from understudy.distiller.job import ChampionWeights, Job, JobResult
from understudy.distiller.lock import TaskLock, recover_stale_runs
from understudy.distiller.process import TrainingFailed, run_job_process
from understudy.distiller.progress import NoProgress, Progress, following_progress
from understudy.distiller.promote import promote_candidate, store_eval
from understudy.distiller.train import WarmStart
from understudy.distiller.worker import JOB_FILE, PROGRESS_FILE, run_job, write_examples
from understudy.storage.config import db_path
from understudy.storage.database import Store
from understudy.storage.distill_queries import insert_run, list_golden, update_run
from understudy.storage.engine import Address
from understudy.storage.registry import ModelVersion, champion, log_event, run_outcome
from understudy.student.threads import auto_threads

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger("understudy.distiller")

MODEL = "model"
"""The language-model candidate: ``train.base_model`` trained with ``train.method``."""
CLASSICAL_DIR = "candidate-classical"


@dataclass
class RunOutcome:
    """What a run did; the same facts are stored in its ``distill_runs`` row."""

    run_id: str
    task: str
    status: str
    """``succeeded`` (gates evaluated), ``skipped`` (too little data) or ``failed``."""
    promoted: bool = False
    reason: str | None = None
    candidate_id: str | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_distillation(
    data_dir: Path,
    task: str,
    config: DistillConfig | None = None,
    *,
    trigger: str = "manual",
    teacher: Teacher | None = None,
    progress: Progress | None = None,
    database: Address | None = None,
) -> RunOutcome:
    """Run once for ``task``; raise :class:`~distiller.lock.RunInProgress` if one is going.
    ``progress`` hears of each phase as it goes (:mod:`~understudy.distiller.progress`)."""
    config = (config or DistillConfig()).for_task(task)
    progress = progress or NoProgress()
    data_dir = Path(data_dir)
    store = Store(db_path(data_dir) if database is None else database)  # storage.url
    store.migrate()
    with store.write() as db:
        for run_id in recover_stale_runs(db, ttl_s=config.schedule.lock_ttl_s):
            log.warning("run %s had crashed; marked failed", run_id)
        with TaskLock(
            store.path,
            task,
            ttl_s=config.schedule.lock_ttl_s,
            heartbeat_s=config.schedule.heartbeat_s,
        ) as lock:
            run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
            run_dir = data_dir / "distill" / task / run_id
            run_dir.mkdir(parents=True)
            now = time.time()
            insert_run(
                db,
                {
                    "id": run_id,
                    "task": task,
                    "started_at": now,
                    "status": "running",
                    "trigger": trigger,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "heartbeat_at": now,
                    "run_dir": str(run_dir),
                },
            )
            lock.attach(db, run_id)
            progress.started(run_id, run_dir)
            outcome = RunOutcome(run_id, task, "running")
            return _guarded(db, data_dir, run_dir, outcome, config, teacher, progress)


def _guarded(
    db: sqlite_utils.Database,
    data_dir: Path,
    run_dir: Path,
    outcome: RunOutcome,
    config: DistillConfig,
    teacher: Teacher | None,
    progress: Progress,
) -> RunOutcome:
    log.info("task %s: distillation run %s started", outcome.task, outcome.run_id)
    started = time.perf_counter()
    try:
        _run(db, data_dir, run_dir, outcome, config, teacher, progress)
    except TrainingFailed as exc:
        outcome.status, outcome.promoted, outcome.reason = "failed", False, str(exc)
    except Exception as exc:
        log.exception("task %s: run %s failed", outcome.task, outcome.run_id)
        outcome.status, outcome.promoted = "failed", False
        outcome.reason = f"{type(exc).__name__}: {exc}"
    except BaseException:
        _finish(db, outcome, "failed", "interrupted", started)
        raise
    finally:
        progress.finished()
        shutil.rmtree(run_dir / "candidate" / "checkpoints", ignore_errors=True)
    _finish(db, outcome, outcome.status, outcome.reason, started)
    return outcome


def _run(
    db: sqlite_utils.Database,
    data_dir: Path,
    run_dir: Path,
    outcome: RunOutcome,
    config: DistillConfig,
    teacher: Teacher | None,
    progress: Progress,
) -> None:
    task = outcome.task
    progress.phase("dataset")
    dataset = build_dataset(db, task, config.dataset, kind=config.gates.kind)
    outcome.dataset = dataset.stats
    _augment(dataset, config, teacher)
    usable = len(dataset.train) + len(dataset.eval)
    progress.note(f"{len(dataset.train)} train, {len(dataset.eval)} held out")
    if usable < config.dataset.min_examples:
        outcome.status = "skipped"
        outcome.reason = f"{usable} usable examples < min_examples {config.dataset.min_examples}"
        return
    if not dataset.eval:
        teachers = ", ".join(dataset.stats.get("live_teachers") or ())
        outcome.status = "skipped"
        outcome.reason = "no held-out answer to certify a student on: " + (
            f"no answer of the live teacher ({teachers}) drawn regardless of the router yet"
            if teachers
            else "no answer drawn regardless of the router"
        )
        return
    update_run(db, outcome.run_id, dataset_json=dataset.stats)
    job_path = _write_job(db, run_dir, dataset, config)
    job = Job.read(job_path)
    progress.phase("train")
    results = _train_candidates(job_path, job, dataset, config, task, progress)
    compared = " and the champion" if job.champion else ""
    judged_on = ", ".join(f"{engine} on {len(created)}" for engine, _, created in results)
    progress.note(f"{len(results)} candidate(s){compared}, held-out answers: {judged_on}")
    progress.phase("gates")
    current = champion(db, task)
    judged = [
        _judge(engine, result, created, dataset.kind, config, current)
        for engine, result, created in results
    ]
    best = _best(judged)
    outcome.gates = [g.to_dict() for g in best.gates]
    outcome.metrics = _metrics(best.result, best.fitted, job) | {
        "engine": best.engine,
        "candidates": {c.engine: c.summary() for c in judged},
    }
    outcome.status = "succeeded"
    outcome.reason = failed_reason(best.gates)
    progress.note(f"{sum(g.passed for g in best.gates)}/{len(best.gates)} passed ({best.engine})")
    if outcome.reason is None:
        train = outcome.metrics["train"]
        if best.engine == CLASSICAL:
            base = CLASSICAL_BASE
        else:
            base = config.train.base_model if config.train.method == "full" else train["base"]
        outcome.candidate_id = promote_candidate(
            db,
            data_dir,
            outcome.task,
            outcome.run_id,
            train,
            base=base,
            metrics={k: v for k, v in outcome.metrics.items() if k != "train"},
            router=best.fitted.router.to_dict(),
            data_window=dataset.stats.get("window", {}) | {"examples": dataset.stats["examples"]},
        )
        outcome.promoted = True
        outcome.reason = "all gates passed"
    if not config.keep_rejected_weights:
        for name in ("candidate", CLASSICAL_DIR):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    champ = best.result.champion
    store_eval(
        db,
        outcome.run_id,
        {outcome.candidate_id or f"candidate:{outcome.run_id}": best.result.candidate}
        | ({job.champion.id: champ} if champ and job.champion else {}),
    )


@dataclass
class Judged:
    """One candidate of a run: its result, router and gates."""

    engine: str
    result: JobResult
    fitted: Calibration
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        return failed_reason(self.gates) is None

    def summary(self) -> dict[str, Any]:
        return {
            "coverage": round(self.fitted.coverage, 4),
            "agreement": round(self.result.candidate.agreement, 4),
            "passed": self.passed,
            "reason": failed_reason(self.gates),
            "train_seconds": self.result.train.seconds,
        }


def _engines(config: DistillConfig, dataset: Dataset) -> list[str]:
    """The candidates this run trains: those configured that fit the task (the model always,
    when nothing else fits)."""
    wanted = config.train.candidates
    engines = (
        [CLASSICAL] if CLASSICAL in wanted and classical_fits(dataset, config.classical) else []
    )
    if MODEL in wanted or not engines:
        engines.append(MODEL)
    return engines


def _train_candidates(
    job_path: Path,
    job: Job,
    dataset: Dataset,
    config: DistillConfig,
    task: str,
    progress: Progress,
) -> list[tuple[str, JobResult, list[float]]]:
    """Each candidate's result, with the creation times of the held-out examples it was
    judged on."""
    results: list[tuple[str, JobResult, list[float]]] = []
    engines = _engines(config, dataset)
    champ: ModelEval | None = None
    if MODEL in engines:
        result = _train_model(job_path, job, config, task, progress)
        results.append((MODEL, result, [ex.created_at for ex in dataset.eval]))
        champ = result.champion
    if CLASSICAL in engines:
        classical, created = _train_classical(job, dataset, config, champ, progress)
        results.insert(0, (CLASSICAL, classical, created))
    return results


def _train_model(
    job_path: Path, job: Job, config: DistillConfig, task: str, progress: Progress
) -> JobResult:
    relay = _progress_logger(task, progress)
    if config.train.isolation == "process":
        return run_job_process(
            job_path,
            threads=job.train.threads,
            timeout_s=config.train.timeout_s,
            launcher=config.train.launcher,
            on_progress=relay,
        )
    with following_progress(Path(job.run_dir) / PROGRESS_FILE, relay):
        result = run_job(job)
    if result is None:
        raise TrainingFailed("the training job gave no result")
    return result


def _train_classical(
    job: Job,
    dataset: Dataset,
    config: DistillConfig,
    champ: ModelEval | None,
    progress: Progress,
) -> tuple[JobResult, list[float]]:
    """Train and evaluate the classical candidate here; the champion's evaluation is the
    model job's when it ran on the same held-out examples, else made here on them."""
    run_dir = Path(job.run_dir)
    golden = json.loads((run_dir / "golden.json").read_text())
    progress.phase("train")  # a phase already passed (the model's) is not shown again
    train, held_out = classical_split(dataset, config.classical)
    trained = train_classical(
        train,
        config.classical,
        run_dir / CLASSICAL_DIR,
        seed=job.train.seed,
        held_out=held_out,
    )
    progress.phase("evaluate")
    assert trained.model_path is not None
    kwargs: dict[str, Any] = {
        "kind": dataset.kind,
        "config": job.gates,
        "system_prompt": job.system_prompt,
    }
    if held_out is not dataset.eval:
        champ = None  # the model job judged the champion on the narrower slice
    models = 2 if champ is None and job.champion is not None else 1

    def shown(index: int) -> Any:
        return lambda done, total: progress.step(index * total + done, models * total, "answers")

    candidate = evaluate_student(
        StudentRunner(trained.model_path), held_out, golden, **kwargs, on_progress=shown(0)
    )
    if champ is None and job.champion is not None:
        runner = StudentRunner(job.champion.weights, job.champion.adapter_path, job.train.device)
        champ = evaluate_student(runner, held_out, golden, **kwargs, on_progress=shown(1))
    return JobResult(trained, candidate, champ), [ex.created_at for ex in held_out]


def _judge(
    engine: str,
    result: JobResult,
    created: list[float],
    kind: str,
    config: DistillConfig,
    current: ModelVersion | None,
) -> Judged:
    candidate, champ = result.candidate, result.champion
    rates = None
    if engine == CLASSICAL and result.train.model_path is not None:
        rates = read_label_agreement(result.train.model_path)
    fitted = calibrate(
        candidate,
        kind,
        config.gates,
        ranked_by_probability=engine == CLASSICAL,
        label_rates=rates,
    )
    champ_served, cand_served = None, fitted.served
    if champ is not None and current is not None:
        # Both on the held-out examples the champion never trained on.
        keep = unseen_by(current.data_window, created)
        weights = candidate.sample_weights()
        champ_served = champion_served(current.router, champ.features, champ.agreed, weights, keep)
        router = fitted.router.to_dict()
        cand_served = champion_served(router, candidate.features, candidate.agreed, weights, keep)
    gates = evaluate_gates(
        config.gates,
        agreement=candidate.agreement,
        coverage=fitted.coverage,
        validity=candidate.validity,
        golden=candidate.golden_passed,
        candidate_served=cand_served,
        champion_served=champ_served,
        coverage_note=fitted.note,
    )
    return Judged(engine, result, fitted, gates)


def _best(judged: list[Judged]) -> Judged:
    """The candidate that passes every gate and serves the most at the certified target; when
    none passes, the one that serves the most (its gates say why it failed)."""
    passing = [j for j in judged if j.passed]
    pool = passing or judged
    return max(pool, key=lambda j: (j.fitted.coverage, -judged.index(j)))


def _augment(dataset: Dataset, config: DistillConfig, teacher: Teacher | None) -> None:
    if not config.augment.enabled:
        return
    if teacher is None:
        dataset.stats["synthetic"] = {"skipped": "no teacher available"}
        return
    synthetic, stats = augment(
        dataset.train,
        teacher,
        config.augment,
        kind=dataset.kind,
        near_duplicate_threshold=config.dataset.near_duplicate_threshold,
        seed=config.train.seed,
    )
    dataset.train += synthetic
    dataset.stats["synthetic"] = stats
    dataset.stats["train"] = len(dataset.train)
    dataset.stats["train_rows"] = len(dataset.training_rows())


def _write_job(
    db: sqlite_utils.Database, run_dir: Path, dataset: Dataset, config: DistillConfig
) -> Path:
    write_examples(run_dir / "train.jsonl", dataset.training_rows())
    write_examples(run_dir / "eval.jsonl", dataset.eval)
    golden = [
        {"id": g["id"], "input": g["input"], "expected": g["expected"]}
        for g in list_golden(db, dataset.task)
    ]
    (run_dir / "golden.json").write_text(json.dumps(golden))
    (run_dir / "dataset.json").write_text(json.dumps(dataset.stats, indent=2))
    current = champion(db, dataset.task)
    champ = None
    if current is not None and _available(current.model_path, current.adapter_path):
        champ = ChampionWeights(current.id, current.weights, current.adapter_path)
    elif current is not None:
        log.warning("champion %s: weights not found; compared with nothing", current.id)
    share = 2 if config.schedule.in_gateway else 1  # the gateway serves beside it
    threads = auto_threads(config.train.threads, share=share)
    log.info("task %s: training with %d torch threads", dataset.task, threads)
    job = Job(
        run_dir=str(run_dir),
        kind=dataset.kind,
        system_prompt=dataset.system_prompt,
        train=replace(config.train, threads=threads),
        gates=config.gates,
        champion=champ,
        warm_start=_warm_start(current, config) if current and champ else None,
    )
    path = run_dir / JOB_FILE
    job.write(path)
    return path


def _warm_start(current: ModelVersion, config: DistillConfig) -> WarmStart | None:
    """The champion's weights to start from, when ``train.warm_start`` is on and the champion
    was trained from the same base with the same method (else the run starts from the base)."""
    train = config.train
    if not train.warm_start:
        return None
    if train.method == "full":
        same_method = bool(current.model_path) and current.adapter_path is None
    else:
        same_method = bool(current.adapter_path)
    if current.base != train.base_model or not same_method:
        log.info(
            "warm start: champion %s (base %s, %s) does not match train.base_model %s with %s;"
            " training from the base",
            current.id,
            current.base,
            "adapter" if current.adapter_path else "full model",
            train.base_model,
            train.method,
        )
        return None
    return WarmStart(
        id=current.id,
        model_path=current.model_path if train.method == "full" else None,
        adapter_path=current.adapter_path if train.method == "lora" else None,
    )


def _available(*paths: str | None) -> bool:
    return all(Path(p).exists() for p in paths if p)


def _metrics(result: JobResult, fitted: Calibration, job: Job) -> dict[str, Any]:
    candidate, champ = result.candidate, result.champion
    router = fitted.router
    threshold = router.threshold.to_dict() if router.threshold else {}
    return {
        "agreement": round(candidate.agreement, 4),
        "coverage": round(fitted.coverage, 4),
        "quality_target": router.quality_target,
        "confidence_levels": confidence_levels(router, candidate.features),
        "threshold": threshold.get("threshold"),
        "certified_lower_bound": threshold.get("agreement_lower_bound"),
        "served_agreement": threshold.get("expected_agreement"),
        "calibration_examples": threshold.get("n_calibration"),
        "certified_served": threshold.get("n_served"),
        "certified_bound": threshold.get("bound"),
        "certified_confidence": threshold.get("confidence"),
        "calibration_note": fitted.note,
        "validity": round(candidate.validity, 4),
        "golden_passed": sum(candidate.golden_passed),
        "golden_total": len(candidate.golden),
        "latency_ms": candidate.latency_ms,
        "eval_examples": len(candidate.agreed),
        "eval_seconds": candidate.seconds,
        "champion": job.champion.id if job.champion else None,
        "champion_agreement": round(champ.agreement, 4) if champ else None,
        "train": result.train.to_dict(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> dict[str, float]:
    to_mb = 1 / 1024  # ru_maxrss is in KiB on Linux
    return {
        "self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb, 1),
        "children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb, 1),
    }


def _finish(
    db: sqlite_utils.Database,
    outcome: RunOutcome,
    status: str,
    reason: str | None,
    started: float,
) -> None:
    outcome.status, outcome.reason = status, reason
    outcome.metrics.setdefault("run_seconds", round(time.perf_counter() - started, 2))
    update_run(
        db,
        outcome.run_id,
        status=status,
        finished_at=time.time(),
        reason=reason,
        dataset_json=outcome.dataset,
        gates_json=outcome.gates,
        metrics_json=outcome.metrics,
        candidate_id=outcome.candidate_id,
        promoted=int(outcome.promoted),
    )
    log_event(
        db,
        outcome.task,
        "distill_run",
        {"run": outcome.run_id, "status": status, "promoted": outcome.promoted, "reason": reason},
    )
    log.info(
        "task %s: run %s %s%s (%s)",
        outcome.task,
        outcome.run_id,
        run_outcome(status, outcome.promoted),
        " as " + str(outcome.candidate_id) if outcome.promoted else "",
        reason,
    )


def _progress_logger(task: str, progress: Progress) -> Any:
    """Each training progress record: a log line per logging step, and the steps shown; the
    last step ends training (the job then evaluates)."""

    trained: list[bool] = []

    def relay(record: dict[str, Any]) -> None:
        step, total = record.get("step"), record.get("max_steps")
        if isinstance(step, int) and isinstance(total, int) and not trained:
            progress.step(step, total, "steps")
            if step >= total:
                trained.append(True)
                progress.note(f"{total} steps")
                progress.phase("evaluate")
        done, to_do = record.get("evaluated"), record.get("to_evaluate")
        if isinstance(done, int) and isinstance(to_do, int):
            progress.phase("evaluate")
            progress.step(done, to_do, "answers")
        if "loss" in record:
            log.info(
                "task %s: step %s/%s epoch %.2f loss %.4f (%.0f s)",
                task,
                record.get("step"),
                record.get("max_steps"),
                record.get("epoch", 0.0),
                record["loss"],
                record.get("elapsed_s", 0.0),
            )

    return relay
