"""The demo's data: Banking77 queries with gold intents, and GPT-4's answers on the test split.

The files ship in ``gateway/demo/data`` (credit and licences in ``LICENCE.md`` there).
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

SYSTEM_PROMPT = (
    "You label the messages customers send to an online bank. Answer with the intent name only."
)
"""The system prompt of every demo request: one fixed prompt, so one task."""


@dataclass(frozen=True)
class Query:
    """One customer message, its gold intent and the teacher's answer to it."""

    text: str
    gold: str
    teacher: str
    """GPT-4's answer (test split) or the gold intent standing in for it (train split)."""


@dataclass
class Banking77:
    train: list[Query]
    test: list[Query]
    intents: list[str]
    train_gold: bool = True
    """The train split's answers are its gold labels (not a teacher's)."""

    def most_frequent(self, k: int) -> list[str]:
        """The ``k`` intents with the most training queries (ties broken by name)."""
        counts = Counter(q.gold for q in self.train)
        ranked = sorted(self.intents, key=lambda name: (-counts[name], name))
        return ranked[:k]

    def restricted(self, intents: list[str]) -> Banking77:
        """Only the queries whose gold intent is one of ``intents``."""
        keep = set(intents)
        return Banking77(
            train=[q for q in self.train if q.gold in keep],
            test=[q for q in self.test if q.gold in keep],
            intents=[name for name in self.intents if name in keep],
            train_gold=self.train_gold,
        )


def load_banking77() -> Banking77:
    """Read the packaged files."""
    folder = resources.files("understudy.demo.data")
    intents = folder.joinpath("intents.txt").read_text(encoding="utf-8").split()
    train = [Query(r["text"], r["intent"], r["intent"]) for r in _rows(folder, "train.csv.gz")]
    test = [Query(r["text"], r["intent"], r["teacher"]) for r in _rows(folder, "test.csv.gz")]
    return Banking77(train=train, test=test, intents=intents)


def _rows(folder: Traversable, name: str) -> list[dict[str, str]]:
    raw = gzip.decompress(folder.joinpath(name).read_bytes()).decode("utf-8")
    return list(csv.DictReader(io.StringIO(raw)))


def sample(queries: list[Query], n: int | None, seed: int) -> list[Query]:
    """``n`` queries (all when ``n`` is None or larger) in a shuffled order fixed by ``seed``."""
    order = list(queries)
    random.Random(seed).shuffle(order)
    return order if n is None else order[:n]
