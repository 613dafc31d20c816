"""The log at production size: how reads, the gateway and retention behave on a big database.

    python bench/scale.py --rows 10000,1000000            # each N in turn, then the extras
    python bench/scale.py --rows 10000 --skip-workers      # one size only
    python bench/scale.py --rows 10000000 --skip-bytes --skip-workers --workdir /tmp/scale
    python bench/scale.py --rows 10000,10000000 --reuse --gateway-only --skip-bytes \
        --skip-workers --workdir /tmp/scale     # the gateway parts again, databases kept

For each N a fresh data directory is filled with N realistic logged requests through the
storage layer's own insert (the log writer's: bodies compressed, rollups added in the same
transaction), spread over the last 30 days (above a million, the newest day is written so and
copied in SQL to the 29 days before it, then the rollups are rebuilt by the migrations' own
backfill: 10M rows in minutes, not half an hour): chat (banking77 queries, a support conversation,
long summaries, JSON extraction), Responses API exchanges, pass-through embeddings; served by
the teacher, the student (with its attempt row) or as shadow checks; a few errors. Then, as an
operator would run them: ``understudy report --since 30d``, ``understudy tasks``, ``understudy
export`` of one task (wall time and peak RSS), ``understudy prune --dry-run``, the distiller's
dataset build of one task; a gateway on that database: ``GET /dashboard``; proxied requests
on it and on a gateway over an empty database, both running, in rounds whose requests go to
one and the other in turn (:func:`proxied_rounds`: the machine's load changes from second to
second); then retention deletes the oldest third of the rows in batches while another
connection keeps writing (how long its writes take). With ``--gateway-only`` (and ``--reuse``),
only the gateway parts, the databases kept, and with several sizes their dashboards side by
side (:func:`dashboards_side_by_side`).

Once: bytes per logged request before (bodies as text, the layout before
``0009_compact_bodies``) and after, on demo-shaped traffic and on long chat transcripts (the
whole file over N requests, and what it grows by per request over N more); and
``serve --workers 2`` against ``--workers 1`` under a closed-loop load (the load generator and
the stand-in teacher run on the same cores as the gateway: say so with the figures).

Prints a table; writes JSON (``--out``, default ``bench/results/scale.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._banking77 import SYSTEM  # noqa: E402
from bench._load import Sample, _read_response, build_request, run_load  # noqa: E402
from bench._proc import cpu_seconds  # noqa: E402
from bench._traffic import TASK, Traffic, demo_traffic, transcripts  # noqa: E402
from tests.gateway_process import free_port  # noqa: E402
from understudy.gateway.accounting.cost_book import CostBook  # noqa: E402
from understudy.gateway.config import CostConfig  # noqa: E402
from understudy.storage import rollups  # noqa: E402
from understudy.storage.bodies import BodyEncoder  # noqa: E402
from understudy.storage.database import open_database  # noqa: E402
from understudy.storage.names import NameCoder  # noqa: E402
from understudy.storage.request_log import _insert  # noqa: E402 - the writer's own insert
from understudy.storage.retention import prune  # noqa: E402

DAY = 86400.0
BATCH = 2000


# -- realistic rows ---------------------------------------------------------------------------


def write_rows(
    db: Any, rows: Iterator[tuple[str, dict[str, Any]]], compress: bool = True, size: int = BATCH
) -> int:
    """Insert ``rows`` as the log writer does: batches of ``size``, each one transaction with
    its rollups (and, with ``compress``, bodies compressed, the dictionary trained when due,
    names coded)."""
    encoder = BodyEncoder() if compress else None
    names = NameCoder() if compress else None
    batch: list[tuple[str, dict[str, Any]]] = []
    n = 0
    for item in rows:
        batch.append(item)
        if len(batch) >= size:
            n += _flush(db, batch, encoder, names)
    if batch:
        n += _flush(db, batch, encoder, names)
    return n


def _flush(
    db: Any,
    batch: list[tuple[str, dict[str, Any]]],
    encoder: BodyEncoder | None,
    names: NameCoder | None = None,
) -> int:
    _insert(db, batch, encoder, names)
    if encoder is not None:
        encoder.maybe_train(db)
    n = sum(table == "requests" for table, _ in batch)
    batch.clear()
    return n


REPLICATE_ABOVE = 1_000_000
"""Larger logs are filled by copying one day of rows written through the log writer."""
DAYS = 30


def fill(data_dir: Path, n: int) -> dict[str, Any]:
    """N requests over the last 30 days. Up to :data:`REPLICATE_ABOVE`: every row through the
    log writer's insert. Above: the newest day (N / 30 rows) through the writer, copied in SQL
    to each of the 29 days before it (:func:`replicate`: new ids, the same bodies, the day's
    rollups with them)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(data_dir / "understudy.db")
    started = time.perf_counter()
    now = time.time()
    timings: dict[str, float] = {}
    if n <= REPLICATE_ABOVE:
        written = write_rows(db, _requests(Traffic(), n, now - DAYS * DAY, DAYS * DAY))
    else:
        written = write_rows(db, _requests(Traffic(), -(-n // DAYS), now - DAY, DAY))
        timings["written_s"] = round(time.perf_counter() - started, 1)
        written += replicate(db, n - written)
        timings["copied_s"] = round(time.perf_counter() - started - timings["written_s"], 1)
    seconds = time.perf_counter() - started
    db.execute("pragma wal_checkpoint(truncate)")
    db.conn.close()
    size = (data_dir / "understudy.db").stat().st_size
    return {
        "rows": written,
        "fill_s": round(seconds, 1),
        "fill_rows_per_s": round(written / seconds),
        **timings,
        "db_mb": round(size / 1e6, 1),
        "db_bytes_per_request": round(size / max(written, 1)),
    }


def filled(data_dir: Path) -> dict[str, Any]:
    """What a database filled before holds (``--reuse``)."""
    path = data_dir / "understudy.db"
    conn = sqlite3.connect(path)
    (rows,) = conn.execute("select count(*) from requests").fetchone()
    conn.close()
    size = path.stat().st_size
    return {
        "rows": rows,
        "reused": True,
        "db_mb": round(size / 1e6, 1),
        "db_bytes_per_request": round(size / max(rows, 1)),
    }


def replicate(db: Any, more: int) -> int:
    """Copy the requests logged so far (one day, with their attempt rows and rollups) to the
    days before it, whole copies until ``more`` rows are added: copy ``k`` is ``k`` days older,
    its ids (and the ids its rows name) prefixed ``cKK_`` instead of ``req_``, its hourly and
    per-minute sums those of the day copied, shifted as its rows are (each copy one
    transaction). The daily, per-task, per-key and per-task latency sums are then filled from
    the hourly ones by the migrations' own functions."""
    conn = db.conn
    conn.execute("pragma cache_size = -2000000").fetchall()
    ((block, last),) = conn.execute("select count(*), max(rowid) from requests").fetchall()
    hourly = {
        "rollup_requests": rollups.REQUEST_KEYS,
        "rollup_latency": rollups.LATENCY_KEYS,
        "rollup_agreement": rollups.AGREEMENT_KEYS,
        "rollup_token_pairs": rollups.TOKEN_KEYS,
        rollups.MINUTES["rollup_requests"]: rollups.MINUTE_KEYS,
    }
    with conn:
        for table in hourly:  # the day's sums, before copies add to its first hour
            conn.execute(f"create temp table day_{table} as select * from {table}")
    copied, k = 0, 0
    while copied < more:
        k += 1
        with conn:
            _copy_rows(conn, f"c{k:02d}_", k * DAY, last)
            for table, keys in hourly.items():
                if table in rollups.MINUTES.values() and k * DAY > rollups.MINUTES_KEPT_S + DAY:
                    continue  # per-minute sums are kept for three days
                _copy_sums(conn, table, keys, k)
        conn.execute("pragma wal_checkpoint(truncate)").fetchall()  # the WAL stays one copy
        copied += block
    with conn:
        conn.execute(
            f"delete from {rollups.MINUTES['rollup_requests']} where hour < ?",
            [rollups.hour_of(time.time() - rollups.MINUTES_KEPT_S)],
        )
        narrow = (*rollups.TASKS.values(), *rollups.KEYS.values(), *rollups.TASK_LATENCY.values())
        for table in (*rollups.DAILY.values(), *narrow, rollups.HOURS):
            conn.execute(f"delete from {table}")
        rollups.fill_daily(conn)
        rollups.fill_tasks(conn)
        rollups.fill_keys(conn)
        rollups.fill_task_latency(conn)
        rollups.fill_hours(conn)
        for table in ("rollup_tasks_daily", rollups.HOURS):
            ((counted,),) = conn.execute(f"select sum(calls) from {table}").fetchall()
            assert counted == block + copied, (table, counted, block + copied)
        for table in hourly:
            conn.execute(f"drop table day_{table}")
    return copied


def _copy_rows(conn: Any, prefix: str, shift: float, last: int) -> None:
    """One copy of the requests up to rowid ``last`` and their attempt rows."""
    columns = [r[1] for r in conn.execute("pragma table_info(requests)")]
    shifted = {
        "id": "? || substr(id, 5)",
        "created_at": "created_at - ?",
        "response_id": "case when response_id is null then null"
        " else 'resp_' || ? || substr(response_id, 6) end",
        "route_reason": "case when route_reason like 'shadow of req_%'"
        " then 'shadow of ' || ? || substr(route_reason, 15) else route_reason end",
    }
    params = {"id": prefix, "created_at": shift, "response_id": prefix, "route_reason": prefix}
    conn.execute(
        f"insert into requests ({', '.join(columns)}) select"
        f" {', '.join(shifted.get(c, c) for c in columns)} from requests"
        " where rowid <= ? order by rowid",
        [*(params[c] for c in columns if c in shifted), last],
    )
    attempt_columns = [r[1] for r in conn.execute("pragma table_info(student_attempts)")][1:]
    attempt_shifted = {"request_id": "? || substr(request_id, 5)", "created_at": "created_at - ?"}
    conn.execute(
        f"insert into student_attempts ({', '.join(attempt_columns)}) select"
        f" {', '.join(attempt_shifted.get(c, c) for c in attempt_columns)}"
        " from student_attempts where substr(request_id, 1, 4) = 'req_'",
        [prefix, shift],
    )


def _copy_sums(conn: Any, table: str, keys: tuple[str, ...], k: int) -> None:
    """The day's sums of ``table`` added ``k`` days earlier."""
    columns = [r[1] for r in conn.execute(f"pragma table_info({table})")]
    shift = {"hour": f"hour - {24 * k}", "minute": f"minute - {1440 * k}"}
    shift |= {c: f"{c} - {k * DAY}" for c in ("first_at", "last_at")}
    updates = []
    for c in columns:
        if c in keys:
            continue
        if c in ("first_at", "last_at"):
            cmp = "<" if c == "first_at" else ">"
            new, old = f"excluded.{c}", f"{table}.{c}"
            updates.append(f"{c} = case when {new} {cmp} {old} then {new} else {old} end")
        else:
            updates.append(f"{c} = {table}.{c} + excluded.{c}")
    conn.execute(
        f"insert into {table} ({', '.join(columns)}) select"
        f" {', '.join(shift.get(c, c) for c in columns)} from day_{table} where true"
        f" on conflict ({', '.join(keys)}) do update set {', '.join(updates)}"
    )


def _requests(traffic: Traffic, n: int, start: float, span: float) -> Iterator[tuple[str, dict]]:
    """Rows until ``n`` requests are produced (attempt rows come with their requests)."""
    produced = 0
    for item in traffic.rows(n, start, span):
        produced += item[0] == "requests"
        yield item
        if produced >= n:
            return


# -- what an operator runs ---------------------------------------------------------------------


def run_cli(*args: str, data_dir: Path) -> dict[str, float]:
    """``understudy ARGS --data-dir D``: wall seconds and the process's peak RSS (MB)."""
    cmd = [sys.executable, "-m", "understudy.cli", *args, "--data-dir", str(data_dir)]
    return run_process(cmd)


def median_run(*args: str, data_dir: Path, times: int = 5) -> dict[str, float]:
    """:func:`run_cli` ``times`` times: the run of median wall time (one run on a shared
    machine can stall for a second)."""
    runs = sorted((run_cli(*args, data_dir=data_dir) for _ in range(times)), key=lambda r: r["s"])
    return runs[len(runs) // 2]


def run_process(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd``: wall seconds and its peak RSS in MB, measured by ``/usr/bin/time`` (a child
    forked from this big process would count this process's pages as its own)."""
    timer = shutil.which("time") or "/usr/bin/time"
    with tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        done = subprocess.run(
            [timer, "-f", "%M", "-o", rss.name, *cmd],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        seconds = time.perf_counter() - started
        peak_kb = rss.read().strip().splitlines()[-1]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.decode()[-2000:]}")
    return {"s": round(seconds, 3), "rss_mb": round(int(peak_kb) / 1024, 1)}


DATASET_BUILD = """
import sys
from understudy.distiller.config import DatasetConfig
from understudy.distiller.dataset import build_dataset
from understudy.storage.database import Store
with Store(sys.argv[1]).read() as db:
    data = build_dataset(db, sys.argv[2], DatasetConfig())
print(data.stats["log_rows"], len(data.train), len(data.eval))
"""


def offline(data_dir: Path, export_to: Path) -> dict[str, Any]:
    db = data_dir / "understudy.db"
    return {
        "report_30d": median_run("report", "--since", "30d", data_dir=data_dir),
        "tasks": median_run("tasks", data_dir=data_dir),
        "export_1_task": run_cli(
            "export", "--task", TASK, "--output", str(export_to), data_dir=data_dir
        ),
        "prune_dry_run": run_cli("prune", "--older-than", "20d", "--dry-run", data_dir=data_dir),
        "dataset_build": run_process([sys.executable, "-c", DATASET_BUILD, str(db), TASK]),
        "cost_book_refresh": cost_book_refresh(db),
    }


def cost_book_refresh(db: Path, times: int = 5) -> dict[str, Any]:
    """The gateway's cost book re-learning each task's token ratio, teacher answers' mean
    tokens and latest teacher model (at start and every ``cost.ratio_refresh_s``), in this
    process: median of ``times``."""
    book = CostBook(CostConfig())
    runs = []
    for _ in range(times):
        started = time.perf_counter()
        book.refresh(db)
        runs.append(time.perf_counter() - started)
    return {"s": round(statistics.median(runs), 4), "tasks": len(book.ratios)}


# -- the gateway on it ---------------------------------------------------------------------------


def start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_upstream.py"), "--port", str(port)]
    )
    wait_http(f"http://127.0.0.1:{port}/v1/models")
    return proc, f"http://127.0.0.1:{port}/v1"


def start_gateway(
    upstream: str, data_dir: Path, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    env.update(
        {
            "UNDERSTUDY_TEACHER_API_KEY": "sk-bench",
            "UNDERSTUDY_LOG_LEVEL": "warning",
            "UNDERSTUDY_STUDENT_BACKEND": "none",
            "UNDERSTUDY_ROUTER_SHADOW_RATE": "0",
        }
    )
    cmd = [sys.executable, "-m", "understudy.cli", "serve", "--teacher-url", upstream]
    cmd += ["--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    wait_http(f"http://127.0.0.1:{port}/health", timeout=300)
    return proc, f"http://127.0.0.1:{port}"


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


CHAT = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "I still have not received my new card"},
        ],
    }
).encode()


def online(upstream: str, data_dir: Path) -> dict[str, Any]:
    """``GET /dashboard`` (the default 7 days, median of 5 after one; then 30 days, median of
    5) on a gateway over ``data_dir``."""
    proc, url = start_gateway(upstream, data_dir)
    try:
        with httpx.Client(timeout=600) as client:
            started = time.perf_counter()
            first = client.get(url + "/dashboard")
            first_s = time.perf_counter() - started
            assert first.status_code == 200, first.text[:500]
            times = []
            for _ in range(5):
                started = time.perf_counter()
                assert client.get(url + "/dashboard").status_code == 200
                times.append(time.perf_counter() - started)
            month = []
            for _ in range(5):
                started = time.perf_counter()
                assert client.get(url + "/dashboard?window=30d").status_code == 200
                month.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.get(url + "/metrics")
            metrics_s = time.perf_counter() - started
    finally:
        stop(proc)
    return {
        "dashboard_first_s": round(first_s, 3),
        "dashboard_s": round(statistics.median(times), 3),
        "dashboard_30d_s": round(statistics.median(month), 3),
        "metrics_s": round(metrics_s, 3),
        "load_average": _load(),
    }


def proxied_rounds(
    upstream: str, empty: Path, data_dir: Path, rounds: int, requests: int
) -> dict[str, Any]:
    """Proxied chat requests on a gateway over an empty database and one over ``data_dir``,
    both running: ``rounds`` rounds of ``requests`` on each, after a warm-up of each. In a
    round, each of 4 connections to each gateway sends a request to one, then the other (which
    goes first alternates): the machine's load changes from second to second, so the two sides
    are sampled side by side, not one after the other. The result is the median of the rounds'
    full/empty ratios (and each side's median p50 and p95), the ratios of all the rounds'
    requests together, with each round's load average; and the CPU time each gateway process
    spent per request (``/proc``, its threads included), which the machine's load does not
    change as it changes the latency."""
    gateways = [start_gateway(upstream, empty), start_gateway(upstream, data_dir)]
    pooled: list[list[float]] = [[], []]
    try:
        for _, url in gateways:
            asyncio.run(run_load(url + "/v1", CHAT, 4, total=min(requests, 100)))
        cpu = [cpu_seconds(proc.pid) for proc, _ in gateways]
        per_round = []
        for _ in range(rounds):
            urls = [url + "/v1" for _, url in gateways]
            samples = asyncio.run(paired_load(urls, CHAT, 4, requests))
            got: dict[str, Any] = {}
            for side, lat in zip(("empty", "full"), samples, strict=True):
                pooled[side == "full"] += lat
                lat.sort()
                got[side] = {
                    "p50_ms": round(pct(lat, 50) * 1000, 2),
                    "p95_ms": round(pct(lat, 95) * 1000, 2),
                    "requests": len(lat),
                }
            got["p50_ratio"] = round(got["full"]["p50_ms"] / got["empty"]["p50_ms"], 3)
            got["p95_ratio"] = round(got["full"]["p95_ms"] / got["empty"]["p95_ms"], 3)
            got["load_average"] = _load()
            print(json.dumps(got), flush=True)
            per_round.append(got)
        cpu = [
            cpu_seconds(proc.pid) - before for (proc, _), before in zip(gateways, cpu, strict=True)
        ]
    finally:
        for proc, _ in gateways:
            stop(proc)
    for lat in pooled:
        lat.sort()
    all_ms = [{q: pct(lat, q) * 1000 for q in (50, 95)} for lat in pooled]
    n = len(pooled[0])
    return {
        "rounds": per_round,
        "requests_per_round": requests,
        **{
            f"{side}_{q}": round(statistics.median(r[side][q] for r in per_round), 2)
            for side in ("empty", "full")
            for q in ("p50_ms", "p95_ms")
        },
        "p50_ratio": round(statistics.median(r["p50_ratio"] for r in per_round), 3),
        "p95_ratio": round(statistics.median(r["p95_ratio"] for r in per_round), 3),
        "requests": sum(r[s]["requests"] for r in per_round for s in ("empty", "full")),
        "pooled_p50_ms": [round(x[50], 2) for x in all_ms],
        "pooled_p95_ms": [round(x[95], 2) for x in all_ms],
        "pooled_p50_ratio": round(all_ms[1][50] / all_ms[0][50], 3),
        "pooled_p95_ratio": round(all_ms[1][95] / all_ms[0][95], 3),
        "cpu_ms_per_request": [round(c * 1000 / max(n, 1), 3) for c in cpu],
        "cpu_ratio": round(cpu[1] / cpu[0], 3) if cpu[0] else None,
    }


async def paired_load(
    urls: list[str], body: bytes, concurrency: int, total: int
) -> list[list[float]]:
    """``concurrency`` workers, each with a keep-alive connection to every URL, sending one
    request at a time to each URL in turn (the first one alternating) until each URL has had
    ``total``: the latencies (s) of each URL's answers (status 200; any other raises)."""
    targets = [build_request(url, body) for url in urls]
    latencies: list[list[float]] = [[] for _ in urls]
    sent = 0

    async def worker() -> None:
        nonlocal sent
        streams = [await asyncio.open_connection(host, port) for host, port, _ in targets]
        try:
            while sent < total:
                sent += 1
                order = range(len(urls)) if sent % 2 else reversed(range(len(urls)))
                for i in order:
                    reader, writer = streams[i]
                    sample = Sample()
                    started = time.perf_counter()
                    writer.write(targets[i][2])
                    await _read_response(reader, started, sample, keep_ids=False)
                    if sample.errors:
                        raise RuntimeError(f"{urls[i]} answered an error")
                    latencies[i] += sample.latency
        finally:
            for _, writer in streams:
                writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def dashboards_side_by_side(
    upstream: str, data_dirs: dict[str, Path], times: int = 15
) -> dict[str, Any]:
    """``GET /dashboard?window=W`` (7 and 30 days) on a gateway over each database, all running,
    asked in turn ``times`` times (the order reversed every other time, after one each): the
    median of each, so that the sizes are compared under the same load of the machine."""
    gateways = {n: start_gateway(upstream, d) for n, d in data_dirs.items()}
    out: dict[str, Any] = {"load_average": []}
    try:
        with httpx.Client(timeout=600) as client:
            for window in ("7d", "30d"):
                path = f"/dashboard?window={window}"
                names = list(gateways)
                for n in names:
                    assert client.get(gateways[n][1] + path).status_code == 200
                took: dict[str, list[float]] = {n: [] for n in names}
                for i in range(times):
                    for n in names if i % 2 == 0 else names[::-1]:
                        started = time.perf_counter()
                        assert client.get(gateways[n][1] + path).status_code == 200
                        took[n].append(time.perf_counter() - started)
                for n in names:
                    out.setdefault(n, {})[window] = round(statistics.median(took[n]), 4)
                out["load_average"].append(_load())
    finally:
        for proc, _ in gateways.values():
            stop(proc)
    return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * q / 100))]


