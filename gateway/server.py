"""Running the app on uvicorn (uvloop + httptools), with graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import uvicorn

from understudy.gateway.app import Companion, create_app
from understudy.gateway.config import GatewayConfig


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # One line per teacher call would drown the gateway's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def serve(settings: GatewayConfig, *, companions: Sequence[Companion] = ()) -> None:
    """Serve until SIGTERM/SIGINT; the lifespan flushes the request log before exit."""
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings, companions=companions),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,  # one logging set-up for the gateway and uvicorn: ours
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        backlog=4096,
    )
    uvicorn.Server(config).run()
