"""Gateway start-up: time and CPU to ``/health``, and resident memory before and after traffic.

    python bench/startup.py [--runs 5] [--backend none]

Starts the minimal upstream once, then the gateway ``--runs`` times, each on a fresh data
directory (SQLite), and measures each: wall seconds from the process start to ``/health``
answering, CPU seconds the process used by then, its resident memory then, and again after 100
chat completions whose rows the log has written. Prints a table (medians and ranges) and
writes JSON. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_seconds, rss_mb
from overhead import BODY, free_port, start_upstream, wait_http

ROOT = Path(__file__).resolve().parent.parent


def logged_rows(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "understudy.db")
    try:
        return conn.execute("select count(*) from requests").fetchone()[0]
    finally:
        conn.close()


def one_start(upstream: str, backend: str, requests: int) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="understudy-startup-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    env.update(
        {
            "UNDERSTUDY_TEACHER_API_KEY": "sk-bench",
            "UNDERSTUDY_LOG_LEVEL": "warning",
            "UNDERSTUDY_STUDENT_BACKEND": backend,
        }
    )
    cmd = [sys.executable, "-m", "understudy.cli", "serve", "--teacher-url", upstream]
    cmd += ["--port", str(port), "--data-dir", str(data_dir)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        ready_s = time.monotonic() - started
        row = {
            "ready_s": ready_s,
            "cpu_s": cpu_seconds(proc.pid),
            "rss_ready_mb": rss_mb(proc.pid, missing=float("nan")),
        }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=10) as client:
            for _ in range(requests):
                r = client.post(
                    "/chat/completions",
                    content=BODY,
                    headers={"content-type": "application/json"},
                )
                r.raise_for_status()
        deadline = time.monotonic() + 10
        while logged_rows(data_dir) < requests and time.monotonic() < deadline:
            time.sleep(0.05)
        row["rss_traffic_mb"] = rss_mb(proc.pid, missing=float("nan"))
        return row
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default="none", help="student.backend (none, local, vllm)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "startup.json"))
    args = parser.parse_args()

    upstream_proc, upstream = start_upstream()
    try:
        rows = [one_start(upstream, args.backend, args.requests) for _ in range(args.runs)]
    finally:
        upstream_proc.terminate()
    names = {
        "ready_s": "to /health, s",
        "cpu_s": "CPU by then, s",
        "rss_ready_mb": "resident at /health, MB",
        "rss_traffic_mb": f"resident after {args.requests} requests, MB",
    }
    print(f"gateway start-up, {args.runs} runs, student.backend = {args.backend}")
    print("| measure | median | min | max |\n|---|---|---|---|")
    summary = {}
    for key, name in names.items():
        values = [row[key] for row in rows]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        print(f"| {name} | {summary[key]['median']:.2f} | {min(values):.2f} | {max(values):.2f} |")
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "backend": args.backend,
                "requests": args.requests,
                "runs": rows,
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