# -- retention ---------------------------------------------------------------------------------


def retention(data_dir: Path) -> dict[str, Any]:
    """Delete the oldest third (older than 20 days) in batches of 500, while another
    connection writes 20 rows every 20 ms: the writes' latency during the prune."""
    path = data_dir / "understudy.db"
    stop_writing = threading.Event()
    write_s: list[float] = []

    def writer() -> None:
        db = open_database(path, migrate_schema=False)
        traffic = Traffic(seed=99)
        while not stop_writing.is_set():
            rows = list(_requests(traffic, 20, time.time(), 1.0))
            started = time.perf_counter()
            _insert(db, rows, BodyEncoder())
            write_s.append(time.perf_counter() - started)
            time.sleep(0.02)
        db.conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)
    db = open_database(path, migrate_schema=False)
    started = time.perf_counter()
    deleted = prune(db, time.time() - 20 * DAY, batch_size=500, pause_s=0.01)
    seconds = time.perf_counter() - started
    db.conn.close()
    stop_writing.set()
    thread.join()
    writes = sorted(write_s)
    total = sum(deleted.values())
    return {
        "deleted": deleted,
        "prune_s": round(seconds, 1),
        "rows_per_s": round(total / seconds) if seconds else None,
        "writes_during": len(writes),
        "write_p50_ms": round(pct(writes, 50) * 1000, 1),
        "write_p99_ms": round(pct(writes, 99) * 1000, 1),
        "write_max_ms": round(writes[-1] * 1000, 1) if writes else None,
    }


