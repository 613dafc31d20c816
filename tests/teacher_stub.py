"""A stand-in teacher: a small, fast OpenAI-compatible server that answers from a table and
misbehaves on demand.

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (streamed or not),
``GET /v1/models[/{id}]``; the endpoints the gateway relays as they are (embeddings, moderations,
files, audio, batches: ``tests/stub_passthrough.py``); ``POST /_control`` (change the fault
script, JSON as for :meth:`StubTeacher.control`), ``GET /_control``, ``GET /_requests`` (recent
requests and counters), ``DELETE /_requests``.

The answer is the table entry for the last user message (chat) or the prompt (completions),
matched exactly; otherwise ``"ok: "`` and the prompt's first three words. An entry is a string,
``{"tool_call": {"name": ..., "arguments": {...}}}`` (used when the request offers tools) or any
JSON value (sent as JSON text). See ``tests/stub_faults.py`` for the faults.

Per request, headers ``x-stub-fail: 500|429|...|drop|timeout|cut:N|stall:N`` and
``x-stub-delay-ms: N`` apply to any path; the control script (``fail_next``, ``fail_always``,
``delay_ms``, ``chunk_delay_ms``, ``cut_stream_after``, ``random``, ``timeout_s``) applies to the
two generation endpoints only.

In tests: ``with running_stub(table={...}) as stub: OpenAI(base_url=stub.base_url, ...)``.
On its own: ``python -m tests.teacher_stub --port 9000 [--table t.json] [--latency-ms 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from tests.asgi_server import ThreadedServer
from tests.stub_server import CHAT, DEFAULT_MODEL, TEXT, StubApp

__all__ = ["CHAT", "DEFAULT_MODEL", "TEXT", "StubTeacher", "main", "running_stub"]


class StubTeacher(StubApp):
    """The stand-in teacher as a server: ``start()`` in a background thread (tests) or
    ``serve()`` in this one (the command line). Constructor arguments: see :class:`StubApp`."""

    port: int = 0
    _runner: ThreadedServer | None = None

    # -- running -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, port: int = 0) -> str:
        """Serve from a background thread; returns the base URL once it accepts connections."""
        self._loop, self._stopping = None, asyncio.Event()
        self._runner = ThreadedServer(self.app)
        self.port = self._runner.start(port)
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except OSError as exc:
            self._runner.stop()
            raise RuntimeError(f"the stand-in teacher did not start on port {self.port}") from exc
        return self.base_url

    def stop(self) -> None:
        """Stop serving; requests still sleeping (delays, ``timeout``) are cut off at once."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._stopping.set)
        if self._runner is not None:
            self._runner.stop()
            self._runner = None

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> None:
        """Serve in this thread until SIGINT/SIGTERM (the command-line mode)."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        print(f"stand-in teacher serving {self.base_url} as {self.model}", flush=True)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        uvicorn.Server(config).run(sockets=[sock])

    def __enter__(self) -> StubTeacher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_stub(**kw: Any) -> Iterator[StubTeacher]:
    """A started :class:`StubTeacher` (keyword arguments as its constructor), stopped after."""
    stub = StubTeacher(**kw)
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.teacher_stub", description="A stand-in OpenAI-compatible teacher."
    )
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--table", type=Path, help="JSON object mapping prompts to answers")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model name answers carry")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="before each answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="between stream events")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="how long faults hang")
    parser.add_argument(
        "--control",
        type=json.loads,
        help='startup fault script, e.g. \'{"random": {"p500": 0.05}}\'',
    )
    args = parser.parse_args(argv)
    table = json.loads(args.table.read_text()) if args.table else {}
    if not isinstance(table, dict):
        parser.error("--table must hold a JSON object")
    stub = StubTeacher(
        table,
        model=args.model,
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        timeout_s=args.timeout_s,
        controls=args.control,
    )
    stub.serve(args.port, args.host)


if __name__ == "__main__":
    main()
