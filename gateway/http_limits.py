"""Limits on what a client may do to the HTTP server, before the app sees a request.

uvicorn's httptools protocol, with: a deadline for a request's headers (a silent or slow-loris
connection is closed), a cap on the request line and headers' size and on the number of header
lines (431, then a lingering close), and the open-file limit raised to fit
``server.max_connections``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from understudy.gateway.config import ServerConfig

log = logging.getLogger("understudy.gateway")

_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
)
_BODY_431 = (
    b'{"error":{"message":"The request headers are larger than the gateway accepts.",'
    b'"type":"invalid_request_error","param":null,"code":"request_header_fields_too_large"}}'
)


class _TooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose headers are too large."""


class _ProtocolLog:
    """uvicorn's logger as one connection's protocol sees it, saying what a 431 was: uvicorn
    logs every request its parser stops as "Invalid HTTP request received." (WARNING), which
    for headers over the limit read as a malformed request."""

    def __init__(self, protocol: LimitedHttpProtocol, logger: logging.Logger) -> None:
        self._protocol = protocol
        self._logger = logger

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self._protocol._too_large:
            self._logger.info(
                "431: request headers over the limit (%d bytes or %d lines)",
                self._protocol.max_header_bytes,
                self._protocol.max_headers,
            )
            return
        self._logger.warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


class LimitedHttpProtocol(HttpToolsProtocol):
    """The httptools protocol with a header deadline and header size limits (class attributes
    set by :func:`protocol_class`)."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 128
    linger_s: float = 2.0
    """After a 431, how long what the client still sends is read and dropped before closing."""
    linger_bytes: int = 1 << 20
    """... and how much of it at most."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _ProtocolLog(self, self.logger)  # type: ignore[assignment]
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_lines = 0
        self._too_large = False
        self._lingering = False
        self._discarded = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > self.linger_bytes:
                self.transport.close()
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_lines = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        length = b"content-length: " + str(len(_BODY_431)).encode() + b"\r\n\r\n"
        self.transport.write(_HEADERS_TOO_LARGE + length + _BODY_431)
        self._linger()

    def _linger(self) -> None:
        """End the answer, then read and drop what the client still sends (``linger_s``, at most
        ``linger_bytes``) before closing: closed with its headers unread, the connection was
        reset, and a client may lose an answer it has not read yet to a reset."""
        self._lingering = True
        self._disarm()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(self.linger_s, self.transport.close)

    def _count(self, size: int, lines: int) -> None:
        self._header_bytes += size
        self._header_lines += lines
        if self._header_bytes > self.max_header_bytes or self._header_lines > self.max_headers:
            self._too_large = True
            raise _TooLarge  # the parser stops; uvicorn answers through send_400_response

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered: its headers came in time
        self.transport.close()


def protocol_class(config: ServerConfig) -> type[LimitedHttpProtocol]:
    """:class:`LimitedHttpProtocol` with ``config``'s limits."""
    return type(
        "ConfiguredHttpProtocol",
        (LimitedHttpProtocol,),
        {
            "header_timeout_s": config.header_timeout_s,
            "max_header_bytes": config.max_header_bytes,
            "max_headers": config.max_headers,
        },
    )


def raise_open_file_limit(connections: int) -> None:
    """Raise the soft open-file limit towards ``connections`` plus room for the teacher's pool
    and the database, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit to %d: %s", wanted, exc)