# -- bytes per logged request -----------------------------------------------------------------


BYTES_TRAFFIC = {
    "demo": (lambda: demo_traffic(10000), 5000),
    "transcripts": (lambda: transcripts(600, 12), 3600),
}
"""Each traffic's rows and how many make the first measurement (the rest, as many again,
make the growth)."""


RATIOS = {
    "db_ratio": "db_bytes_per_request",
    "growth_ratio": "growth_per_request",
    "body_ratio": "body_bytes_per_request",
}


def bytes_per_request(workdir: Path) -> dict[str, Any]:
    """Bytes per logged request, before (bodies as text) and after (as the log writes them):
    the whole file over the first N requests, and what the file grows by per request over the
    next N (without what a database holds whatever its size: the schema, the empty tables, a
    64 KiB dictionary), each after ``vacuum``; and the bodies' own bytes."""
    out: dict[str, Any] = {}
    for name, (rows, half) in BYTES_TRAFFIC.items():
        sizes: dict[str, Any] = {}
        for layout, compress in (("before", False), ("after", True)):
            sizes[layout] = _layout_bytes(
                workdir / f"bytes-{name}-{layout}.db", rows(), half, compress
            )
        for ratio, key in RATIOS.items():
            sizes[ratio] = round(sizes["before"][key] / sizes["after"][key], 2)
        out[name] = sizes
    return out


