"""Soak: mixed traffic against a misbehaving teacher, then ``kill -9`` under load.

    python bench/soak.py [--duration 600] [--concurrency 64] [--no-student] [--kill-phase 15]

Starts the stand-in teacher (``tests/teacher_stub.py``) injecting 5% 500s, 2% timeouts and
1% cut answers, and the gateway as a separate process; when the local student backend is
installed, a tiny untrained student is promoted for one task (fixed threshold 0), so part of
the traffic goes through the student and the router. Then ``--duration`` seconds of chat
completions at ``--concurrency``, half streamed. Reports: the gateway still alive, its RSS at
start and end, every reply answered or failed in OpenAI's shape, every answered request
logged exactly once. Then a load phase ended by ``kill -9``, a restart, and a count of the
requests acknowledged more than the commit interval before the kill that are missing.
Prints a table and writes JSON (``bench/results/soak.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _proc import rss_mb  # noqa: E402
from _stub import start_stub_teacher  # noqa: E402

from tests.gateway_process import GatewayProcess  # noqa: E402

FAULTS = {"p500": 0.05, "ptimeout": 0.02, "pcut": 0.01, "seed": 7}
COMMIT_INTERVAL_MS = 50
STUDENT_TASK = "soak-student"
PROMPTS = ["What is 2+2?", "Name a colour.", "Tell me a story.", "Give me JSON."]


def start_teacher(workdir: Path) -> tuple[subprocess.Popen, str]:
    table = workdir / "table.json"
    table.write_text(json.dumps({"What is 2+2?": "4", "Name a colour.": "blue"}))
    options = ["--table", str(table), "--timeout-s", "3", "--control"]
    proc, url = start_stub_teacher(*options, json.dumps({"random": FAULTS}))
    return proc, url + "/v1"


def promote_tiny_student(data_dir: Path) -> bool:
    """A tiny untrained student for STUDENT_TASK; False when the local backend is missing."""
    try:
        from understudy.student.tiny import build_tiny_model
    except ImportError:
        return False
    from understudy.storage.database import open_database
    from understudy.storage.registry import promote, register_model

    path = build_tiny_model(data_dir / "models" / STUDENT_TASK / "v1", PROMPTS, hidden=64)
    teach_to_stop(path)
    db = open_database(data_dir / "understudy.db")
    version = register_model(db, STUDENT_TASK, base=str(path), model_path=str(path))
    promote(db, version.id)
    db.conn.close()
    return True


def teach_to_stop(path: Path, steps: int = 60) -> None:
    """A few seconds of training so the tiny student answers briefly and ends its turn (an
    untrained one runs to ``max_tokens`` and the router defers every answer as truncated)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}], tokenize=False
        )
        for p in PROMPTS
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(path)


def gateway_env(student: bool) -> dict[str, str]:
    env = {
        "UNDERSTUDY_TEACHER_API_KEY": "sk-soak-teacher",
        "UNDERSTUDY_TEACHER_TIMEOUT_S": "1",
        "UNDERSTUDY_TEACHER_BACKOFF_S": "0.05",
        "UNDERSTUDY_TEACHER_RETRY_BUDGET_S": "4",
        "UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS": str(COMMIT_INTERVAL_MS),
        "UNDERSTUDY_LOG_LEVEL": "warning",
        "UNDERSTUDY_STUDENT_BACKEND": "local" if student else "none",
    }
    if student:
        env |= {
            "UNDERSTUDY_ROUTER_THRESHOLD_MODE": "fixed",
            "UNDERSTUDY_ROUTER_FIXED_THRESHOLD": "0",
            "UNDERSTUDY_ROUTER_SHADOW_RATE": "0.05",
            # The student answers "ok" and the stand-in teacher does not, so live agreement is
            # ~0 and drift would send the task back to the teacher after 30 shadow comparisons
            # (as it should); a margin of 1 keeps the student in the mix for the whole soak.
            "UNDERSTUDY_ROUTER_DRIFT_MARGIN": "1",
            "UNDERSTUDY_STUDENT_DEVICE": "cpu",
            "UNDERSTUDY_STUDENT_MAX_TOKENS": "8",
        }
    return env


def openai_error(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and {"message", "type", "param", "code"} <= set(body["error"])
    )


