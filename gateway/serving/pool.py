"""Which student serves which task, kept in step with the registry without a restart.

A watcher reads ``task_state`` every ``student.reload_interval_s``, and at once when the
registry on PostgreSQL notifies a change (``storage/notify.py``). When a task's champion
changes (promotion or rollback) the new version is loaded first, then switched in, then the old
one is unloaded, so requests never see a gap. Mode changes (``teacher-only``, ``shadow``,
``routed``) take effect at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from understudy.gateway.accounting.metrics_state import StudentState
from understudy.gateway.config import GatewayConfig
from understudy.gateway.serving.routing import TaskRouter, build_router
from understudy.storage.database import Store
from understudy.storage.distill_queries import SERVING_EVENT
from understudy.storage.notify import RegistryListener
from understudy.storage.registry import ModelVersion, all_task_states, get_model, log_event
from understudy.student.base import StudentBackend, StudentModel
from understudy.student.classical_backend import EngineSwitch
from understudy.student.local import LocalBackend
from understudy.student.threads import auto_threads
from understudy.student.vllm import VLLMBackend

log = logging.getLogger("understudy.students")


@dataclass
class Slot:
    """The serving state of one task with a champion."""

    task: str
    mode: str
    version: ModelVersion
    model: StudentModel
    router: TaskRouter
    state_at: float = 0.0
    """``updated_at`` of the registry state this slot reflects: a local change (drift) stands
    until the registry changes again."""
    inflight: int = 0
    """Requests waiting for this slot's model to answer: a swap unloads the model it replaces
    only once they have their answers."""


async def drained(slot: Slot, timeout_s: float) -> None:
    """Wait until no request waits for ``slot``'s model, at most ``timeout_s`` (the student's
    own deadline: a request still waiting by then falls to the teacher anyway)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while slot.inflight and loop.time() < deadline:
        await asyncio.sleep(0.01)


def student_state(slot: Slot) -> StudentState:
    """What the metrics show of the student serving ``slot``'s task."""
    monitor = slot.router.monitor
    return StudentState(
        task=slot.task,
        version=slot.version.id,
        mode=slot.mode,
        threshold=float(slot.router.router.threshold),
        quality_target=slot.router.quality_target,
        samples=monitor.samples,
        agreement=monitor.agreement,
    )


def student_model(version: ModelVersion) -> StudentModel:
    return StudentModel(name=version.id, base=version.weights, adapter_path=version.adapter_path)


