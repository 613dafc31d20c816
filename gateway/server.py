"""Running the app on uvicorn (uvloop + httptools), with graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # One line per teacher call would drown the gateway's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; the lifespan flushes the request log before exit."""
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
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
