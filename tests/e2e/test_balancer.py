"""deploy/nginx.conf in front of two real gateway processes on one PostgreSQL database, as
deploy/compose.yaml runs them, with the openai SDK: requests spread over both replicas and each
logged once, streams relayed as they come, a replica that is gone skipped. Runs where nginx and
PostgreSQL are installed (the compose file's structure is checked in tests/test_deploy.py
either way)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import ROOT, GatewayProcess, free_port
from tests.postgres_server import PostgresServer
from tests.teacher_stub import StubTeacher

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

REPLICAS = ("gateway-1", "gateway-2")


class Balancer:
    """nginx run with deploy/nginx.conf, its replicas' names pointed at local gateways."""

    def __init__(self, workdir: Path, gateways: list[GatewayProcess]) -> None:
        self.port = free_port()
        text = (ROOT / "deploy" / "nginx.conf").read_text()
        for name, gateway in zip(REPLICAS, gateways, strict=True):
            text = text.replace(f"{name}:8000", f"127.0.0.1:{gateway.port}")
        text = re.sub(r"(server 127\.0\.0\.1:\d+) resolve", r"\1", text)  # names only
        text = text.replace("listen 8000;", f"listen 127.0.0.1:{self.port};")
        text = text.replace("pid /tmp/nginx.pid;", f"pid {workdir}/nginx.pid;")
        # which replica answered each request, as nginx saw it
        text = text.replace(
            "access_log /dev/stdout;",
            f"log_format replica '$upstream_addr';\n    access_log {workdir}/access.log replica;",
        )
        self.config = workdir / "nginx.conf"
        self.config.write_text(text)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answered_by(self) -> list[str]:
        """The replica (its address) that answered each request so far, in order (nginx lists
        every replica it tried, the one that answered last)."""
        lines = (self.workdir / "access.log").read_text().splitlines()
        return [line.split(",")[-1].strip() for line in lines if line.strip()]

    def start(self) -> Balancer:
        assert NGINX is not None
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.workdir), "-e", f"{self.workdir}/error.log"]
            + ["-c", str(self.config), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/lb-health").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError((self.workdir / "error.log").read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def replicas(
    stub: StubTeacher, postgres_server: PostgresServer, tmp_path_factory
) -> Iterator[list[GatewayProcess]]:
    from understudy.storage.engine_postgres import close_pools

    root = tmp_path_factory.mktemp("replicas")
    url = postgres_server.fresh_database()
    env = gateway_env(UNDERSTUDY_TRUSTED_PROXIES="*")
    gateways = [
        GatewayProcess(stub.base_url, root / name, env=env, storage_url=url) for name in REPLICAS
    ]
    try:
        for gateway in gateways:
            gateway.start()
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()
        close_pools(url)
        postgres_server.drop_database(url)


@pytest.fixture(scope="module")
def balancer(replicas, tmp_path_factory) -> Iterator[Balancer]:
    lb = Balancer(tmp_path_factory.mktemp("nginx"), replicas).start()
    try:
        yield lb
    finally:
        lb.stop()


def client(lb: Balancer) -> openai.OpenAI:
    return openai.OpenAI(base_url=lb.base_url, api_key="sk-client", max_retries=0)


def logged(gateway: GatewayProcess, marker: str, count: int) -> int:
    """Rows of the shared log whose request carries ``marker``, once there are ``count``."""
    deadline = time.monotonic() + 10
    while True:
        found = sum(marker in (row.get("request_json") or "") for row in gateway.rows())
        if found >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_requests_spread_over_both_replicas_and_each_is_logged_once(balancer, replicas, teacher):
    api = client(balancer)
    for i in range(12):
        reply = api.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"spread {i} What is 2+2?"}],
        )
        assert reply.choices[0].message.content

    answered = balancer.answered_by()
    assert {f"127.0.0.1:{g.port}" for g in replicas} == set(answered[-12:])
    assert logged(replicas[0], "spread ", 12) == 12  # one log: none sent twice, none lost


def test_a_stream_reaches_the_client_as_the_teacher_sends_it(balancer, teacher):
    """Events through the balancer arrive as they come (nginx: proxy_buffering off; the
    gateway's streams also say X-Accel-Buffering: no), not all at once at the end."""
    teacher.control(chunk_delay_ms=150)
    api = client(balancer)
    arrivals, text = [], ""
    started = time.monotonic()
    stream = api.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell me a story."}],
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            text += chunk.choices[0].delta.content
    assert text == "Once upon a time there was a small model that learned from a big one."
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] >= 0.15 * (len(arrivals) - 2)


def test_a_replica_that_is_gone_is_skipped(balancer, replicas, teacher):
    """A stopped replica refuses connections: the balancer sends every request to the other
    (a rolling upgrade), and no request fails."""
    first, second = replicas
    first.stop()
    api = client(balancer)
    for i in range(8):
        reply = api.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"failover {i} please"}],
        )
        assert reply.choices[0].message.content == f"ok: failover {i} please"
    assert logged(second, "failover ", 8) == 8
    assert set(balancer.answered_by()[-8:]) == {f"127.0.0.1:{second.port}"}
