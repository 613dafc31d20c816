"""Gateway overhead: latency added by Understudy (logging on) over calling the upstream directly.

    python bench/overhead.py [--quick] [--litellm] [--other NAME=URL] [--durability 10000]

Starts a minimal upstream and the gateway as separate processes, then measures non-streaming
and streaming chat completions, the same for the Responses API, and embeddings (which the
gateway passes through, metered), at concurrency 1, 8 and 64 directly and through the gateway
(and through any other gateway given), prints a table and writes JSON. The durability check
sends N requests through the gateway, sends SIGTERM, and counts the rows logged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import run_load

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps(
    {
        "model": "bench",
        "messages": [
            {"role": "system", "content": "Classify the banking intent."},
            {"role": "user", "content": "My card has not arrived yet, where is it?"},
        ],
    }
).encode()
BENCH_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True}).encode()
EMBEDDINGS_BODY = json.dumps(
    {"model": "text-embedding-3-small", "input": "My card has not arrived yet, where is it?"}
).encode()
RESPONSES_BODY = json.dumps(
    {
        "model": "bench",
        "instructions": "Classify the banking intent.",
        "input": "My card has not arrived yet, where is it?",
    }
).encode()
RESPONSES_STREAM_BODY = json.dumps({**json.loads(RESPONSES_BODY), "stream": True}).encode()
# (mode, body, endpoint) of each row.
MODES = [
    ("non-stream", BODY, "/chat/completions"),
    ("stream", STREAM_BODY, "/chat/completions"),
    ("responses", RESPONSES_BODY, "/responses"),
    ("responses-stream", RESPONSES_STREAM_BODY, "/responses"),
    ("embeddings", EMBEDDINGS_BODY, "/embeddings"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def start_upstream() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_upstream.py"), "--port", str(port)]
    )
    wait_http(f"http://127.0.0.1:{port}/v1/models")
    return proc, f"http://127.0.0.1:{port}/v1"


def start_gateway(upstream: str, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    env.update(
        {
            "UNDERSTUDY_TEACHER_API_KEY": "sk-bench",
            "UNDERSTUDY_LOG_LEVEL": "warning",
            "UNDERSTUDY_STUDENT_BACKEND": "none",
        }
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "understudy.cli",
            "serve",
            "--teacher-url",
            upstream,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        env=env,
    )
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, f"http://127.0.0.1:{port}/v1"


def start_litellm(binary: str, upstream: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n"
        f"      model: openai/bench-teacher\n      api_base: {upstream}\n"
        "      api_key: sk-bench\n"
        "  - model_name: text-embedding-3-small\n    litellm_params:\n"
        f"      model: openai/text-embedding-3-small\n      api_base: {upstream}\n"
        "      api_key: sk-bench\nlitellm_settings:\n  telemetry: false\n"
        f"general_settings:\n  master_key: {BENCH_KEY}\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    log = (workdir / "litellm.log").open("wb")
    proc = subprocess.Popen(
        [binary, "--config", str(config), "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
    return proc, f"http://127.0.0.1:{port}/v1"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def measure(targets: dict[str, str], duration: float, rows: list[dict]) -> None:
    """Measure every cell for ``targets`` (run one gateway at a time: they share 2 cores)."""
    for name, url in targets.items():
        for mode, body, endpoint in MODES:
            for conc in (1, 8, 64):
                sample, wall = asyncio.run(
                    run_load(url, body, conc, duration=duration, endpoint=endpoint)
                )
                rows.append(
                    {
                        "mode": mode,
                        "concurrency": conc,
                        "target": name,
                        "requests": len(sample.latency),
                        "errors": sample.errors,
                        "rps": len(sample.latency) / wall,
                        "p50_ms": pct(sample.latency, 0.5),
                        "p99_ms": pct(sample.latency, 0.99),
                        "ttfb_p50_ms": pct(sample.ttfb, 0.5),
                        "ttfb_p99_ms": pct(sample.ttfb, 0.99),
                    }
                )


def add_deltas(rows: list[dict]) -> None:
    direct = {(r["mode"], r["concurrency"]): r for r in rows if r["target"] == "direct"}
    for r in rows:
        base = direct[(r["mode"], r["concurrency"])]
        r["added_p50_ms"] = r["p50_ms"] - base["p50_ms"]
        r["added_p99_ms"] = r["p99_ms"] - base["p99_ms"]
        r["added_ttfb_p50_ms"] = r["ttfb_p50_ms"] - base["ttfb_p50_ms"]


def durability(upstream: str, total: int, workdir: Path) -> dict:
    data = workdir / "durability"
    proc, url = start_gateway(upstream, data)
    sample, wall = asyncio.run(run_load(url, BODY, 64, total=total, keep_ids=True))
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    conn = sqlite3.connect(data / "understudy.db")
    logged = {r[0] for r in conn.execute("select id from requests")}
    conn.close()
    acked = set(sample.ok_ids)
    return {
        "sent": total,
        "acknowledged": len(acked),
        "logged": len(logged),
        "lost": len(acked - logged),
        "errors": sample.errors,
        "rps": total / wall,
    }


def print_table(rows: list[dict]) -> None:
    cols = [
        "mode",
        "concurrency",
        "target",
        "rps",
        "p50_ms",
        "p99_ms",
        "added_p50_ms",
        "added_p99_ms",
        "ttfb_p50_ms",
        "added_ttfb_p50_ms",
        "errors",
    ]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols))


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per cell instead of 5 s")
    parser.add_argument("--duration", type=float, help="seconds per cell")
    parser.add_argument(
        "--other",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="another gateway's base URL (incl. /v1) pointed at the upstream",
    )
    parser.add_argument("--litellm", action="store_true", help="start and measure LiteLLM")
    parser.add_argument(
        "--litellm-bin", default=shutil.which("litellm") or "/tmp/litellm-venv/bin/litellm"
    )
    parser.add_argument(
        "--durability",
        type=int,
        default=10000,
        help="requests for the SIGTERM durability check (0: skip)",
    )
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "overhead.json"))
    args = parser.parse_args()
    duration = args.duration or (2.0 if args.quick else 5.0)
    workdir = Path(tempfile.mkdtemp(prefix="understudy-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        upstream_proc, upstream = start_upstream()
        procs.append(upstream_proc)
        gateway_proc, gateway = start_gateway(upstream, workdir / "data")
        procs.append(gateway_proc)
        rows: list[dict] = []
        targets = {"direct": upstream, "understudy": gateway}
        for spec in args.other:
            name, _, url = spec.partition("=")
            targets[name] = url
        measure(targets, duration, rows)
        gateway_proc.send_signal(signal.SIGTERM)
        gateway_proc.wait(30)
        if args.litellm:
            if not Path(args.litellm_bin).exists():
                print(
                    "litellm not found: python3 -m venv /tmp/litellm-venv && "
                    "/tmp/litellm-venv/bin/pip install 'litellm[proxy]'",
                    file=sys.stderr,
                )
            else:
                litellm_proc, litellm = start_litellm(args.litellm_bin, upstream, workdir)
                procs.append(litellm_proc)
                measure({"litellm": litellm}, duration, rows)
                litellm_proc.terminate()
                litellm_proc.wait(30)
        add_deltas(rows)
        order = [mode for mode, _, _ in MODES]
        rows.sort(key=lambda r: (order.index(r["mode"]), r["concurrency"]))
        print_table(rows)
        result = {"machine": machine(), "duration_s": duration, "rows": rows}
        if args.durability:
            result["durability"] = durability(upstream, args.durability, workdir)
            print("durability:", json.dumps(result["durability"]))
        c64 = {
            r["target"]: r["rps"]
            for r in rows
            if r["concurrency"] == 64 and r["mode"] == "non-stream"
        }
        if "litellm" in c64:
            result["throughput_ratio_vs_litellm_c64"] = c64["understudy"] / c64["litellm"]
            print(
                f"throughput at c=64, understudy / litellm: "
                f"{result['throughput_ratio_vs_litellm_c64']:.2f}x"
            )
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
