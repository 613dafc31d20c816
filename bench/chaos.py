"""Chaos: a misbehaving teacher and misbehaving clients against a live gateway, fault by fault.

    python bench/chaos.py [--per-fault 5] [--concurrency 8] [--only NAME,...]

Starts the stand-in teacher (``tests/teacher_stub.py``) and the gateway as separate processes,
then, for ``--per-fault`` seconds each: the teacher family (every misbehaviour of
``tests/stub_misbehave.py`` and the scripted 5xx/timeout/cut faults) under chat traffic at
``--concurrency``, half streamed; and the slow-client family (silent connections, slow-loris
headers, clients leaving before a whole answer and in the middle of a stream) beside ordinary
traffic. Per fault: requests, failures in OpenAI's shape (a JSON error, or a stream's error
event then ``[DONE]``), failures in any other shape (must be 0), answered requests and their
rows in the log (must match), the worst ``/health`` latency while the fault ran (measured from
a thread of its own) and the gateway's peak RSS. Prints a table and writes JSON
(``bench/results/chaos.json``); exits 1 when a fault breaks either rule.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _proc import rss_mb  # noqa: E402
from _stub import start_stub_teacher  # noqa: E402

from tests.gateway_process import GatewayProcess  # noqa: E402

TEACHER_FAULTS = [
    "html",
    "not_json",
    "array",
    "status:501",
    "status:505",
    "status:302",
    "deep",
    "usage_str",
    "usage_obj",
    "usage_huge",
    "model_obj",
    "sse_html",
    "echo_auth:500",
    "surrogate",
    "drip:500",
    "keepalive:200",
    "huge:8",
    "gzip_bomb:1024",
]
SCRIPTED = {"random": {"p500": 0.3, "ptimeout": 0.1, "pcut": 0.2, "seed": 3}}
CLIENT_FAULTS = ["silent-connections", "slow-loris", "leave-before-answer", "leave-mid-stream"]
TEACHER_KEY = "sk-chaos-teacher-0123456789"


def gateway_env() -> dict[str, str]:
    return {
        "UNDERSTUDY_TEACHER_API_KEY": TEACHER_KEY,
        "UNDERSTUDY_TEACHER_TIMEOUT_S": "2",
        "UNDERSTUDY_TEACHER_BACKOFF_S": "0.05",
        "UNDERSTUDY_TEACHER_RETRY_BUDGET_S": "2",
        "UNDERSTUDY_TEACHER_DEADLINE_S": "3",
        "UNDERSTUDY_TEACHER_STREAM_IDLE_S": "1",
        "UNDERSTUDY_TEACHER_MAX_ANSWER_BYTES": str(4 * 1024 * 1024),
        "UNDERSTUDY_SERVER_HEADER_TIMEOUT_S": "2",
        "UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS": "50",
        "UNDERSTUDY_STUDENT_BACKEND": "none",
        "UNDERSTUDY_LOG_LEVEL": "error",
    }


def start_teacher() -> tuple[subprocess.Popen[bytes], str]:
    return start_stub_teacher("--timeout-s", "3")


def openai_error(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"message", "type", "param", "code"}
    )


def classify(status: int, content_type: str, raw: bytes, stream: bool) -> str:
    """``ok``, ``shaped`` (a failure in OpenAI's shape) or ``unshaped``."""
    try:
        if status != 200:
            shaped = content_type.startswith("application/json") and openai_error(json.loads(raw))
            return "shaped" if shaped else "unshaped"
        if not stream:
            return "ok" if json.loads(raw).get("choices") is not None else "unshaped"
    except ValueError:
        return "unshaped"
    events = [e[6:] for e in raw.decode("utf-8", "replace").split("\n\n") if e.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return "unshaped"
    errors = [json.loads(e) for e in events[:-1] if e.startswith('{"error"')]
    if not errors:
        return "ok"
    return "shaped" if len(errors) == 1 and openai_error(errors[0]) else "unshaped"


async def one_request(client: httpx.AsyncClient, rng: random.Random) -> dict[str, Any]:
    stream = rng.random() < 0.5
    body = {
        "model": "chaos",
        "messages": [{"role": "user", "content": rng.choice(["What is 2+2?", "Hi there."])}],
        "stream": stream,
    }
    try:
        async with client.stream("POST", "/chat/completions", json=body) as response:
            raw = await response.aread()
    except httpx.HTTPError as exc:
        return {"kind": "unshaped", "detail": type(exc).__name__}
    kind = classify(response.status_code, response.headers.get("content-type", ""), raw, stream)
    return {
        "kind": kind,
        "status": response.status_code,
        "id": response.headers.get("x-request-id"),
    }


async def traffic(base_url: str, seconds: float, concurrency: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                results.append(await one_request(client, rng))

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return results


class Watch:
    """A thread polling ``/health`` (worst latency) and the gateway's RSS while a fault runs."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.worst_health_ms = 0.0
        self.health_failures = 0
        self.rss_peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url + "/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.worst_health_ms = max(
                    self.worst_health_ms, (time.perf_counter() - started) * 1000
                )
                self.health_failures += 0 if ok else 1
                self.rss_peak_mb = max(self.rss_peak_mb, rss_mb(self.pid))
                self._stop.wait(0.05)


def logged_ids(db_path: Path) -> set[str]:
    conn = sqlite3.connect(db_path)
    try:
        return {r[0] for r in conn.execute("select id from requests")}
    finally:
        conn.close()


def rows_since(db_path: Path, since: float, where: str) -> int:
    conn = sqlite3.connect(db_path)
    try:
        sql = f"select count(*) from requests where created_at >= ? and {where}"
        return int(conn.execute(sql, [since]).fetchone()[0])
    finally:
        conn.close()


# -- the slow-client family ----------------------------------------------------------------


async def silent_connections(gw: GatewayProcess, _: str, seconds: float) -> dict[str, Any]:
    """300 connections that never send a byte; how many the server closed by the end."""
    socks = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.setblocking(False)
        socks.append(s)
    await asyncio.sleep(seconds)
    closed = sum(1 for s in socks if _closed(s))
    for s in socks:
        s.close()
    return {"connections": len(socks), "closed_by_server": closed}


async def slow_loris(gw: GatewayProcess, _: str, seconds: float) -> dict[str, Any]:
    """100 connections sending their headers a byte every 0.5 s."""
    socks = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(100)]
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline and i < len(head):
        for s in socks:
            with contextlib.suppress(OSError):
                s.send(head[i : i + 1])
        i += 1
        await asyncio.sleep(0.5)
    for s in socks:
        s.setblocking(False)
    closed = sum(1 for s in socks if _closed(s))
    for s in socks:
        s.close()
    return {"connections": len(socks), "closed_by_server": closed}


def _closed(s: socket.socket) -> bool:
    """Whether the server closed (or answered) the connection."""
    try:
        s.recv(65536)  # b"" once closed; an error answer before it: the server acted either way
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


async def leave_before_answer(
    gw: GatewayProcess, teacher_url: str, seconds: float
) -> dict[str, Any]:
    """Clients that give up after 0.2 s on whole answers the teacher takes 1 s to give."""
    httpx.post(teacher_url + "/_control", json={"delay_ms": 1000})
    left = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=0.2) as client:

        async def worker() -> None:
            nonlocal left
            while time.monotonic() < deadline:
                body = {"model": "chaos", "messages": [{"role": "user", "content": "Hi."}]}
                try:
                    await client.post("/chat/completions", json=body)
                except httpx.TimeoutException:
                    left += 1

        await asyncio.gather(*(worker() for _ in range(8)))
    httpx.post(teacher_url + "/_control", json={"delay_ms": 0})
    return {"clients_left": left}


async def leave_mid_stream(gw: GatewayProcess, teacher_url: str, seconds: float) -> dict[str, Any]:
    """Clients that read a stream's first event and close."""
    httpx.post(teacher_url + "/_control", json={"chunk_delay_ms": 100})
    left = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:

        async def worker() -> None:
            nonlocal left
            while time.monotonic() < deadline:
                body = {
                    "model": "chaos",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Tell me a long story."}],
                }
                async with client.stream("POST", "/chat/completions", json=body) as response:
                    async for _ in response.aiter_bytes():
                        left += 1
                        break

        await asyncio.gather(*(worker() for _ in range(8)))
    httpx.post(teacher_url + "/_control", json={"chunk_delay_ms": 0})
    return {"clients_left": left}


CLIENT_RUNNERS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "silent-connections": silent_connections,
    "slow-loris": slow_loris,
    "leave-before-answer": leave_before_answer,
    "leave-mid-stream": leave_mid_stream,
}


# -- one fault --------------------------------------------------------------------------------


def run_fault(
    name: str, gw: GatewayProcess, teacher_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    assert gw.proc is not None
    control = httpx.post
    if name in CLIENT_RUNNERS:
        concurrency = 2  # ordinary traffic beside the misbehaving clients
    else:
        concurrency = args.concurrency
        spec = SCRIPTED if name == "scripted-5xx-timeout-cut" else {"misbehave": name}
        control(teacher_url + "/_control", json=spec)
    since = time.time()
    extra: dict[str, Any] = {}
    with Watch(gw.url, gw.proc.pid) as watch:

        async def both() -> list[dict[str, Any]]:
            load = traffic(gw.base_url, args.per_fault, concurrency)
            if name not in CLIENT_RUNNERS:
                return await load
            side = CLIENT_RUNNERS[name](gw, teacher_url, args.per_fault)
            results, found = await asyncio.gather(load, side)
            extra.update(found)
            return results

        results = asyncio.run(both())
    control(teacher_url + "/_control", json={"misbehave": None, "random": None})
    time.sleep(0.5)  # longer than the commit interval: every answered row is written
    logged = logged_ids(gw.db_path)
    answered = [r["id"] for r in results if r.get("id")]
    if name in ("leave-before-answer", "leave-mid-stream"):
        extra["incomplete_rows"] = rows_since(gw.db_path, since, "status = 'incomplete'")
    return {
        "fault": name,
        "requests": len(results),
        "ok": sum(r["kind"] == "ok" for r in results),
        "shaped_failures": sum(r["kind"] == "shaped" for r in results),
        "unshaped_failures": sum(r["kind"] == "unshaped" for r in results),
        "answered": len(answered),
        "rows_logged": sum(1 for i in answered if i in logged),
        "health_max_ms": round(watch.worst_health_ms, 1),
        "health_failures": watch.health_failures,
        "rss_peak_mb": round(watch.rss_peak_mb, 1),
        **extra,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'fault':<26}{'requests':>9}{'ok':>6}{'shaped':>8}{'unshaped':>9}"
        f"{'answered':>9}{'logged':>8}{'health max ms':>14}{'RSS peak MB':>12}  notes"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['fault']:<26}{r['requests']:>9}{r['ok']:>6}{r['shaped_failures']:>8}"
            f"{r['unshaped_failures']:>9}{r['answered']:>9}{r['rows_logged']:>8}"
            f"{r['health_max_ms']:>14}{r['rss_peak_mb']:>12}  {_notes(r)}"
        )


def _notes(row: dict[str, Any]) -> str:
    keys = ("connections", "closed_by_server", "clients_left", "incomplete_rows")
    return ", ".join(f"{k} {row[k]}" for k in keys if k in row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-fault", type=float, default=5.0, help="seconds per fault")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated faults (default: all)")
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "chaos.json"))
    args = parser.parse_args()
    faults = [*TEACHER_FAULTS, "scripted-5xx-timeout-cut", *CLIENT_FAULTS]
    if args.only:
        faults = [f for f in faults if f in args.only.split(",")]
    teacher, teacher_url = start_teacher()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="understudy-chaos-") as tmp:
            gw = GatewayProcess(teacher_url + "/v1", Path(tmp) / "data", env=gateway_env())
            with gw:
                asyncio.run(traffic(gw.base_url, 1, 2))  # warm up
                rows = [run_fault(name, gw, teacher_url, args) for name in faults]
                alive = gw.proc is not None and gw.proc.poll() is None
            output = gw.output()
    finally:
        teacher.terminate()
        teacher.wait(10)
    print_table(rows)
    result = {
        "per_fault_s": args.per_fault,
        "concurrency": args.concurrency,
        "elapsed_s": round(time.monotonic() - started, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "gateway_alive_at_end": alive,
        "tracebacks_in_gateway_output": output.count("Traceback"),
        "teacher_key_in_gateway_output": TEACHER_KEY in output,
        "faults": rows,
    }
    print(
        f"\n{len(rows)} faults in {result['elapsed_s']} s; gateway alive: {alive}; "
        f"tracebacks in its output: {result['tracebacks_in_gateway_output']}; "
        f"load average at the end: {result['load_average_1m_at_end']}"
    )
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    broken = [
        r["fault"]
        for r in rows
        if r["unshaped_failures"] or r["rows_logged"] != r["answered"] or r["health_failures"]
    ]
    if broken:
        print(f"broken: {', '.join(broken)}")
    return 0 if alive and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