class StudentPool:
    def __init__(
        self, settings: GatewayConfig, backend_factory: Callable[[], StudentBackend] | None
    ) -> None:
        self.settings = settings
        self.backend_factory = backend_factory
        # Created when the first champion appears, so a teacher-only gateway never loads ML code.
        self.backend: StudentBackend | None = None
        self.slots: dict[str, Slot] = {}
        self._task: asyncio.Task[None] | None = None
        self._store = Store(settings.db_path)
        self._changed: asyncio.Event | None = None
        self._listener: RegistryListener | None = None
        # One refresh at a time: the watcher's and an admin call's (refresh_now) would both
        # see the old state, load the new champion twice and switch in two routers, the
        # second resetting the first's draws and drift state after it had begun serving.
        self._refreshing = asyncio.Lock()

    def slot(self, task: str) -> Slot | None:
        return self.slots.get(task)

    def student_states(self) -> list[StudentState]:
        """The serving students as the metrics show them."""
        return [student_state(slot) for slot in list(self.slots.values())]

    async def start(self) -> None:
        if self.backend_factory is None:
            return
        await self.refresh()
        changed = self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._listener = RegistryListener(
            self.settings.db_path, lambda task: loop.call_soon_threadsafe(changed.set)
        )
        self._listener.start()
        self._task = asyncio.create_task(self._watch(), name="understudy-student-watcher")

    async def close(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.backend is not None:
            await self.backend.close()

    async def _watch(self) -> None:
        assert self._changed is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait(), self.settings.student.reload_interval_s
                )
            self._changed.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("student refresh failed; serving stays as it was")

    async def refresh_now(self) -> None:
        """Apply a registry change made through the admin API at once."""
        if self.backend_factory is not None:
            await self.refresh()

    async def refresh(self) -> None:
        """Bring ``slots`` in line with the registry (one refresh at a time: a second waits,
        then finds the first's work done)."""
        async with self._refreshing:
            await self._refresh()

    async def _refresh(self) -> None:
        assert self.backend_factory is not None
        states = await asyncio.to_thread(self._read_states)
        if states and self.backend is None:
            self.backend = await asyncio.to_thread(self.backend_factory)
        seen: set[str] = set()
        for task, mode, state_at, version in states:
            seen.add(task)
            current = self.slots.get(task)
            if current is not None and current.version.id == version.id:
                if current.state_at == state_at:
                    continue  # unchanged (a drift fallback not yet written stays in force)
                current.state_at = state_at
                if current.mode != mode:
                    log.info("task %s: mode %s -> %s", task, current.mode, mode)
                    current.mode = mode
                    if mode == "routed":
                        # Routed again (by an operator): live agreement is judged afresh, or
                        # a monitor still tripped from before would never trip again.
                        current.router.monitor.reset()
                continue
            await self._swap_in(task, mode, state_at, version, current)
        for task in set(self.slots) - seen:
            old = self.slots.pop(task)
            if self.backend is not None:
                await self.backend.unload(old.model)

    async def _swap_in(
        self,
        task: str,
        mode: str,
        state_at: float,
        version: ModelVersion,
        current: Slot | None,
    ) -> None:
        assert self.backend is not None
        model = student_model(version)
        switched = False

        async def switch() -> None:
            nonlocal switched
            self.slots[task] = Slot(task, mode, version, model, router, state_at)
            switched = True
            log.info("task %s: now served by %s (mode %s)", task, version.id, mode)
            if current is not None:  # requests that chose the old model keep it until answered
                await drained(current, self.settings.student.timeout_s)

        try:
            router = build_router(version.router, self.settings.router)
            await self.backend.swap(current.model if current else None, model, switch)
        except Exception as exc:  # keep serving the old one
            if switched:
                await self._record_serving(task, version.id)
                raise  # the old one could not be unloaded; the new one serves
            log.error(
                "task %s: could not load %s (%s); keeping %s",
                task,
                version.id,
                exc,
                current.version.id if current else "the teacher",
            )
            return
        await self._record_serving(task, version.id)

    async def _record_serving(self, task: str, model_id: str) -> None:
        """Note in the registry's events that ``model_id`` serves now: the distiller's count
        trigger counts teacher answers from here, not those of the swap."""
        try:
            await asyncio.to_thread(self._write_serving_event, task, model_id)
        except Exception as exc:  # noqa: BLE001 - bookkeeping: serving goes on without it
            log.warning("task %s: could not record that %s serves (%s)", task, model_id, exc)

    def _write_serving_event(self, task: str, model_id: str) -> None:
        with self._store.write() as db:
            log_event(db, task, SERVING_EVENT, {"model": model_id})

    def _read_states(self) -> list[tuple[str, str, float, ModelVersion]]:
        with self._store.read() as db:
            out = []
            for state in all_task_states(db):
                if state.champion_id:
                    champion = get_model(db, state.champion_id)
                    out.append((state.task, state.mode, state.updated_at, champion))
            return out


def backend_factory(settings: GatewayConfig) -> Callable[[], StudentBackend] | None:
    """The configured student engine, built on first use (None: students are off); classical
    students are served in this process whatever the engine (:class:`EngineSwitch`)."""
    student = settings.student
    if student.backend == "none":
        return None
    if student.backend == "vllm":

        def make_vllm() -> StudentBackend:
            return VLLMBackend(
                student.vllm_url, api_key=student.vllm_api_key, timeout_s=student.timeout_s
            )

        return lambda: EngineSwitch(make_vllm)

    def make_local() -> StudentBackend:
        threads = auto_threads(student.threads)
        log.info("in-process student: %d torch threads", threads)
        return LocalBackend(
            device=student.device,
            max_batch_size=student.max_batch_size,
            batch_window_ms=student.batch_window_ms,
            threads=threads,
        )

    return lambda: EngineSwitch(make_local)