async def one_request(client: httpx.AsyncClient, rng: random.Random, student: bool) -> dict:
    stream = rng.random() < 0.5
    body: dict[str, Any] = {
        "model": "soak",
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "stream": stream,
        "max_tokens": 8,
    }
    headers = {"x-understudy-task": STUDENT_TASK if student and rng.random() < 0.3 else "soak"}
    out: dict[str, Any] = {"stream": stream}
    try:
        if stream:
            async with client.stream("POST", "/chat/completions", json=body, headers=headers) as r:
                raw = await r.aread()
        else:
            r = await client.post("/chat/completions", json=body, headers=headers)
            raw = r.content
    except httpx.HTTPError as exc:
        return out | {"kind": "transport", "detail": type(exc).__name__}
    out |= {"status": r.status_code, "id": r.headers.get("x-request-id")}
    out["served_by"] = r.headers.get("x-understudy-served-by")
    if r.status_code != 200:
        try:
            ok = openai_error(json.loads(raw))
        except ValueError:
            ok = False
        return out | {"kind": "error" if ok else "malformed"}
    if not stream:
        try:
            ok = bool(json.loads(raw).get("choices"))
        except ValueError:
            ok = False
        return out | {"kind": "answered" if ok else "malformed"}
    events = [e[6:] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return out | {"kind": "malformed"}
    errors = [json.loads(e) for e in events[:-1] if '"error"' in e[:12]]
    if errors:
        return out | {"kind": "error" if all(openai_error(e) for e in errors) else "malformed"}
    return out | {"kind": "answered"}


async def run_traffic(
    base_url: str, duration: float, concurrency: int, student: bool, acks: list | None = None
) -> list[dict]:
    results: list[dict] = []
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                result = await one_request(client, rng, student)
                if acks is not None and result.get("kind") == "answered":
                    acks.append((time.monotonic(), result["id"]))
                results.append(result)
                if result.get("kind") == "transport" and acks is not None:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return results


def logged_counts(db_path: Path) -> Counter:
    conn = sqlite3.connect(db_path)
    try:
        return Counter(r[0] for r in conn.execute("select id from requests"))
    finally:
        conn.close()


def soak(args: argparse.Namespace, workdir: Path, teacher_url: str) -> dict:
    data = workdir / "soak" / "data"
    student = not args.no_student and promote_tiny_student(data)
    gw = GatewayProcess(teacher_url, data, env=gateway_env(student)).start(timeout=120)
    try:
        asyncio.run(run_traffic(gw.base_url, 3, 4, student))  # warm up
        rss_start = rss_mb(gw.proc.pid, missing=float("nan"))
        rss_peak = rss_start
        results: list[dict] = []
        started = time.monotonic()
        while time.monotonic() - started < args.duration:
            chunk = min(10.0, args.duration - (time.monotonic() - started))
            results += asyncio.run(run_traffic(gw.base_url, chunk, args.concurrency, student))
            rss_peak = max(rss_peak, rss_mb(gw.proc.pid, missing=float("nan")))
        elapsed = time.monotonic() - started
        alive = gw.proc.poll() is None
        rss_end = rss_mb(gw.proc.pid, missing=float("nan")) if alive else float("nan")
    finally:
        code = gw.stop()
    kinds = Counter(r["kind"] for r in results)
    answered = [r["id"] for r in results if r["kind"] == "answered"]
    logged = logged_counts(gw.db_path)
    output = gw.output()
    return {
        "duration_s": round(elapsed, 1),
        "concurrency": args.concurrency,
        "student_task": student,
        "requests": len(results),
        "requests_per_s": round(len(results) / elapsed, 1),
        "outcomes": dict(kinds),
        "statuses": dict(Counter(str(r.get("status", "-")) for r in results)),
        "served_by": dict(Counter(str(r.get("served_by")) for r in results)),
        "streamed_share": round(sum(r["stream"] for r in results) / max(1, len(results)), 3),
        "gateway_alive_at_end": alive,
        "gateway_exit_code_on_sigterm": code,
        "tracebacks_in_gateway_output": output.count("Traceback"),
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_mb_peak": round(rss_peak, 1),
        "answered": len(answered),
        "answered_logged_once": sum(1 for i in answered if logged[i] == 1),
        "answered_not_logged": sum(1 for i in answered if logged[i] == 0),
        "rows_logged": sum(logged.values()),
    }


def kill_phase(args: argparse.Namespace, workdir: Path, teacher_url: str) -> dict:
    data = workdir / "kill" / "data"
    gw = GatewayProcess(teacher_url, data, env=gateway_env(False)).start(timeout=120)
    acks: list[tuple[float, str]] = []

    async def load_then_kill() -> float:
        task = asyncio.create_task(
            run_traffic(gw.base_url, args.kill_phase + 5, args.concurrency, False, acks)
        )
        await asyncio.sleep(args.kill_phase)
        killed = time.monotonic()
        gw.proc.kill()
        await task
        return killed

    killed_at = asyncio.run(load_then_kill())
    gw.stop()
    conn = sqlite3.connect(gw.db_path)
    integrity = conn.execute("pragma integrity_check").fetchone()[0]
    conn.close()
    restarted = GatewayProcess(teacher_url, data, env=gateway_env(False)).start(timeout=120)
    ready = httpx.get(restarted.url + "/ready").json()["database"]["ok"]
    restarted.stop()
    logged = logged_counts(gw.db_path)
    horizon = killed_at - COMMIT_INTERVAL_MS / 1000
    older = [rid for at, rid in acks if at < horizon]
    recent = [rid for at, rid in acks if at >= horizon]
    return {
        "load_s_before_kill": args.kill_phase,
        "acknowledged": len(acks),
        "integrity_check": integrity,
        "restart_ready_db": ready,
        "acked_before_kill_minus_commit_interval": len(older),
        "of_those_missing": sum(1 for i in older if not logged[i]),
        "acked_within_last_commit_interval": len(recent),
        "of_those_missing_allowed": sum(1 for i in recent if not logged[i]),
    }


def print_table(result: dict) -> None:
    for section in ("soak", "kill9"):
        print(f"\n{section}")
        for key, value in result[section].items():
            print(f"  {key:<42} {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="soak seconds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--kill-phase", type=float, default=15.0, help="load seconds, then -9")
    parser.add_argument("--no-student", action="store_true", help="teacher-served traffic only")
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="understudy-soak-") as tmp:
        workdir = Path(tmp)
        teacher, teacher_url = start_teacher(workdir)
        try:
            result = {
                "faults": FAULTS,
                "soak": soak(args, workdir, teacher_url),
                "kill9": kill_phase(args, workdir, teacher_url),
                "cpu_count": os.cpu_count(),
            }
        finally:
            teacher.terminate()
            teacher.wait(10)
    print_table(result)
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    soak_ok = (
        result["soak"]["gateway_alive_at_end"]
        and result["soak"]["outcomes"].get("malformed", 0) == 0
        and result["soak"]["answered_not_logged"] == 0
    )
    kill_ok = (
        result["kill9"]["of_those_missing"] == 0 and result["kill9"]["integrity_check"] == "ok"
    )
    return 0 if soak_ok and kill_ok else 1


if __name__ == "__main__":
    sys.exit(main())
