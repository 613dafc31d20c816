"""The ``understudy demo`` command's arguments."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from understudy.demo.config import DemoOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoOptions()
    parser.add_argument(
        "--history",
        type=int,
        default=d.history,
        help=f"train-split queries sent first as logged history (default {d.history}, at most all)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=d.requests,
        help=f"test-split queries sent as live traffic (default {d.requests})",
    )
    parser.add_argument(
        "--intents",
        type=int,
        default=d.intents,
        help=f"keep the K most frequent intents, 77 for all (default {d.intents})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=d.warmup,
        help="live requests the teacher answers alone before the first distillation run, held "
        f"out to calibrate the router on its own answers (default {d.warmup}; 0: none)",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=d.every,
        help=f"then a distillation run every N teacher calls (default {d.every})",
    )
    parser.add_argument(
        "--first-every",
        type=int,
        default=d.first_every,
        help="until a student is promoted, a run every N teacher calls instead "
        f"(default {d.first_every}: --every throughout)",
    )
    parser.add_argument(
        "--shadow-rate",
        type=float,
        default=d.shadow_rate,
        help=f"share of student answers checked against the teacher (default {d.shadow_rate:g})",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        default=d.max_runs,
        help=f"most distillation runs (default {d.max_runs}; 0: no limit)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=d.data_dir,
        help=f"where the demo's database, students and logs go (default ./{d.data_dir})",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="gateway port (default 8000, or a free one)"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the gateway up after the summary, until Ctrl-C",
    )
    parser.add_argument(
        "--seed", type=int, default=d.seed, help=f"query order and training seed (default {d.seed})"
    )
    parser.add_argument(
        "--price-in",
        type=float,
        default=d.price_in,
        help=f"teacher USD per 1M input tokens (default {d.price_in:g}, GPT-4o)",
    )
    parser.add_argument(
        "--price-out",
        type=float,
        default=d.price_out,
        help=f"teacher USD per 1M output tokens (default {d.price_out:g}, GPT-4o)",
    )
    parser.add_argument(
        "--quality-target",
        type=float,
        default=d.quality_target,
        help=f"agreement the router keeps on student answers (default {d.quality_target:g})",
    )
    parser.add_argument(
        "--epochs",
        type=float,
        default=d.epochs,
        help=f"training epochs per distillation run (default {d.epochs:g})",
    )
    parser.add_argument(
        "--warm-start-epochs",
        type=float,
        default=d.warm_start_epochs,
        help="runs after a promotion continue from the champion for this many epochs "
        "(default 0: every run trains from scratch)",
    )


def main(args: argparse.Namespace) -> int:
    from understudy.demo.processes import DemoError
    from understudy.demo.run import run_demo

    options = DemoOptions(
        history=args.history,
        requests=args.requests,
        intents=args.intents,
        warmup=args.warmup,
        every=args.every,
        first_every=args.first_every,
        shadow_rate=args.shadow_rate,
        max_runs=args.max_runs,
        data_dir=args.data_dir,
        port=args.port,
        keep_running=args.keep_running,
        seed=args.seed,
        price_in=args.price_in,
        price_out=args.price_out,
        quality_target=args.quality_target,
        epochs=args.epochs,
        warm_start_epochs=args.warm_start_epochs,
    )
    sizes = (options.requests, options.history, options.warmup)
    if options.every < 1 or options.intents < 1 or min(*sizes, options.first_every) < 0:
        print(
            "understudy demo: --every and --intents must be >= 1, sizes and --first-every >= 0",
            file=sys.stderr,
        )
        return 2
    if options.epochs <= 0 or options.warm_start_epochs < 0:
        print("understudy demo: --epochs must be > 0, --warm-start-epochs >= 0", file=sys.stderr)
        return 2
    if not 0 <= options.shadow_rate <= 1:
        print("understudy demo: --shadow-rate must be in [0, 1]", file=sys.stderr)
        return 2
    missing = [m for m in ("openai", "torch", "transformers", "trl") if find_spec(m) is None]
    if missing:
        print(
            f"understudy demo: {', '.join(missing)} not installed; the demo needs the local, "
            'train and dev extras: pip install "understudy[local,train,dev]"',
            file=sys.stderr,
        )
        return 2
    previous = stop_on_sigterm()
    try:
        run_demo(options)
    except DemoError as exc:
        print(f"understudy demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("understudy demo: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def stop_on_sigterm() -> Any:
    """SIGTERM stops the demo like Ctrl-C: the gateway and a running distillation are stopped."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, stop)
