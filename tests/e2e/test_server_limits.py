"""Clients that hold connections, send headers slowly or too many of them, and a stop that must
fit the platform's grace period."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import GatewayProcess

STORY = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def limited(stub, tmp_path_factory):
    env = gateway_env(
        UNDERSTUDY_SERVER_HEADER_TIMEOUT_S="1",
        UNDERSTUDY_SERVER_MAX_HEADER_BYTES="16384",
        UNDERSTUDY_SERVER_MAX_HEADERS="64",
    )
    with GatewayProcess(stub.base_url, tmp_path_factory.mktemp("lim") / "data", env=env) as gw:
        yield gw


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_silent_connections_are_closed_and_probes_answer(limited):
    """Connections that never send a byte once stayed open for good (and ran out the fds)."""
    socks = [socket.create_connection(("127.0.0.1", limited.port)) for _ in range(200)]
    try:
        started = time.monotonic()
        assert httpx.get(limited.url + "/health", timeout=2).status_code == 200
        assert all(closed_by_server(s, within=4) for s in socks)
        assert time.monotonic() - started < 6
    finally:
        for s in socks:
            s.close()


def test_a_slow_loris_is_closed_at_the_header_deadline(limited):
    sock = socket.create_connection(("127.0.0.1", limited.port))
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.2)
        started, closed = time.monotonic(), False
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed and time.monotonic() - started < 3
    finally:
        sock.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"x-big": "a" * 200_000},
        {f"x-h{i}": "1" for i in range(20_000)},
    ],
    ids=["200KB-header", "20000-header-lines"],
)
def test_oversized_headers_get_431_in_the_openai_shape(limited, headers):
    status, body = raw_get(limited.port, headers)
    assert status == 431
    assert json.loads(body)["error"]["code"] == "request_header_fields_too_large"
    assert httpx.get(limited.url + "/health").status_code == 200
    # The log says what it was, not a malformed request.
    output = limited.output()
    assert "Invalid HTTP request received" not in output
    assert "431: request headers over the limit" in output


def raw_get(port: int, headers: dict[str, str]) -> tuple[int, bytes]:
    """``GET /health`` with ``headers``, written to the socket as they are, and the status and
    body of the answer (read until the server ends it; a reset fails the test). An HTTP client
    is no use here: httpx looks each header up in a list of all of them, and took 12-24 s over
    20,000."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # The server answers before it has read it all, then reads the rest and drops it: a
        # server that closed with it unread reset the connection, and the answer could be lost.
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer, "the server closed the connection without an answer"
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_stop_flushes_streams_in_flight_within_the_grace_period(stub, teacher, tmp_path):
    """SIGTERM with 5 streams in flight waited 30 s: a platform killing after 10 s lost them."""
    teacher.control(chunk_delay_ms=1000)
    gw = GatewayProcess(stub.base_url, tmp_path / "data", env=gateway_env()).start()
    c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=60)
    first_chunk = threading.Barrier(6, timeout=20)

    def stream() -> None:
        try:
            chunks = c.chat.completions.create(model="m", messages=STORY, stream=True)
            for i, _ in enumerate(chunks):
                if i == 0:
                    first_chunk.wait()
        except openai.APIError:
            pass  # the stream ended early: expected

    threads = [threading.Thread(target=stream) for _ in range(5)]
    for t in threads:
        t.start()
    first_chunk.wait()
    started = time.monotonic()
    code = gw.stop(timeout=10)  # what `docker stop` allows before SIGKILL
    took = time.monotonic() - started
    for t in threads:
        t.join(10)
    assert code == 0 and took < 9.5, gw.output()[-2000:]
    rows = gw.rows()
    assert len(rows) == 5, gw.output()[-2000:]
    assert "5 rows written, 0 dropped" in gw.output()
