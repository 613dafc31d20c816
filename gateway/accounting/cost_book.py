"""The serving side of cost accounting: prices from the settings, and what has to be learned
from the log (each task's teacher/student token ratio and its latest teacher model).

:meth:`CostBook.fill` stamps the cost columns on a request row as it finishes; the arithmetic
is in :mod:`gateway.costs`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from understudy.gateway.accounting import prices as costs
from understudy.gateway.config import CostConfig
from understudy.storage.database import Store
from understudy.storage.records import RequestRecord
from understudy.storage.reports import (
    latest_teacher_models,
    teacher_token_means,
    token_ratio_sums,
)

log = logging.getLogger("understudy.costs")

RATIO_WINDOW_S = 30 * 86400  # pairs from the last 30 days (whole hours) teach the token ratio


class CostBook:
    """``conservative``: a teacher model with no price (not in the table, not a dated snapshot
    of a name in it) is charged the table's highest prices instead of nothing, counted in
    ``unpriced`` and warned about once per model. On while a USD budget is on, so that an
    unpriced model cannot spend without limit."""

    def __init__(self, settings: CostConfig, *, conservative: bool = False) -> None:
        self.settings = settings
        self.prices = costs.price_table(settings.prices)
        self.conservative = conservative
        self.unpriced: dict[str, int] = {}
        self._dearest = costs.highest_price(self.prices)
        self.student = costs.StudentCostModel(
            settings.student_per_million, settings.student_gpu_hour, settings.student_tokens_per_s
        )
        self.ratios: dict[str, costs.TokenRatio] = {}
        self.teacher_models: dict[str, str] = {}
        self.teacher_means: dict[str, tuple[float, float]] = {}

    def price(self, model: str | None) -> costs.Price | None:
        """What the teacher charges for ``model`` (see ``conservative``)."""
        price = costs.find_price(self.prices, model)
        if price is not None or not self.conservative:
            return price
        name = model or "(none)"
        self.unpriced[name] = self.unpriced.get(name, 0) + 1
        if self.unpriced[name] == 1:
            log.warning(
                "teacher model %r has no price; charged the highest prices in the table "
                "(%g/%g USD per 1M tokens) while limits.monthly_usd is on: add it to "
                "[costs] prices",
                name,
                self._dearest.input,
                self._dearest.output,
            )
        return self._dearest

    def ratio(self, task: str) -> costs.TokenRatio:
        return self.ratios.get(task, costs.UNKNOWN_RATIO)

    def student_cost(self, tokens: int, seconds: float) -> float:
        return self.student.cost(tokens, seconds)

    def valued_model(self, record: RequestRecord) -> str | None:
        """The teacher model a student answer of this task is valued at."""
        return (
            self.settings.teacher_model
            or self.teacher_models.get(record.task)
            or record.requested_model
        )

    def fill(self, record: RequestRecord) -> costs.RequestCost:
        """Compute and set the cost columns of a finished row."""
        prompt, completion = record.prompt_tokens or 0, record.completion_tokens or 0
        student_cost = record.student_cost_usd or 0.0
        if record.served_by == "student":
            cost = self._student_served(record, prompt, completion, student_cost)
        else:
            teacher_model = record.teacher_model or record.requested_model
            if record.teacher_model:
                self.teacher_models[record.task] = record.teacher_model
            price = self.price(teacher_model)
            if record.served_by == "shadow":
                cost = costs.shadow_call(price, prompt, completion)
            else:
                cost = costs.teacher_served(price, prompt, completion, student_cost)
        record.teacher_cost_usd = cost.teacher_cost
        record.student_cost_usd = cost.student_cost
        record.avoided_cost_usd = cost.avoided
        record.saved_usd = cost.saved
        record.cost_estimated = 1 if cost.estimated else None
        return cost

    def _student_served(
        self, record: RequestRecord, prompt: int, completion: int, student_cost: float
    ) -> costs.RequestCost:
        """Valued with the learned token ratio, or conservatively (an estimate) until then."""
        price = costs.find_price(self.prices, self.valued_model(record))  # savings: never guessed
        ratio = self.ratio(record.task)
        if ratio.pairs > 0:
            return costs.student_served(price, prompt, completion, ratio, student_cost)
        mean = self.teacher_means.get(record.task)
        return costs.student_served_estimate(price, prompt, completion, mean, student_cost)

    # -- learning from the log -----------------------------------------------------------

    def refresh(self, db_path: Path) -> None:
        """Re-read the token ratios, teacher answers' mean tokens and latest teacher models
        from the database's rollups (a few hundred rows per task, whatever the log's size)."""
        store = Store(db_path)
        if not store.exists():
            return
        with store.read() as db:
            since = time.time() - RATIO_WINDOW_S
            sums = token_ratio_sums(db, since)
            models = latest_teacher_models(db, since)
            means = teacher_token_means(db, since)
        self.ratios = {
            task: costs.TokenRatio.from_sums(r["tp"], r["tc"], r["sp"], r["sc"], r["pairs"])
            for task, r in sums.items()
        }
        self.teacher_models = {**models, **self.teacher_models}
        self.teacher_means = {t: (r["prompt"], r["completion"]) for t, r in means.items()}

    async def keep_fresh(self, db_path: Path) -> None:
        """Refresh every ``ratio_refresh_s`` until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.refresh, db_path)
            except Exception:  # accounting must never stop serving
                log.exception("could not refresh the token ratios; keeping the last ones")
            await asyncio.sleep(self.settings.ratio_refresh_s)