def _layout_bytes(path: Path, rows: Iterator[Any], half: int, compress: bool) -> dict[str, Any]:
    db = open_database(path)
    rows = iter(rows)
    n = write_rows(db, islice(rows, half), compress=compress, size=500)  # the writer's commits
    body = db.execute(
        "select sum(length(request_json) + coalesce(length(response_json), 0)"
        " + coalesce(length(bodies), 0)) from requests"
    ).fetchone()[0]
    first = _vacuumed_size(db, path)
    trees = _tree_bytes(db)
    more = write_rows(db, rows, compress=compress, size=500)
    grown = _vacuumed_size(db, path) - first
    growth = {k: v - trees.get(k, 0) for k, v in _tree_bytes(db).items()}
    columns = _column_bytes(db, n + more)
    db.conn.close()
    return {
        "requests": n,
        "db_bytes_per_request": round(first / n),
        "growth_per_request": round(grown / more),
        "body_bytes_per_request": round(body / n),
        "growth_by_tree": {k: round(v / more, 1) for k, v in growth.items() if v / more >= 0.5},
        "requests_columns": columns,
    }


def _tree_bytes(db: Any) -> dict[str, int]:
    """Bytes of each table and index (SQLite's ``dbstat``: pages, with their free space)."""
    rows = db.execute("select name, sum(pgsize) from dbstat group by name").fetchall()
    return {name: size for name, size in rows}


