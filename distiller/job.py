"""A run's training job and its result, as the run directory's ``job.json`` and
``result.json`` hold them.

The pipeline writes the :class:`Job`; the worker (in its own process, or in the run's own)
reads it, trains and evaluates, and writes the :class:`JobResult` whole, or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from understudy.distiller.config import GateConfig, TrainConfig
from understudy.distiller.evaluate import ModelEval
from understudy.distiller.train import TrainResult, WarmStart


@dataclass(frozen=True)
class ChampionWeights:
    """The champion the candidate is compared with, evaluated on the same examples."""

    id: str
    weights: str
    """A full model (hub id or path), or the base the adapter goes on."""
    adapter_path: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChampionWeights:
        return cls(str(data["id"]), str(data["weights"]), data.get("adapter_path"))


@dataclass
class Job:
    """What the worker trains and evaluates."""

    run_dir: str
    """The run directory: ``train.jsonl``, ``eval.jsonl``, ``golden.json`` are read from it,
    the candidate and ``result.json`` written into it."""
    kind: str
    """The task's kind (``label``, ``json`` or ``text``): the agreement metric."""
    system_prompt: str | None
    """The task's system prompt, put before each golden input."""
    train: TrainConfig
    gates: GateConfig
    champion: ChampionWeights | None = None
    warm_start: WarmStart | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "kind": self.kind,
            "system_prompt": self.system_prompt,
            "train": asdict(self.train),
            "gates": asdict(self.gates),
            "champion": asdict(self.champion) if self.champion else None,
            "warm_start": asdict(self.warm_start) if self.warm_start else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        champion, warm_start = data.get("champion"), data.get("warm_start")
        return cls(
            run_dir=str(data["run_dir"]),
            kind=str(data["kind"]),
            system_prompt=data.get("system_prompt"),
            train=TrainConfig(**data["train"]),
            gates=GateConfig(**data["gates"]),
            champion=ChampionWeights.from_dict(champion) if champion else None,
            warm_start=WarmStart.from_dict(warm_start) if warm_start else None,
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read(cls, path: Path) -> Job:
        return cls.from_dict(json.loads(path.read_text()))


@dataclass
class JobResult:
    """How training went, and how the candidate and the champion did on the same examples."""

    train: TrainResult
    candidate: ModelEval
    champion: ModelEval | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": self.train.to_dict(),
            "candidate": self.candidate.to_dict(),
            "champion": self.champion.to_dict() if self.champion else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobResult:
        champion = data.get("champion")
        return cls(
            train=TrainResult.from_dict(data["train"]),
            candidate=ModelEval.from_dict(data["candidate"]),
            champion=ModelEval.from_dict(champion) if champion else None,
        )

    def write(self, path: Path) -> None:
        """Written whole (to a temporary file first), or not at all."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> JobResult:
        return cls.from_dict(json.loads(path.read_text()))
