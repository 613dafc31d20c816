"""The ``local`` student: transformers in this process, on the CPU or one GPU.

Each student version (a base model by hub id or path, with a PEFT adapter merged on top when it
is a LoRA) is loaded in a worker thread and kept until it is unloaded; several versions can be
loaded at once. Generation is batched dynamically: the first request for a model waits up to
``batch_window_ms`` for others, and up to ``max_batch_size`` requests for the same model are
answered by one ``generate`` call. Batches run one at a time on a single generation thread, so
the event loop only ever waits on a future; requests that arrive while a batch runs form the
next one.

torch and transformers are imported when the first model is loaded, never at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from understudy.student.base import (
    StudentAnswer,
    StudentBackend,
    StudentError,
    StudentModel,
    StudentRequest,
)
from understudy.student.threads import use_threads

if TYPE_CHECKING:
    from understudy.student.generation import Generator

log = logging.getLogger("understudy.student.local")


@dataclass
class BatchStats:
    """How the dynamic batcher has grouped requests so far."""

    batches: int = 0
    requests: int = 0
    largest_batch: int = 0


@dataclass
class _Pending:
    request: StudentRequest
    future: asyncio.Future[StudentAnswer]
    arrived: float


class LocalBackend(StudentBackend):
    """Students generated in-process with transformers, batched, off the event loop."""

    name = "local"

    def __init__(
        self,
        device: str = "auto",
        max_batch_size: int = 16,
        batch_window_ms: float = 5.0,
        threads: int = 0,
    ) -> None:
        """``threads``: torch threads of generation (0: torch's own choice)."""
        self.device = device
        self.threads = threads
        self.max_batch_size = max(1, max_batch_size)
        self.batch_window_s = max(0.0, batch_window_ms) / 1000
        self.stats = BatchStats()
        self._generators: dict[StudentModel, Generator] = {}
        self._locks: dict[StudentModel, asyncio.Lock] = {}
        self._locks_loop: asyncio.AbstractEventLoop | None = None
        self._retired: set[StudentModel] = set()
        self._pending: deque[_Pending] = deque()
        self._inflight: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        # OpenMP's thread count is per calling thread: set it in the one that generates.
        self._thread = ThreadPoolExecutor(
            1, thread_name_prefix="understudy-student", initializer=self._set_threads
        )
        self._closed = False

    def _set_threads(self) -> None:
        if self.threads > 0:
            use_threads(self.threads)

    # -- models ---------------------------------------------------------------------------

    def loaded(self) -> list[StudentModel]:
        """The models loaded now."""
        return list(self._generators)

    async def load(self, model: StudentModel) -> None:
        """Load ``model`` in a worker thread and warm it up; a no-op when it is loaded."""
        self._check_open()
        async with self._lock(model):
            self._retired.discard(model)
            if model in self._generators:
                return
            started = time.perf_counter()
            generator = await asyncio.to_thread(_load_and_warm, model, self.device, self.threads)
            if model in self._retired or self._closed:
                return  # unloaded (or closed) while it loaded
            self._generators[model] = generator
            log.info(
                "loaded student %s (%s%s) on %s in %.1fs",
                model.name,
                model.base,
                f" + {model.adapter_path}" if model.adapter_path else "",
                generator.device,
                time.perf_counter() - started,
            )

    async def unload(self, model: StudentModel) -> None:
        """Drop ``model``; requests for it fail from now on (a batch already running ends)."""
        self._retired.add(model)
        generator = self._generators.pop(model, None)
        if generator is not None:
            log.info("unloaded student %s", model.name)
            if generator.device.startswith("cuda"):
                del generator
                await asyncio.to_thread(_empty_cuda_cache)

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            if self._loop is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker
            self._worker = None
        _fail([*self._inflight, *self._pending], StudentError("the student backend is closed"))
        self._inflight = []
        self._pending.clear()
        self._generators.clear()
        self._thread.shutdown(wait=False, cancel_futures=True)

    # -- generation -----------------------------------------------------------------------

    async def generate(self, request: StudentRequest) -> StudentAnswer:
        """Queue ``request`` for the next batch of its model and wait for its answer.

        A model that was never loaded is loaded first; one that was unloaded is refused.
        """
        self._check_open()
        if (request.messages is None) == (request.prompt is None):
            raise StudentError("a student request needs exactly one of messages or prompt")
        if request.model in self._retired:
            raise StudentError(f"student {request.model.name} is no longer loaded")
        if request.model not in self._generators:
            await self.load(request.model)
        loop = asyncio.get_running_loop()
        started = loop.time()
        item = _Pending(request, loop.create_future(), started)
        self._pending.append(item)
        self._wake()
        answer = await item.future
        return replace(answer, latency_ms=(loop.time() - started) * 1000)

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if self._wakeup is None or self._loop is not loop:
            # First use, or a new event loop (the old one's batcher went with it).
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._worker = None
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="understudy-local-batcher")
        self._wakeup.set()

    async def _run(self) -> None:
        """Form batches and hand them to the generation thread, one at a time."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._pending[0]
            wait = first.arrived + self.batch_window_s - loop.time()
            if wait > 0 and self._waiting_for(first.request.model) < self.max_batch_size:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                continue
            self._inflight = self._take(first.request.model)
            try:
                await self._answer(self._inflight)
            except Exception as exc:  # the batcher must outlive any one batch
                log.exception("student batch failed")
                _fail(self._inflight, StudentError(f"student generation failed: {exc}"))
            self._inflight = []

    def _drop_cancelled(self) -> None:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()

    def _waiting_for(self, model: StudentModel) -> int:
        return sum(1 for item in self._pending if item.request.model == model)

    def _take(self, model: StudentModel) -> list[_Pending]:
        batch: list[_Pending] = []
        rest: deque[_Pending] = deque()
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():
                continue
            if item.request.model == model and len(batch) < self.max_batch_size:
                batch.append(item)
            else:
                rest.append(item)
        self._pending = rest
        return batch

    async def _answer(self, batch: list[_Pending]) -> None:
        model = batch[0].request.model
        generator = self._generators.get(model)
        if generator is None:
            _fail(batch, StudentError(f"student {model.name} is no longer loaded"))
            return
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        requests = [item.request for item in batch]
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._thread, generator.generate_each, requests)
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, StudentAnswer):
                item.future.set_result(result)
            else:
                item.future.set_exception(result)

    def _lock(self, model: StudentModel) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._locks_loop is not loop:
            self._locks_loop, self._locks = loop, {}
        return self._locks.setdefault(model, asyncio.Lock())

    def _check_open(self) -> None:
        if self._closed:
            raise StudentError("the student backend is closed")


def _load_and_warm(model: StudentModel, device: str, threads: int = 0) -> Generator:
    """Load ``model`` and generate once, so the first request is not the slow one."""
    from transformers.utils import logging as hf_logging

    from understudy.student.generation import load_generator

    if threads > 0:
        use_threads(threads)

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in the gateway's log
    generator = load_generator(model.base, model.adapter_path, device)
    warm = StudentRequest(model=model, prompt="Hello", max_tokens=2, top_logprobs=1)
    try:
        generator.generate([warm])
    except Exception as exc:  # a model that cannot generate must not be served
        raise StudentError(f"student {model.name} failed its first generation: {exc}") from exc
    return generator


def _fail(batch: list[_Pending], error: StudentError) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)


def _empty_cuda_cache() -> None:
    import torch

    torch.cuda.empty_cache()
