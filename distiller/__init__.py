"""The distiller: logged teacher answers in, an evaluated and (maybe) promoted student out.

Steps, each a function over plain data with its own config dataclass: ``dataset`` (build
the training and held-out sets from the log), ``augment`` (optional synthetic examples),
``train`` (trl ``SFTTrainer``, in its own process via ``worker``), ``evaluate`` and
``calibrate`` (candidate and champion on the same examples; the router for serving),
``gates`` and ``promote``. ``pipeline.run_distillation`` runs them for one task;
``schedule.DistillScheduler`` decides when. Importing this package loads nothing: the names
below are imported on first use, so reading ``distiller.config`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AugmentConfig": "understudy.distiller.config",
    "DatasetConfig": "understudy.distiller.config",
    "DistillConfig": "understudy.distiller.config",
    "GateConfig": "understudy.distiller.config",
    "ScheduleConfig": "understudy.distiller.config",
    "TrainConfig": "understudy.distiller.config",
    "RunInProgress": "understudy.distiller.lock",
    "RunOutcome": "understudy.distiller.pipeline",
    "run_distillation": "understudy.distiller.pipeline",
    "DistillScheduler": "understudy.distiller.schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'distiller' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
