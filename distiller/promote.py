"""Step 6: a candidate that passed every gate becomes the champion."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from understudy.distiller.evaluate import ModelEval
from understudy.storage.distill_queries import next_model_version, set_model_paths
from understudy.storage.registry import promote, register_model

if TYPE_CHECKING:
    import sqlite_utils


def promote_candidate(
    db: sqlite_utils.Database,
    data_dir: Path,
    task: str,
    run_id: str,
    train: Mapping[str, Any],
    *,
    base: str,
    metrics: dict[str, Any],
    router: dict[str, Any],
    data_window: dict[str, Any],
) -> str:
    """Move the trained weights to ``DATA_DIR/models/TASK/vN``, register ``TASK@vN`` with its
    metrics, router and data window, and make it the champion; return its id."""
    full = bool(train["model_path"])
    version = next_model_version(db, task)
    target = Path(data_dir) / "models" / task / f"v{version}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(train["model_path"] or train["adapter_path"]), str(target))
    model = register_model(
        db,
        task,
        base=base,
        model_path=str(target) if full else None,
        adapter_path=None if full else str(target),
        metrics=metrics,
        router=router,
        data_window=data_window,
        run_id=run_id,
    )
    if model.version != version:  # registered by someone else meanwhile: follow the id
        final = target.with_name(f"v{model.version}")
        shutil.move(str(target), str(final))
        set_model_paths(
            db,
            model.id,
            model_path=str(final) if full else None,
            adapter_path=None if full else str(final),
        )
    promote(db, model.id, reason=f"distill run {run_id}: all gates passed")
    return model.id


def store_eval(db: sqlite_utils.Database, run_id: str, evals: Mapping[str, ModelEval]) -> None:
    """One ``eval_results`` row per model and split (held-out, golden)."""
    rows = []
    for model_id, ev in evals.items():
        held_out = {"agreement": ev.agreement, "validity": ev.validity, "n": len(ev.agreed)}
        golden = {"passed": sum(ev.golden_passed), "total": len(ev.golden)}
        for split, metrics in (("held_out", held_out), ("golden", golden)):
            rows.append(
                {
                    "run_id": run_id,
                    "model_id": model_id,
                    "split": split,
                    "metrics_json": json.dumps(metrics),
                }
            )
    with db.conn:
        db["eval_results"].insert_all(rows)
