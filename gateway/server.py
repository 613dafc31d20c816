"""Running the app on uvicorn (uvloop + httptools), with graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

import uvicorn

from understudy.gateway.app import Companion, create_app
from understudy.gateway.config import GatewayConfig
from understudy.gateway.http_limits import protocol_class, raise_open_file_limit
from understudy.gateway.workers import supervise


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # One line per teacher call would drown the gateway's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


STARTUP_FAILED = 3
"""Exit status of a gateway whose start-up failed (uvicorn's own)."""


def serve(
    settings: GatewayConfig, *, companions: Sequence[Companion] = (), workers: int = 1
) -> int:
    """Serve until SIGTERM/SIGINT; the lifespan flushes the request log before exit.

    Returns the exit status: 0 after a clean stop (a signal that asked for the stop is not
    re-raised, so the process ends with 0, not -15, and Ctrl-C prints no traceback),
    :data:`STARTUP_FAILED` when the start-up failed, or was refused: a non-loopback address
    with no keys needs ``allow_open`` (:meth:`GatewayConfig.exposure_problem`).

    With ``workers`` above 1, that many processes serve the same socket
    (:mod:`understudy.gateway.workers`); the companions (the distiller's schedule) run in the
    first of them only.
    """
    configure_logging(settings.log_level)
    problem = settings.exposure_problem()
    if problem is not None:
        print(f"understudy: {problem}", file=sys.stderr)
        return STARTUP_FAILED
    try:  # before the app starts: a busy port is one line, not "gateway ready" then an error
        listener = listening_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"understudy: {listen_problem(settings.host, settings.port, exc)}", file=sys.stderr)
        return STARTUP_FAILED
    if workers > 1:
        with listener:
            return supervise(
                lambda i: _run(settings, companions if i == 0 else (), listener),
                workers,
                startup_failed=STARTUP_FAILED,
            )
    with listener:
        return _run(settings, companions, listener)


def _run(settings: GatewayConfig, companions: Sequence[Companion], listener: socket.socket) -> int:
    """Serve the app on ``listener`` in this process until stopped; the exit status."""
    config = uvicorn.Config(
        create_app(settings, companions=companions),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_class(settings.server),  # httptools, with header deadline and size limits
        lifespan="on",
        access_log=False,
        # A client's address is the connection's: X-Forwarded-For is believed only from the
        # configured proxies (uvicorn's default trusts it from loopback, which let a local
        # client pick its own address and dodge per-address limits).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        log_config=None,  # one logging set-up for the gateway and uvicorn: ours
        log_level=settings.log_level,
        timeout_keep_alive=settings.server.keep_alive_s,  # type: ignore[arg-type]
        limit_concurrency=settings.server.max_connections,
        timeout_graceful_shutdown=settings.server.shutdown_drain_s,  # type: ignore[arg-type]
        backlog=4096,
    )
    raise_open_file_limit(settings.server.max_connections)
    server = uvicorn.Server(config)
    with _signals_end_cleanly():
        server.run(sockets=[listener])
    return 0 if server.started else STARTUP_FAILED


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, for uvicorn to listen on; raises ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def listen_problem(host: str, port: int, exc: OSError) -> str:
    """One line on why the gateway cannot listen, naming the setting to change."""
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where}: the address is already in use (is another gateway running?). "
            "Choose another port with --port or the port setting (UNDERSTUDY_PORT)."
        )
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}. Check --host/--port (UNDERSTUDY_HOST, UNDERSTUDY_PORT)."


@contextmanager
def _signals_end_cleanly() -> Iterator[None]:
    """While serving, SIGTERM and SIGINT lead to uvicorn's graceful stop. After it, uvicorn
    re-raises the signal under the handlers it found when it started; these record it and
    return, so a stop that went well ends the process normally."""
    if signal.getsignal(signal.SIGTERM) is None:  # not set from Python: leave it alone
        yield
        return

    def stopped(sig: int, frame: FrameType | None) -> None:
        logging.getLogger("understudy.gateway").info("stopped by %s", signal.Signals(sig).name)

    previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
