"""The services handlers use, opened in the app's lifespan and injected with ``Provide``.

``create_app`` makes one :class:`ServiceBox`; the lifespan puts the opened :class:`Services`
in it and takes them out at shutdown. Handlers name what they need (``settings``,
``pipeline``, ``writer``, ...) as typed parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from understudy.gateway.accounting.metrics import Metrics
from understudy.gateway.api.failed_auth import FailedAuth
from understudy.gateway.api.limits import RequestLimits
from understudy.gateway.api.readiness import Readiness
from understudy.gateway.api.sessions import Sessions
from understudy.gateway.api.slow_reads import SlowReads
from understudy.gateway.config import GatewayConfig
from understudy.gateway.errors import ServiceUnavailableError
from understudy.gateway.serving.passthrough import Passthrough
from understudy.gateway.serving.pipeline import Pipeline
from understudy.gateway.serving.pool import StudentPool
from understudy.gateway.teacher.client import TeacherClient
from understudy.storage.database import Store
from understudy.storage.request_log import RequestLogWriter

Config = NamedDependency[SkipValidation[GatewayConfig]]
"""The settings as a handler parameter (not validated: the composition root's settings are a
subclass of :class:`GatewayConfig`)."""


@dataclass(frozen=True)
class Services:
    settings: GatewayConfig
    store: Store
    writer: RequestLogWriter
    teacher: TeacherClient
    metrics: Metrics
    pool: StudentPool
    pipeline: Pipeline
    limits: RequestLimits | None
    passthrough: Passthrough
    failed_auth: FailedAuth
    sessions: Sessions
    readiness: Readiness
    reads: SlowReads = field(default_factory=SlowReads)
    """The dashboard's queries."""
    scrapes: SlowReads = field(default_factory=lambda: SlowReads(1, 4))
    """Rendering ``/metrics``."""


class ServiceBox:
    """Holds the running services between the lifespan's start and its end."""

    def __init__(self) -> None:
        self._services: Services | None = None

    def put(self, services: Services | None) -> None:
        self._services = services

    def get(self) -> Services:
        if self._services is None:
            raise ServiceUnavailableError("The gateway is not serving yet.")
        return self._services


def _settings(services: NamedDependency[Services]) -> GatewayConfig:
    return services.settings


def _store(services: NamedDependency[Services]) -> Store:
    return services.store


def _writer(services: NamedDependency[Services]) -> RequestLogWriter:
    return services.writer


def _teacher(services: NamedDependency[Services]) -> TeacherClient:
    return services.teacher


def _metrics(services: NamedDependency[Services]) -> Metrics:
    return services.metrics


def _pool(services: NamedDependency[Services]) -> StudentPool:
    return services.pool


def _pipeline(services: NamedDependency[Services]) -> Pipeline:
    return services.pipeline


def _limits(services: NamedDependency[Services]) -> RequestLimits | None:
    return services.limits


def service_dependencies(box: ServiceBox) -> dict[str, Provide]:
    """``Provide`` for each service, for the app's ``dependencies``."""
    fns = {
        "settings": _settings,
        "store": _store,
        "writer": _writer,
        "teacher": _teacher,
        "metrics": _metrics,
        "pool": _pool,
        "pipeline": _pipeline,
        "limits": _limits,
    }
    provided = {name: Provide(fn, sync_to_thread=False) for name, fn in fns.items()}
    return {"services": Provide(box.get, sync_to_thread=False), **provided}
