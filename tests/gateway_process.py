"""Run the real gateway as a separate process for end-to-end tests.

A gateway logs into its data directory's SQLite file, or, when the end-to-end run is on
PostgreSQL (``pytest --e2e-storage postgresql``), into a database of its own on the test
server: one per data directory, so a gateway restarted on the same directory finds its log
(:func:`database_for`). Tests read what a gateway stored through the storage layer
(:meth:`GatewayProcess.rows`, :meth:`GatewayProcess.database`), the same on either engine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from understudy.storage.bodies import decode_row
from understudy.storage.database import open_database
from understudy.storage.engine import Address, Database

if TYPE_CHECKING:
    from tests.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent

_server: dict[str, PostgresServer | None] = {"postgres": None}
_databases: dict[Path, str] = {}


def use_postgres(server: PostgresServer | None) -> None:
    """Give every gateway started from now on a PostgreSQL database on ``server`` (None: the
    data directory's SQLite file again)."""
    _server["postgres"] = server


def on_postgres() -> bool:
    """Whether the gateways of this run log into PostgreSQL."""
    return _server["postgres"] is not None


def database_for(data_dir: Path) -> str | None:
    """The PostgreSQL database of the gateways on ``data_dir``, made on first use (None on
    SQLite). Names are random: parallel runs on one server never share one."""
    server = _server["postgres"]
    if server is None:
        return None
    key = Path(data_dir).resolve()
    if key not in _databases:
        _databases[key] = server.fresh_database()
    return _databases[key]


def database_address(data_dir: Path) -> Address:
    """Where the gateways on ``data_dir`` keep their database: :func:`database_for`'s
    PostgreSQL database, or the directory's SQLite file (for a test that fills it first)."""
    return database_for(data_dir) or Path(data_dir) / "understudy.db"


def storage_env(data_dir: Path) -> dict[str, str]:
    """The environment an ``understudy`` command needs to use that database."""
    url = database_for(data_dir)
    return {"UNDERSTUDY_STORAGE_URL": url} if url else {}


def drop_databases() -> None:
    """Drop the databases :func:`database_for` made (their gateways are stopped by then)."""
    from understudy.storage.engine_postgres import close_pools

    server = _server["postgres"]
    while _databases:
        _, url = _databases.popitem()
        close_pools(url)
        if server is not None:
            server.drop_database(url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """The gateway could not bind its port: another process took it first."""


class GatewayProcess:
    """``understudy serve`` in a subprocess, on a free port, with its own data directory."""

    def __init__(
        self,
        teacher_url: str,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        config: str | None = None,
        args: list[str] | None = None,
        storage_url: str | None = None,
    ) -> None:
        self.teacher_url = teacher_url
        self.data_dir = Path(data_dir)
        self.storage_url = storage_url or database_for(self.data_dir)
        """The database (``storage.url``) when it is not the data directory's SQLite file."""
        self.port = free_port()
        self.extra_env = env or {}
        self.config = config
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"gateway-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def db_path(self) -> Path:
        """The data directory's SQLite file (where the log is unless ``storage_url`` is set)."""
        return self.data_dir / "understudy.db"

    @property
    def address(self) -> Address:
        """Where the gateway's database is: its ``storage.url``, or the SQLite file."""
        return self.storage_url or self.db_path

    @property
    def storage_env(self) -> dict[str, str]:
        """The environment an ``understudy`` command needs to use the gateway's database."""
        return {"UNDERSTUDY_STORAGE_URL": self.storage_url} if self.storage_url else {}

    def command_env(self) -> dict[str, str]:
        """This process's environment without ``UNDERSTUDY_*`` names, plus
        :attr:`storage_env`: for an ``understudy`` command run as an operator runs it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
        return env | self.storage_env

    @contextmanager
    def database(self) -> Iterator[Database]:
        """The gateway's database, opened through the storage layer (either engine), closed
        after."""
        db = open_database(self.address, migrate_schema=False)  # the gateway migrated it
        try:
            yield db
        finally:
            db.conn.close()

    def stored_text(self) -> str:
        """Everything in the gateway's database as text (every row of every table, bodies
        decoded): what a test searches for text that must never be stored."""
        if not self.storage_url and not self.db_path.exists():
            return ""
        parts: list[str] = []
        with self.database() as db:
            for table in db.table_names():
                for row in db.query(f"select * from {table}"):
                    if table == "requests":
                        row = decode_row(db, row)
                    parts.append(repr(row))
        return "\n".join(parts)

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Start the gateway and wait until ``/health`` answers. A port taken between
        :func:`free_port` and the gateway's bind (another test process got it) is swapped for
        another free one, up to three times."""
        for _ in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                self.port = free_port()
                self.log_path = self.data_dir.parent / f"gateway-{self.port}.log"
        return self._start(timeout)

    def _start(self, timeout: float) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
        env.update(self.extra_env)
        if self.storage_url:
            env["UNDERSTUDY_STORAGE_URL"] = self.storage_url
        cmd = [
            sys.executable,
            "-m",
            "understudy.cli",
            "serve",
            "--teacher-url",
            self.teacher_url,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.config is not None:
            cfg = self.data_dir.parent / f"understudy-{self.port}.toml"
            cfg.write_text(self.config)
            cmd += ["--config", str(cfg)]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd + self.args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                if "address is already in use" in self.output():
                    raise PortTaken(self.port)
                raise RuntimeError(f"gateway exited early:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"gateway did not start in {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self._log.closed:
            return self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rows(self, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The log rows matching ``where`` (``?`` placeholders), oldest first, bodies as text
        however they are stored."""
        if not self.storage_url and not self.db_path.exists():
            return []
        db = open_database(self.address, migrate_schema=False)
        try:
            sql = f"select * from requests where {'1 = 1' if where == '1' else where}"
            return [decode_row(db, r) for r in db.query(sql + " order by created_at", params)]
        finally:
            db.conn.close()

    def wait_rows(
        self,
        where: str = "1",
        params: tuple[Any, ...] = (),
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """Rows matching ``where`` once at least ``count`` of them are committed."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.rows(where, params)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def row(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The log row of one request, waiting for the write-behind queue to commit it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.rows("id = ?", (request_id,))
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"request {request_id} was not logged within {timeout}s")

    def ready_status(self, expected: int, timeout: float = 5.0) -> int:
        """``/ready``'s status once it is ``expected`` (or the last one after ``timeout``): its
        answer is reused for a second, so a change shows a moment later."""
        deadline = time.monotonic() + timeout
        while True:
            status = httpx.get(self.url + "/ready").status_code
            if status == expected or time.monotonic() > deadline:
                return status
            time.sleep(0.1)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
