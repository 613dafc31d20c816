"""The litestar application: ``create_app(settings)``. Resources open in the lifespan and reach
the handlers through dependency injection; every error is answered by one handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol
from urllib.parse import urlsplit

from litestar import Litestar, Request

from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.accounting.metrics import Metrics
from understudy.gateway.api import routes
from understudy.gateway.api.admin import ADMIN_HANDLERS
from understudy.gateway.api.dashboard.routes import DASHBOARD_HANDLERS
from understudy.gateway.api.failed_auth import open_failed_auth
from understudy.gateway.api.feedback import feedback
from understudy.gateway.api.guards import GUARDS
from understudy.gateway.api.limits import open_limits
from understudy.gateway.api.passthrough import HANDLERS as PASSTHROUGH_HANDLERS
from understudy.gateway.api.readiness import Readiness
from understudy.gateway.api.responses import error_response
from understudy.gateway.api.services import ServiceBox, Services, service_dependencies
from understudy.gateway.api.sessions import Sessions
from understudy.gateway.api.slow_reads import SlowReads
from understudy.gateway.config import GatewayConfig, TeacherConfig, is_loopback
from understudy.gateway.errors import ServiceUnavailableError
from understudy.gateway.serving.conversations import Conversations
from understudy.gateway.serving.ledger import Ledger
from understudy.gateway.serving.passthrough import Passthrough
from understudy.gateway.serving.pipeline import Pipeline
from understudy.gateway.serving.pool import StudentPool, backend_factory
from understudy.gateway.serving.shadow import Shadow
from understudy.gateway.serving.student_path import StudentPath
from understudy.gateway.serving.teacher_keys import TeacherKeys
from understudy.gateway.serving.teacher_path import TeacherPath
from understudy.gateway.teacher.client import TeacherClient
from understudy.storage.database import Store
from understudy.storage.engine import describe
from understudy.storage.queries import auto_tasks
from understudy.storage.request_log import RequestLogWriter
from understudy.storage.retention import DAY_S, RetentionWorker
from understudy.student.paths import confined_factory

log = logging.getLogger("understudy.gateway")


class Companion(Protocol):
    """Work that starts and stops with the gateway (e.g. the distiller's schedule)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _settle_reservations(box: ServiceBox) -> Callable[[Request], Awaitable[None]]:
    """An ``after_response`` hook: a request's budget reservation ends with its response."""

    async def settle(request: Request) -> None:
        try:
            limits = box.get().limits
        except ServiceUnavailableError:
            return
        if limits is not None:
            limits.settle(request)

    return settle


def _teacher_keys(settings: GatewayConfig, teacher: TeacherClient) -> TeacherKeys | None:
    """Pass-through mode without gateway keys: the teacher judges each caller's key."""
    if settings.teacher.pass_through_auth and not settings.api_keys:
        return TeacherKeys(teacher)
    return None


def teacher_key_warning(teacher: TeacherConfig) -> str | None:
    """Why the teacher will likely refuse every call: no key configured, clients bring none,
    and the teacher is not on this machine (a local model server often needs no key)."""
    if teacher.api_key or teacher.pass_through_auth:
        return None
    host = urlsplit(teacher.url).hostname or ""
    if is_loopback(host):
        return None
    return (
        f"no teacher key is configured and the teacher {teacher.url} is not local: it will "
        "likely refuse every call (HTTP 401). Set UNDERSTUDY_TEACHER_API_KEY (teacher.api_key), "
        "or teacher.pass_through_auth = true if clients bring their own keys."
    )


def create_app(settings: GatewayConfig, *, companions: Sequence[Companion] = ()) -> Litestar:
    """Build the gateway app. Nothing is opened until the app starts; ``companions`` are
    started once serving is ready and stopped first at shutdown."""
    box = ServiceBox()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        storage = settings.storage
        writer = RequestLogWriter(
            settings.db_path,
            queue_size=storage.queue_size,
            commit_interval_ms=storage.commit_interval_ms,
            batch_size=storage.batch_size,
            busy_timeout_ms=storage.busy_timeout_ms,
        )
        await asyncio.to_thread(writer.start)
        store = Store(settings.db_path, busy_timeout_ms=storage.busy_timeout_ms)
        teacher = TeacherClient(settings.teacher, secrets=[*settings.api_keys, settings.admin_key])
        metrics = Metrics(writer)
        limits = await asyncio.to_thread(open_limits, settings, store)
        if limits is not None and limits.budgets is not None:
            writer.add_listener(limits.budgets.record)
        retention = None
        if storage.retention_days > 0:
            retention = RetentionWorker(
                settings.db_path,
                storage.retention_days * DAY_S,
                storage.retention_interval_s,
                busy_timeout_ms=storage.busy_timeout_ms,
            )
            retention.start()
        pool = StudentPool(settings, confined_factory(backend_factory(settings), settings.data_dir))
        book = CostBook(settings.costs, conservative=settings.limits.monthly_usd > 0)
        ledger = Ledger(book, writer, metrics)
        shadow = Shadow(settings, teacher, ledger, store)
        pipeline = Pipeline(
            settings,
            StudentPath(settings, pool, _teacher_keys(settings, teacher)),
            TeacherPath(teacher, ledger),
            shadow,
            ledger,
            Conversations(store, writer),
        )
        metrics.watch(pool, settings.db_path)
        cost_refresh = asyncio.create_task(ledger.costs.keep_fresh(settings.db_path))
        relay = Passthrough(settings.passthrough, teacher, ledger)
        reads = SlowReads(settings.server.read_threads, settings.server.read_waiting)
        scrapes = SlowReads(1, 4)
        known = await asyncio.to_thread(_auto_tasks, store, settings.max_auto_tasks)
        pipeline.auto_tasks.seed(known)
        failed_auth = open_failed_auth(settings.limits.failed_auth_per_minute, store)
        services = Services(
            settings,
            store,
            writer,
            teacher,
            metrics,
            pool,
            pipeline,
            limits,
            relay,
            failed_auth,
            Sessions(store=store),  # shared by every worker process
            Readiness(teacher, writer),
            reads=reads,
            scrapes=scrapes,
        )
        box.put(services)
        await pool.start()
        warning = teacher_key_warning(settings.teacher)
        if warning is not None:
            log.warning(warning)
        for companion in companions:
            await asyncio.to_thread(companion.start)
        log.info(
            "understudy gateway ready on http://%s:%d/v1; teacher %s; log %s",
            settings.host,
            settings.port,
            settings.teacher.url,
            describe(settings.db_path),
        )
        try:
            yield
        finally:
            cost_refresh.cancel()
            for companion in reversed(companions):
                await asyncio.to_thread(companion.stop)
            await shadow.drain()
            reads.close()
            scrapes.close()
            await pool.close()
            await teacher.close()
            if retention is not None:
                await asyncio.to_thread(retention.stop)
            if limits is not None:
                await asyncio.to_thread(limits.close)
            await asyncio.to_thread(writer.close, settings.server.shutdown_flush_s)
            box.put(None)
            stats = writer.stats()
            log.info(
                "request log flushed: %d rows written, %d dropped", stats.written, stats.dropped
            )

    return Litestar(
        route_handlers=[
            *routes.HANDLERS,
            *ADMIN_HANDLERS,
            *DASHBOARD_HANDLERS,
            feedback,
            *PASSTHROUGH_HANDLERS,
        ],
        lifespan=[lifespan],
        dependencies={**service_dependencies(box), **GUARDS},
        exception_handlers={Exception: error_response},
        # Budgets in tokens: what a request in flight reserved ends with its response.
        after_response=_settle_reservations(box) if settings.limits.monthly_tokens > 0 else None,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,  # the process's logging is set up once, in gateway.server
        debug=False,
    )


def _auto_tasks(store: Store, limit: int) -> list[str]:
    """The fingerprint tasks already in the log (they count towards ``max_auto_tasks``)."""
    if not store.exists():
        return []
    with store.read() as db:
        return auto_tasks(db, limit)