def _column_bytes(db: Any, n: int) -> dict[str, float]:
    """Bytes per request of each column's values in ``requests`` rows (as SQLite's record
    format stores them: text and blobs their length, reals 8, integers 0 to 8 by size), not
    counting the record header (a byte a column) and the cell and page overhead."""
    integer = (
        "case when {c} between 0 and 1 then 0 when {c} between -128 and 127 then 1"
        " when {c} between -32768 and 32767 then 2 when {c} between -8388608 and 8388607 then 3"
        " when {c} between -2147483648 and 2147483647 then 4"
        " when {c} between -140737488355328 and 140737488355327 then 6 else 8 end"
    )
    real = f"case when {{c}} = cast({{c}} as integer) then ({integer}) else 8 end"
    sizes = []
    columns = [r[1] for r in db.execute("pragma table_info(requests)")]
    for c in columns:
        size = (
            f"case typeof({c}) when 'text' then length(cast({c} as blob))"
            f" when 'blob' then length({c}) when 'integer' then ({integer.format(c=c)})"
            f" when 'real' then ({real.format(c=c)}) else 0 end"
        )
        sizes.append(f"sum({size})")
    (totals,) = db.execute(f"select {', '.join(sizes)} from requests").fetchall()
    return {c: round(t / n, 1) for c, t in zip(columns, totals, strict=True) if t}


