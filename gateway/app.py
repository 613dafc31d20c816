"""The litestar application: ``create_app(settings)``. Resources open in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException
from understudy.gateway.accounting.metrics import Metrics
from understudy.gateway.api import routes
from understudy.gateway.api.admin import ADMIN_HANDLERS
from understudy.gateway.api.dashboard.routes import DASHBOARD_HANDLERS
from understudy.gateway.api.feedback import feedback
from understudy.gateway.api.limits import enforce_limits, open_limits
from understudy.gateway.api.responses import new_request_id
from understudy.gateway.config import GatewayConfig
from understudy.gateway.errors import (
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    UnderstudyError,
    error_body,
)
from understudy.gateway.serving.pipeline import GatewayService
from understudy.gateway.serving.pool import StudentPool, backend_factory
from understudy.gateway.serving.student_path import StudentFlow
from understudy.gateway.teacher.client import TeacherClient
from understudy.storage.request_log import RequestLogWriter
from understudy.storage.retention import DAY_S, RetentionWorker
from understudy.student.paths import confined_factory

log = logging.getLogger("understudy.gateway")


class Companion(Protocol):
    """Work that starts and stops with the gateway (e.g. the distiller's schedule)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def create_app(settings: GatewayConfig, *, companions: Sequence[Companion] = ()) -> Litestar:
    """Build the gateway app. Nothing is opened until the app starts; ``companions`` are
    started once serving is ready and stopped first at shutdown."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        writer = RequestLogWriter(
            settings.db_path,
            queue_size=settings.storage.queue_size,
            commit_interval_ms=settings.storage.commit_interval_ms,
            batch_size=settings.storage.batch_size,
            busy_timeout_ms=settings.storage.busy_timeout_ms,
        )
        await asyncio.to_thread(writer.start)
        teacher = TeacherClient(settings.teacher)
        metrics = Metrics(writer)
        app.state.settings = settings
        app.state.writer = writer
        app.state.teacher = teacher
        app.state.metrics = metrics
        app.state.limits = limits = await asyncio.to_thread(open_limits, settings, settings.db_path)
        if limits is not None and limits.budgets is not None:
            writer.add_listener(limits.budgets.record)
        retention = None
        if settings.storage.retention_days > 0:
            retention = RetentionWorker(
                settings.db_path,
                settings.storage.retention_days * DAY_S,
                settings.storage.retention_interval_s,
                busy_timeout_ms=settings.storage.busy_timeout_ms,
            )
            retention.start()
        service = GatewayService(settings, teacher, writer, metrics)
        pool = StudentPool(settings, confined_factory(backend_factory(settings), settings.data_dir))
        flow = StudentFlow(service, pool)
        service.students = flow
        metrics.watch(pool, settings.db_path)
        cost_refresh = asyncio.create_task(service.costs.keep_fresh(settings.db_path))
        app.state.service = service
        app.state.pool = pool
        await pool.start()
        for companion in companions:
            await asyncio.to_thread(companion.start)
        log.info(
            "understudy gateway ready; teacher %s; log %s", settings.teacher.url, settings.db_path
        )
        try:
            yield
        finally:
            cost_refresh.cancel()
            for companion in reversed(companions):
                await asyncio.to_thread(companion.stop)
            await flow.drain()
            await pool.close()
            await teacher.close()
            if retention is not None:
                await asyncio.to_thread(retention.stop)
            await asyncio.to_thread(writer.close)
            stats = writer.stats()
            log.info(
                "request log flushed: %d rows written, %d dropped", stats.written, stats.dropped
            )

    return Litestar(
        route_handlers=[*routes.HANDLERS, *ADMIN_HANDLERS, *DASHBOARD_HANDLERS, feedback],
        lifespan=[lifespan],
        before_request=enforce_limits,  # per-key rate limits and budgets (gateway.ratelimit)
        exception_handlers={Exception: _handle_exception},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,  # the process's logging is set up once, in gateway.server
        debug=False,
    )


def _handle_exception(request: Request, exc: Exception) -> Response:
    if isinstance(exc, UnderstudyError):
        err = exc
    elif isinstance(exc, HTTPException):
        err = _from_litestar(request, exc)
    else:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        err = UnderstudyError("The server had an error while processing your request.")
    return Response(
        content=error_body(err),
        status_code=err.status_code,
        media_type="application/json",
        headers={"x-request-id": getattr(request.state, "request_id", None) or new_request_id()},
    )


def _from_litestar(request: Request, exc: HTTPException) -> UnderstudyError:
    path = request.url.path
    if exc.status_code == 404:
        return NotFoundError(f"Unknown request URL: {request.method} {path}.")
    if exc.status_code == 405:
        return MethodNotAllowedError(f"Method {request.method} is not allowed for {path}.")
    if exc.status_code == 413:
        return PayloadTooLargeError("The request body is larger than the gateway accepts.")
    err = UnderstudyError(str(exc.detail))
    err.status_code = exc.status_code
    err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return err
