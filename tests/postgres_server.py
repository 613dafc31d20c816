"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary directory, ``pg_ctl start``
on a free loopback port, stopped (and the directory removed) when the test session ends.

``UNDERSTUDY_TEST_POSTGRES_URL`` names a server to use instead (CI starts one in ``.ci/run``);
the test session takes it out of the environment as it starts (:func:`adopt_environment`),
since the settings reader refuses ``UNDERSTUDY_*`` names it does not know, and hands it to the
worker processes of ``pytest -n``.
Each test gets a database of its own (:meth:`PostgresServer.fresh_database`). PostgreSQL
refuses to run as root: as root the cluster is owned by the ``postgres`` user (Debian's
package creates it), else by whoever runs the tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "UNDERSTUDY_TEST_POSTGRES_URL"
_given = {"url": ""}


def adopt_environment(url: str = "") -> None:
    """Move ``UNDERSTUDY_TEST_POSTGRES_URL`` from the environment into this module (``url``: the
    one the controlling process of ``pytest -n`` adopted, handed to a worker)."""
    _given["url"] = os.environ.pop(ENV_URL, "") or url or _given["url"]


def given_url() -> str:
    """The server named by ``UNDERSTUDY_TEST_POSTGRES_URL`` (empty: none)."""
    return _given["url"] or os.environ.get(ENV_URL, "")


_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _binary(name: str) -> str | None:
    for folder in _BIN_DIRS:
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


def unavailable_reason() -> str | None:
    """Why no PostgreSQL server can be had for tests (None: one can)."""
    if given_url():
        return None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        return (
            "PostgreSQL is not installed here (initdb/pg_ctl not found; apt-get install postgresql)"
        )
    if os.geteuid() == 0 and _run_as_user() is None:
        return "running as root and there is no 'postgres' user to own a throwaway cluster"
    return None


def _run_as_user() -> str | None:
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        import pwd

        pwd.getpwnam("postgres")
        return "postgres"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One server (started here or named by ``UNDERSTUDY_TEST_POSTGRES_URL``) and the databases
    made on it."""

    def __init__(self) -> None:
        self.url = given_url()
        self._dir: Path | None = None
        self._user: str | None = None

    def start(self) -> PostgresServer:
        if self.url:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="understudy-pg-"))
        self._user = _run_as_user()
        data = self._dir / "data"
        if self._user:
            shutil.chown(self._dir, self._user)
        port = _free_port()
        self._as_owner(
            [_binary("initdb"), "-D", str(data), "-U", "understudy", "-A", "trust", "-E", "UTF8"]
        )
        options = (
            f"-p {port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=300"  # test processes in parallel, each gateway with its pool
        )
        self._as_owner(
            [_binary("pg_ctl"), "-D", str(data), "-l", str(self._dir / "log"), "-w", "-o", options]
            + ["start"]
        )
        self.url = f"postgresql://understudy@127.0.0.1:{port}/postgres"
        return self

    def _as_owner(self, argv: list[str | None]) -> None:
        cmd = [str(a) for a in argv]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self._dir, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")

    def stop(self) -> None:
        if self._dir is None:
            return
        with contextlib.suppress(RuntimeError):
            self._as_owner([_binary("pg_ctl"), "-D", str(self._dir / "data"), "-m", "fast", "stop"])
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def fresh_database(self) -> str:
        """Create an empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + name))

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`fresh_database` (its connections are ended first)."""
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