def _vacuumed_size(db: Any, path: Path) -> int:
    db.execute("vacuum")
    db.execute("pragma wal_checkpoint(truncate)")
    return path.stat().st_size


# -- workers -------------------------------------------------------------------------------------


def workers_throughput(upstream: str, workdir: Path, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workers in (1, 2):
        data_dir = workdir / f"workers-{workers}"
        proc, url = start_gateway(upstream, data_dir, workers=workers)
        try:
            asyncio.run(run_load(url + "/v1", CHAT, 32, duration=2.0))  # warm both workers
            sample, wall = asyncio.run(run_load(url + "/v1", CHAT, 32, duration=seconds))
        finally:
            stop(proc)
        logged = (
            sqlite3.connect(data_dir / "understudy.db")
            .execute("select count(*) from requests")
            .fetchone()[0]
        )
        lat = sorted(sample.latency)
        out[str(workers)] = {
            "per_s": round(len(lat) / wall, 1),
            "p50_ms": round(pct(lat, 50) * 1000, 1),
            "p95_ms": round(pct(lat, 95) * 1000, 1),
            "errors": sample.errors,
            "logged": logged,
        }
    out["ratio"] = round(out["2"]["per_s"] / out["1"]["per_s"], 2)
    return out


# -- the run -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cli_startup_s": run_process([sys.executable, "-m", "understudy.cli", "--version"])["s"],
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "cores": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", default="10000,1000000", help="sizes, comma-separated (default 10000,1000000)"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=200,
        help="proxied requests per round on each database (default 200)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of proxied requests (default 5)"
    )
    parser.add_argument(
        "--gateway-only",
        action="store_true",
        help="only the dashboard and the proxied rounds; keep the database (with --reuse)",
    )
    parser.add_argument(
        "--workers-seconds", type=float, default=15.0, help="load per worker count (default 15)"
    )
    parser.add_argument(
        "--skip-workers", action="store_true", help="leave out the workers comparison"
    )
    parser.add_argument("--skip-bytes", action="store_true", help="leave out bytes per request")
    parser.add_argument(
        "--workdir", help="where databases go (default: a temporary directory, removed)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure a database already filled in --workdir (its nN folder) instead of filling",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "bench" / "results" / "scale.json"), help="JSON file"
    )
    args = parser.parse_args(argv)
    sizes = [int(float(x)) for x in args.rows.split(",") if x]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="understudy-scale-"))
    result: dict[str, Any] = {"sizes": {}, "machine": machine()}
    upstream_proc, upstream = start_upstream()
    try:
        if not args.skip_bytes:
            result["bytes"] = bytes_per_request(workdir)
            print(json.dumps(result["bytes"]), flush=True)
        empty = workdir / "empty"
        result["empty"] = online(upstream, empty)
        for n in sizes:
            data_dir = workdir / f"n{n}"
            reused = args.reuse and (data_dir / "understudy.db").exists()
            entry: dict[str, Any] = {"fill": filled(data_dir) if reused else fill(data_dir, n)}
            print(n, json.dumps(entry["fill"]), flush=True)
            if not args.gateway_only:
                entry["offline"] = offline(data_dir, workdir / "export.jsonl")
            entry["online"] = online(upstream, data_dir)
            entry["proxied"] = proxied_rounds(upstream, empty, data_dir, args.rounds, args.requests)
            if not args.gateway_only:
                entry["retention"] = retention(data_dir)
            result["sizes"][str(n)] = entry
            print(n, json.dumps(entry), flush=True)
            _write(args.out, result)
            if not args.gateway_only:
                shutil.rmtree(data_dir, ignore_errors=True)
        if args.gateway_only and len(sizes) > 1:
            dirs = {str(n): workdir / f"n{n}" for n in sizes}
            result["dashboards"] = dashboards_side_by_side(upstream, dirs)
            print(json.dumps(result["dashboards"]), flush=True)
        if not args.skip_workers:
            result["workers"] = workers_throughput(upstream, workdir, args.workers_seconds)
    finally:
        stop(upstream_proc)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = machine()
    _write(args.out, result)
    print_table(result)
    return 0


