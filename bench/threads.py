"""Training speed of the tiny student with torch's default threads and with ``train.threads``'s
choice, while a gateway serves.

    python bench/threads.py [--steps 120] [--concurrency 4] [--repeats 2]

A gateway (``understudy serve``, students off) in front of the bench's stand-in upstream serves
a closed loop of chat requests for the whole measurement. Meanwhile the tiny from-scratch
student trains on Banking77 training queries in a process of its own, as the distiller's
training job does: with torch's default threads (one per core), and with ``train.threads = 0``
(``auto_threads``: the cores available less one; OMP/MKL variables set for the process). The
settings alternate, ``--repeats`` times each. Prints a table (steps/s, the gateway's requests/s
meanwhile, the load average) and writes ``bench/results/threads.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overhead import BODY, start_gateway, start_upstream

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 16


def train_child(threads: int, steps: int, out: Path) -> None:
    """In the child: train ``steps`` batches of the tiny student, write steps/s to ``out``."""
    from bench._banking77 import label_names, messages, read_csv
    from understudy.distiller.config import TrainConfig
    from understudy.distiller.dataset import Example
    from understudy.distiller.train import train_candidate
    from understudy.student.threads import use_threads

    if threads > 0:
        use_threads(threads)  # as distiller/worker.py does
    import torch

    names = label_names()
    rows = read_csv("train.csv")[: steps * BATCH]
    examples = [
        Example(str(i), i, names[r["label"]], messages=messages(r["text"]))
        for i, r in enumerate(rows)
    ]
    config = TrainConfig(
        base_model="tiny",
        method="full",
        epochs=1,
        batch_size=BATCH,
        learning_rate=3e-3,
        completion_only_loss=False,
        device="cpu",
        logging_steps=1000,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_candidate(examples, config, Path(tmp))
    out.write_text(
        json.dumps(
            {
                "torch_threads": torch.get_num_threads(),
                "steps": result.steps,
                "seconds": result.seconds,
                "steps_per_s": round(result.steps / result.seconds, 2),
            }
        )
    )


def load_child(base_url: str, concurrency: int) -> None:
    """In the child: keep ``concurrency`` chat requests going until killed."""
    from _load import run_load

    asyncio.run(run_load(base_url, BODY, concurrency, duration=24 * 3600.0))


def measure(setting: str, threads: int, steps: int, db_path: Path, work: Path) -> dict[str, Any]:
    """One training run beside the serving gateway; the gateway's rate from its log."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads > 0:
        from understudy.student.threads import thread_environment

        env.update(thread_environment(threads))
    out = work / f"{setting}-{time.monotonic_ns()}.json"
    started = time.time()
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-train",
            str(threads),
            "--steps",
            str(steps),
            "--out",
            str(out),
        ],
        check=True,
        env=env,
    )
    ended = time.time()
    with sqlite3.connect(db_path) as db:
        (served,) = db.execute(
            "select count(*) from requests where created_at >= ? and created_at < ?",
            [started, ended],
        ).fetchone()
    return {
        "setting": setting,
        **json.loads(out.read_text()),
        "wall_s": round(ended - started, 1),
        "gateway_requests_per_s": round(served / (ended - started), 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="training steps (batches of 16)")
    parser.add_argument("--concurrency", type=int, default=4, help="gateway clients at once")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting")
    parser.add_argument("--output", default=str(RESULTS / "threads.json"), help="JSON results")
    parser.add_argument("--child-train", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-load", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_train is not None:
        train_child(args.child_train, args.steps, Path(args.out))
        return 0
    if args.child_load:
        load_child(args.child_load, args.concurrency)
        return 0

    from understudy.student.threads import auto_threads, available_cores

    chosen = auto_threads(0)
    procs: list[subprocess.Popen] = []
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            upstream_proc, upstream = start_upstream()
            procs.append(upstream_proc)
            gateway_proc, gateway = start_gateway(upstream, work / "data")
            procs.append(gateway_proc)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--child-load",
                        gateway,
                        "--concurrency",
                        str(args.concurrency),
                    ]
                )
            )
            time.sleep(3)  # the load is on before training starts
            db_path = work / "data" / "understudy.db"
            for _ in range(args.repeats):
                rows.append(measure("torch default", 0, args.steps, db_path, work))
                rows.append(
                    measure(f"train.threads = 0 ({chosen})", chosen, args.steps, db_path, work)
                )
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=30)
    result = {
        "cores_available": available_cores(),
        "cpu_count": os.cpu_count(),
        "auto_threads": chosen,
        "steps": args.steps,
        "batch_size": BATCH,
        "gateway_concurrency": args.concurrency,
        "runs": rows,
    }
    print_table(result)
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['cores_available']} cores available; tiny student, batch "
        f"{result['batch_size']}, {result['steps']} steps; gateway under "
        f"{result['gateway_concurrency']} concurrent clients"
    )
    header = ("threads", "torch threads", "steps/s", "wall s", "gateway req/s", "load avg 1m")
    print("  ".join(f"{h:>14}" for h in header))
    for r in result["runs"]:
        cells = (
            r["setting"],
            r["torch_threads"],
            r["steps_per_s"],
            r["wall_s"],
            r["gateway_requests_per_s"],
            r["load_average_1m"],
        )
        print("  ".join(f"{c!s:>14}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
