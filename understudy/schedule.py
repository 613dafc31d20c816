"""The distiller's schedule inside the gateway process (``distiller.schedule.in_gateway``).

The schedule runs in a child process, so dataset building and evaluation never take the
gateway's CPU time or its GIL; training already runs in a process of its own. Serving picks
up a promoted student through the registry, as it does for any other worker.
"""

from __future__ import annotations

import importlib.util

from understudy.distiller.schedule import ScheduleProcess
from understudy.gateway.errors import ConfigError
from understudy.gateway.teacher.sync import SyncTeacher
from understudy.settings import Settings


def schedule_for(settings: Settings) -> ScheduleProcess | None:
    """The schedule process to start with the gateway, or None when it is not configured."""
    if not settings.distiller.schedule.in_gateway:
        return None
    if importlib.util.find_spec("apscheduler") is None:
        raise ConfigError(
            "distiller.schedule.in_gateway needs the distiller's packages: "
            'pip install "understudy[train]"'
        )
    return ScheduleProcess(
        settings.data_dir,
        settings.distiller,
        teacher=SyncTeacher.from_settings(settings),
        log_level=settings.log_level,
        database=settings.db_path,
    )