def _write(path: str, result: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


def print_table(result: dict[str, Any]) -> None:
    """The results as Markdown tables (as in BENCHMARKS.md)."""
    head = (
        *("rows", "DB MB", "bytes/req", "report 30d", "dashboard 7d / 30d", "tasks"),
        "cost book refresh",
        "export 1 task",
        *("prune --dry-run", "dataset build", "proxied p50 / p95", "prune", "writes during prune"),
    )
    empty = result["empty"]
    lines = [head, ("0", "0", "-", "-", _dashboard(empty), *("-",) * 8)]
    for n, e in result["sizes"].items():
        if "offline" not in e:
            continue
        off, on, ret, px = e["offline"], e["online"], e["retention"], e["proxied"]
        lines.append(
            (
                f"{int(n):,}",
                f"{e['fill']['db_mb']:,}",
                str(e["fill"]["db_bytes_per_request"]),
                f"{off['report_30d']['s']:.2f} s",
                _dashboard(on),
                f"{off['tasks']['s']:.2f} s",
                f"{off['cost_book_refresh']['s']:.3f} s",
                f"{off['export_1_task']['s']:.1f} s, {off['export_1_task']['rss_mb']:.0f} MB",
                f"{off['prune_dry_run']['s']:.2f} s",
                f"{off['dataset_build']['s']:.1f} s, {off['dataset_build']['rss_mb']:.0f} MB",
                f"{px['full_p50_ms']} / {px['full_p95_ms']} ms"
                f" (empty {px['empty_p50_ms']} / {px['empty_p95_ms']} ms)",
                f"{sum(ret['deleted'].values()):,} rows, {ret['rows_per_s']:,}/s",
                f"p50 {ret['write_p50_ms']}, p99 {ret['write_p99_ms']},"
                f" max {ret['write_max_ms']} ms",
            )
        )
    _markdown(lines)
    rows = [("rows", "dashboard 7d / 30d", "proxied p50 / p95: empty, full, ratio", "load")]
    for n, e in result["sizes"].items():
        px = e["proxied"]
        loads = [r["load_average"][0] for r in px["rounds"]]
        rows.append(
            (
                f"{int(n):,}",
                _dashboard(e["online"]),
                f"{px['empty_p50_ms']} / {px['empty_p95_ms']} ms,"
                f" {px['full_p50_ms']} / {px['full_p95_ms']} ms,"
                f" {px['p50_ratio']} / {px['p95_ratio']} (median of {len(px['rounds'])} rounds;"
                f" all requests {px['pooled_p50_ratio']} / {px['pooled_p95_ratio']});"
                f" CPU {px['cpu_ms_per_request'][0]} / {px['cpu_ms_per_request'][1]} ms"
                f" a request ({px['cpu_ratio']})",
                f"{min(loads)}-{max(loads)}",
            )
        )
    _markdown(rows)
    if "dashboards" in result:
        side = result["dashboards"]
        rows = [("rows, side by side", "dashboard 7d", "dashboard 30d")]
        for n in result["sizes"]:
            rows.append((f"{int(n):,}", f"{side[n]['7d']:.3f} s", f"{side[n]['30d']:.3f} s"))
        _markdown(rows)
        print(f"load average: {side['load_average']}")
    if "bytes" in result:
        rows = [
            ("traffic", "file before", "file after", "smaller", "growth before", "growth after")
            + ("smaller", "bodies before", "bodies after")
        ]
        for name, b in result["bytes"].items():
            before, after = b["before"], b["after"]
            rows.append(
                (name, str(before["db_bytes_per_request"]), str(after["db_bytes_per_request"]))
                + (f"{b['db_ratio']}x", str(before["growth_per_request"]))
                + (str(after["growth_per_request"]), f"{b['growth_ratio']}x")
                + (str(before["body_bytes_per_request"]), str(after["body_bytes_per_request"]))
            )
        _markdown(rows)
        _where_bytes_go(result["bytes"])
    if "workers" in result:
        w = result["workers"]
        rows = [("workers", "req/s", "p50 ms", "p95 ms", "errors", "logged")]
        for k in ("1", "2"):
            rows.append(
                (k, *(str(w[k][c]) for c in ("per_s", "p50_ms", "p95_ms", "errors", "logged")))
            )
        _markdown(rows)
        print(f"two workers: {w['ratio']}x one worker's throughput")
    print(f"machine: {json.dumps(result['machine'])}")


def _where_bytes_go(measured: dict[str, Any]) -> None:
    """Per traffic and layout: what each table and index grows by per request, and the bytes
    per request of each column's values in ``requests``."""
    for what, key in (
        ("table or index (growth)", "growth_by_tree"),
        ("column", "requests_columns"),
    ):
        layouts = [(t, layout) for t in measured for layout in ("before", "after")]
        parts = sorted({p for t, layout in layouts for p in measured[t][layout][key]})
        rows = [(what, *(f"{t} {layout}" for t, layout in layouts))]
        for part in parts:
            rows.append(
                (part, *(str(measured[t][layout][key].get(part, "-")) for t, layout in layouts))
            )
        _markdown(rows)


def _dashboard(online: dict[str, Any]) -> str:
    month = online.get("dashboard_30d_s")
    return f"{online['dashboard_s']:.3f}" + (f" / {month:.3f} s" if month is not None else " s")


def _markdown(rows: list[tuple[str, ...]]) -> None:
    print()
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
