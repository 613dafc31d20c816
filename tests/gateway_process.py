"""Run the real gateway as a separate process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from understudy.storage.bodies import decode_row
from understudy.storage.database import open_database

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self.storage_url = storage_url
        """The database (``storage.url``) when it is not the data directory's SQLite file."""
        self.data_dir = Path(data_dir)
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
        return self.data_dir / "understudy.db"

    def start(self, timeout: float = 30.0) -> GatewayProcess:
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
        if self.storage_url:
            return self._database_rows(where, params)
        if not self.db_path.exists():
            return []
        conn = sqlite3.connect(self.db_path)
        conn.row_factory = sqlite3.Row
        try:
            return [
                decode_row(conn, dict(r))  # bodies as text, however they are stored
                for r in conn.execute(
                    f"select * from requests where {where} order by created_at", params
                )
            ]
        finally:
            conn.close()

    def _database_rows(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        assert self.storage_url is not None
        db = open_database(self.storage_url, migrate_schema=False)
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
