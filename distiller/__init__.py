"""The distiller: logged teacher answers in, an evaluated and (maybe) promoted student out.

Steps, each a function over plain data with its own config dataclass: ``dataset`` (build
the training and held-out sets from the log), ``augment`` (optional synthetic examples),
``train`` (trl ``SFTTrainer``, in its own process via ``worker``), ``evaluate`` and
``calibrate`` (candidate and champion on the same examples; the router for serving),
``gates`` and ``promote``. ``pipeline.run_distillation`` runs them for one task;
``schedule.DistillScheduler`` decides when. Importing this package loads no ML library.
"""

from distiller.config import (
    AugmentConfig,
    DatasetConfig,
    DistillConfig,
    GateConfig,
    ScheduleConfig,
    TrainConfig,
)
from distiller.lock import RunInProgress
from distiller.pipeline import RunOutcome, run_distillation
from distiller.schedule import DistillScheduler

__all__ = [
    "AugmentConfig",
    "DatasetConfig",
    "DistillConfig",
    "DistillScheduler",
    "GateConfig",
    "RunInProgress",
    "RunOutcome",
    "ScheduleConfig",
    "TrainConfig",
    "run_distillation",
]
