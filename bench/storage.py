"""The gateway on PostgreSQL against SQLite, and two replicas against one, in the same run.

    python bench/storage.py [--duration 4] [--concurrency 1,8,32] [--postgres-url URL]

Starts the minimal upstream and a throwaway PostgreSQL cluster (``tests/postgres_server.py``;
or uses ``--postgres-url``), then measures non-streaming chat completions directly, through
one gateway on SQLite, one on PostgreSQL, and two gateways on one PostgreSQL database (the load
split evenly, as behind a balancer), each alone; then the cost of the limits shared in the
database: rate limits leased per request or per 0.1 s / 0.5 s, and a monthly budget checked
and held (against the same gateway with a key and no budget, on either engine, and with two
gateways on one PostgreSQL database sharing the key's budget).
After each gateway's cells it stops the gateways (SIGTERM) and counts the rows logged against
the requests acknowledged. Prints a table and writes JSON under ``bench/results/``.
``--target NAME`` (repeatable) runs only the targets named (and ``direct``: the deltas need it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _load import Sample, run_load
from overhead import BODY, free_port, pct, start_upstream, wait_http

from tests.postgres_server import PostgresServer
from understudy.storage.database import open_database

ROOT = Path(__file__).resolve().parent.parent


def start_gateway(
    upstream: str, data_dir: Path, storage_url: str, extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    env.update(
        {
            "UNDERSTUDY_TEACHER_API_KEY": "sk-bench",
            "UNDERSTUDY_LOG_LEVEL": "warning",
            "UNDERSTUDY_STUDENT_BACKEND": "none",
            "UNDERSTUDY_STORAGE_URL": storage_url,
            **(extra or {}),
        }
    )
    cmd = [sys.executable, "-m", "understudy.cli", "serve", "--teacher-url", upstream]
    cmd += ["--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, f"http://127.0.0.1:{port}/v1"


async def split_load(urls: list[str], concurrency: int, duration: float) -> tuple[Sample, float]:
    """``concurrency`` connections spread evenly over ``urls``, one closed loop each."""
    shares = [concurrency // len(urls) + (i < concurrency % len(urls)) for i in range(len(urls))]
    runs = [
        run_load(url, BODY, share, duration=duration, keep_ids=True)
        for url, share in zip(urls, shares, strict=True)
        if share
    ]
    results = await asyncio.gather(*runs)
    merged = Sample()
    for sample, _ in results:
        merged.latency += sample.latency
        merged.ttfb += sample.ttfb
        merged.errors += sample.errors
        merged.ok_ids += sample.ok_ids
    return merged, max(wall for _, wall in results)


def logged_ids(address: str | Path) -> set[str]:
    db = open_database(address, migrate_schema=False)
    try:
        return {r[0] for r in db.execute("select id from requests").fetchall()}
    finally:
        db.conn.close()


def measure_target(
    name: str, urls: list[str], levels: list[int], duration: float
) -> tuple[list[dict], set[str]]:
    rows, acked = [], set()
    for conc in levels:
        sample, wall = asyncio.run(split_load(urls, conc, duration))
        acked |= set(sample.ok_ids)
        rows.append(
            {
                "target": name,
                "concurrency": conc,
                "requests": len(sample.latency),
                "errors": sample.errors,
                "rps": len(sample.latency) / wall,
                "p50_ms": pct(sample.latency, 0.5),
                "p99_ms": pct(sample.latency, 0.99),
            }
        )
    return rows, acked


def run_gateways(
    name: str,
    upstream: str,
    addresses: list[str],
    work: Path,
    levels: list[int],
    duration: float,
    extra: dict[str, str] | None = None,
) -> tuple[list[dict], dict]:
    procs = []
    try:
        for i, address in enumerate(addresses):
            procs.append(start_gateway(upstream, work / f"{name}-{i}", address, extra))
        rows, acked = measure_target(name, [url for _, url in procs], levels, duration)
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            proc.wait(60)
    first = addresses[0]
    logged = logged_ids(first.removeprefix("sqlite:///") if first.startswith("sqlite") else first)
    durability = {"target": name, "acknowledged": len(acked), "lost": len(acked - logged)}
    return rows, durability


def add_deltas(rows: list[dict]) -> None:
    direct = {r["concurrency"]: r for r in rows if r["target"] == "direct"}
    for r in rows:
        base = direct[r["concurrency"]]
        r["added_p50_ms"] = r["p50_ms"] - base["p50_ms"]
        r["added_p99_ms"] = r["p99_ms"] - base["p99_ms"]


def print_table(rows: list[dict], durability: list[dict]) -> None:
    print("| conc. | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["concurrency"], ORDER.index(r["target"]))):
        added = (
            ("-", "-")
            if r["target"] == "direct"
            else (f"{r['added_p50_ms']:.2f}", f"{r['added_p99_ms']:.2f}")
        )
        print(
            f"| {r['concurrency']} | {r['target']} | {r['rps']:.0f} | {r['p50_ms']:.2f} |"
            f" {r['p99_ms']:.2f} | {added[0]} | {added[1]} | {r['errors']} |"
        )
    print()
    for d in durability:
        print(f"{d['target']}: {d['acknowledged']} acknowledged, {d['lost']} lost after SIGTERM")


SHARED_LIMIT = {  # one client (the load's address), a limit far above the load
    "UNDERSTUDY_LIMITS_REQUESTS_PER_MINUTE": "6000000",
    "UNDERSTUDY_LIMITS_BURST": "100000",
}
LIMITED = {
    "postgresql, shared limit, a lease per request": {
        **SHARED_LIMIT,
        "UNDERSTUDY_LIMITS_RATE_LEASE_S": "0.000001",
    },
    "postgresql, shared limit, 0.1 s leases": {
        **SHARED_LIMIT,
        "UNDERSTUDY_LIMITS_RATE_LEASE_S": "0.1",
    },
    "postgresql, shared limit, 0.5 s leases": {
        **SHARED_LIMIT,
        "UNDERSTUDY_LIMITS_RATE_LEASE_S": "0.5",
    },
}
KEYED = {"UNDERSTUDY_API_KEYS": "sk-bench-0123456789abcdef0123456789abcdef"}  # the load's
BUDGET = {**KEYED, "UNDERSTUDY_LIMITS_MONTHLY_TOKENS": str(10**12)}  # never reached
BUDGETED = {  # name: (engine, settings)
    "sqlite, gateway key": ("sqlite", KEYED),
    "sqlite, monthly budget": ("sqlite", BUDGET),
    "postgresql, gateway key": ("postgresql", KEYED),
    "postgresql, monthly budget": ("postgresql", BUDGET),
    "postgresql x2, monthly budget": ("postgresql x2", BUDGET),
}
ORDER = ["direct", "sqlite", "postgresql", "postgresql x2", *LIMITED, *BUDGETED]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per cell")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--postgres-url", help="a server to use (default: a throwaway cluster)")
    parser.add_argument(
        "--target", action="append", default=[], help="a target to run (repeatable; all)"
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    chosen = set(args.target) or set(ORDER)
    unknown = chosen - set(ORDER)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))} (known: {', '.join(ORDER)})")
    server = PostgresServer()
    if args.postgres_url:
        server.url = args.postgres_url
    server.start()
    upstream_proc, upstream = start_upstream()
    rows: list[dict] = []
    durability: list[dict] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            direct, _ = measure_target("direct", [upstream], levels, args.duration)
            rows += direct
            targets: list[tuple[str, list[str], dict[str, str] | None]] = [
                ("sqlite", [f"sqlite:///{work / 'bench.db'}"], None),
                ("postgresql", [server.fresh_database()], None),
            ]
            shared = server.fresh_database()
            targets.append(("postgresql x2", [shared, shared], None))
            targets += [(n, [server.fresh_database()], extra) for n, extra in LIMITED.items()]
            for n, (engine, extra) in BUDGETED.items():
                slug = n.replace(", ", "-").replace(" ", "-")
                where = f"sqlite:///{work / slug}.db" if engine == "sqlite" else ""
                where = where or server.fresh_database()
                targets.append((n, [where, where] if engine.endswith("x2") else [where], extra))
            for name, addresses, extra in targets:
                if name not in chosen:
                    continue
                found, lost = run_gateways(
                    name, upstream, addresses, work, levels, args.duration, extra
                )
                rows += found
                durability.append(lost)
    finally:
        upstream_proc.terminate()
        upstream_proc.wait()
        server.stop()
    add_deltas(rows)
    print_table(rows, durability)
    out = ROOT / "bench" / "results" / f"storage-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    out.write_text(json.dumps({"machine": machine, "rows": rows, "durability": durability}))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
