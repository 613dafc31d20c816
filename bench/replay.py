"""The online protocol of OCaTS (Stogiannidis et al., 2023) on Banking77, through the gateway.

The 3,080 test queries stream through a real gateway process in a fixed shuffled order (one
order per seed); a replay teacher answers with GPT-4's recorded labels (``gpt-label``); the
gateway starts with no student; every K teacher-labelled requests (deferrals and shadow checks)
a distillation run trains a tiny student on the log, and promotes it through the gates; the
router serves the answers it is sure of at the quality target. With ``--history N``, N queries
are logged before the stream starts: from the train split with their gold labels standing in
for a teacher (``--history-from train``, the default), or from the test queries the stream does
not hold, answered by the same teacher column (``--history-from test``), as a deployment's log
holds its own teacher's answers. The gold history is a teacher whose past answers differ from
its live ones: with ``gpt35-label_rep`` and ``gpt4-label_nonrep`` (0.75 and 0.74 against gold)
a student trained on it learns gold's mapping; the replay teacher answers the history under its
own model name (``banking77-gold-labels``), so a run certifies a student on the live teacher's
answers only, as it would after a real change of teacher.

Each run holds out what the product holds out (``--held-out product``, the default: the
distiller's ``eval_*`` defaults, the classical candidate widened to its ``held_out_min``);
``--held-out demo`` holds out the K newest teacher answers instead, the demo's slice.

Each run is ``understudy demo``'s loop (``understudy.demo.run.run_demo``) at the benchmark's size;
its progress goes to stderr, the tables to stdout, the figures to ``bench/results/replay.json``
and the plot to ``bench/results/replay.png``.

    python bench/replay.py                                   # full: 3 seeds x 3 targets, cold
    python bench/replay.py --seeds 0 --targets 0.8 --limit 1000 --k 250
    python bench/replay.py --teacher gpt35-label_rep --history 9002 --limit 1000

``--teacher`` picks the teacher column of ``bench/data/banking77/test.csv`` (``gpt-label``,
``gpt4-label_nonrep``, ``gpt35-label_rep``; an unmappable answer, id 77, is the string
``unknown``). Each run reports the share of teacher calls saved, accuracy against gold and the
agreement of the student's answers with the teacher against the target; a run whose served
agreement is more than one point below the target is counted as a miss.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._banking77 import RESULTS, label_names, machine, read_csv, write_json
from understudy.demo.banking77 import Banking77, Query, sample
from understudy.demo.cli import stop_on_sigterm
from understudy.demo.config import DemoOptions
from understudy.demo.report import Summary
from understudy.demo.run import run_demo
from understudy.distiller.config import DatasetConfig
from understudy.student.classical import ClassicalSettings

LAMBDA = 0.05
"""Cost of a teacher call in discounted accuracy (accuracy - LAMBDA * teacher-call share)."""
TEACHER_ALONE = 0.8305
"""GPT-4 (``gpt-label``) against gold on all 3,080 test queries: the teacher-only reference."""
OCATS_KNN = 0.827
"""OCaTS' k-NN student on the same protocol (accuracy of what users received)."""
CURVE_EVERY = 250
"""A point of the curve over the stream each this many requests."""
TEACHERS = ("gpt-label", "gpt4-label_nonrep", "gpt35-label_rep")
MISS = 0.01
"""Served agreement this far below the target is a miss of the guarantee."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="stream orders")
    p.add_argument(
        "--targets", type=float, nargs="+", default=[0.8, 0.9, 0.95], help="quality targets"
    )
    p.add_argument("--k", type=int, default=250, help="distil every K teacher-labelled requests")
    p.add_argument(
        "--first-k",
        type=int,
        help="until a run promotes a student, distil every FIRST_K teacher-labelled requests "
        "(schedule.first_student_trigger; default: K)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        help="live teacher answers before the first run, held out by it (default: FIRST_K, else K)",
    )
    p.add_argument("--history", type=int, default=0, help="queries logged first (9002: all)")
    p.add_argument(
        "--history-from",
        choices=["train", "test"],
        default="train",
        help="train: train queries with gold labels; test: the test queries outside the stream, "
        "answered by the teacher (3080 - --limit of them)",
    )
    p.add_argument("--limit", type=int, help="stream only the first N queries of each order")
    p.add_argument("--epochs", type=float, default=6.0, help="training epochs per run")
    p.add_argument(
        "--warm-start-epochs",
        type=float,
        default=0.0,
        help="runs after a promotion continue from the champion for this many epochs (0: off)",
    )
    p.add_argument(
        "--warm-start-lr-scale",
        type=float,
        default=0.33,
        help="learning rate of a continued run, as a share of the first run's",
    )
    p.add_argument("--shadow-rate", type=float, default=0.05, help="student answers re-checked")
    p.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="overall-agreement gate on the held-out slice (default: off, as in the product)",
    )
    p.add_argument("--teacher", choices=TEACHERS, default="gpt-label", help="teacher column")
    p.add_argument(
        "--candidates",
        nargs="+",
        default=["classical"],
        choices=["classical", "model"],
        help="what each distillation run trains (model: the tiny from-scratch LM)",
    )
    p.add_argument("--audit-rate", type=float, default=0.03, help="router.audit_rate")
    p.add_argument(
        "--held-out",
        choices=["demo", "product"],
        default="product",
        help="held-out slice of each run: the product's defaults (distiller.dataset "
        "eval_fraction/eval_min/eval_max, the classical candidate's held_out_min; what a "
        "deployment gets) or the demo's (the K newest teacher answers)",
    )
    p.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="run nothing: merge the runs of earlier results (e.g. seeds run on several "
        "machines) into one table, plot and --out",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "replay.json", help="JSON results")
    p.add_argument("--plot", type=Path, default=RESULTS / "replay.png", help="PNG plot")
    return p.parse_args(argv)


def options_for(args: argparse.Namespace, seed: int, target: float, data_dir: Path) -> DemoOptions:
    """One run of the protocol as demo options: all 77 intents, first run after K calls."""
    return DemoOptions(
        history=args.history,
        requests=args.limit if args.limit is not None else 3080,
        intents=77,
        warmup=first_run(args),
        every=args.k,
        first_every=args.first_k or 0,
        data_dir=data_dir,
        port=0,
        seed=seed,
        quality_target=target,
        shadow_rate=args.shadow_rate,
        epochs=args.epochs,
        warm_start_epochs=args.warm_start_epochs,
        data=bench_data(args.teacher, args.history_from, seed, args.limit),
        extra={
            "distiller.gates": {}
            if args.min_agreement is None
            else {"min_agreement": args.min_agreement},
            "distiller.train": {
                "completion_only_loss": False,
                "warm_start_lr_scale": args.warm_start_lr_scale,
                "candidates": args.candidates,
            },
            "router": {"audit_rate": args.audit_rate},
            "distiller.dataset": held_out(args.held_out),
            "distiller.classical": classical_held_out(args.held_out),
        },
    )


def first_run(args: argparse.Namespace) -> int:
    """Live teacher answers before the first run: ``--warmup``, else ``--first-k``, else K."""
    if args.warmup is not None:
        return int(args.warmup)
    return int(args.first_k or args.k)


def held_out(choice: str) -> dict[str, object]:
    """``distiller.dataset`` settings of the held-out slice: none beyond the demo's, or the
    product's defaults."""
    if choice == "demo":
        return {}
    defaults = DatasetConfig()
    return {
        "eval_fraction": defaults.eval_fraction,
        "eval_min": defaults.eval_min,
        "eval_max": defaults.eval_max,
    }


def classical_held_out(choice: str) -> dict[str, object]:
    """``distiller.classical`` settings of the held-out set the classical candidate is judged
    on: the demo's slice, or the product's default (widened to ``held_out_min`` answers)."""
    if choice == "demo":
        return {}
    return {"held_out_min": ClassicalSettings().held_out_min}


def bench_data(
    teacher: str, history_from: str = "train", seed: int = 0, limit: int | None = None
) -> Banking77:
    """Banking77 from ``bench/data`` with ``teacher``'s answers on the test split. The history
    (``train`` of the result) is the train split with gold labels, or (``history_from ==
    "test"``) the test queries outside the stream of ``seed``, with ``teacher``'s answers."""
    names = label_names()
    test = [
        Query(r["text"], names[r["label"]], names.get(r[teacher], "unknown"))
        for r in read_csv("test.csv")
    ]
    if history_from == "test":
        streamed = {q.text for q in sample(test, limit, seed + 1)}  # run_demo's live queries
        train = [q for q in test if q.text not in streamed]
    else:
        train = [
            Query(r["text"], names[r["label"]], names[r["label"]]) for r in read_csv("train.csv")
        ]
    return Banking77(
        train=train,
        test=test,
        intents=sorted(set(names.values())),
        train_gold=history_from != "test",
    )


def scores(summary: Summary) -> dict[str, Any]:
    """What one run delivered, judged against gold and against the teacher."""
    answered = summary.answered
    n = len(answered)
    student = [a for a in answered if a.served_by == "student"]
    accuracy = sum(a.correct for a in answered) / n
    call_share = summary.teacher_calls / n
    curve = []
    for end in range(CURVE_EVERY, n + CURVE_EVERY, CURVE_EVERY):
        window = answered[max(0, end - CURVE_EVERY) : min(end, n)]
        curve.append(
            {
                "requests": min(end, n),
                "student_share": _share(sum(a.served_by == "student" for a in window), window),
                "accuracy": _share(sum(a.correct for a in window), window),
            }
        )
    served_agreement = _share(sum(a.agrees for a in student), student)
    return {
        "requests": n,
        "miss": served_agreement is not None and served_agreement < summary.quality_target - MISS,
        "teacher_calls": summary.teacher_calls,
        "saved": 1 - call_share,
        "student_served": len(student),
        "accuracy": accuracy,
        "teacher_alone": sum(a.query.teacher == a.query.gold for a in answered) / n,
        "agreement": sum(a.agrees for a in answered) / n,
        "student_agreement": _share(sum(a.agrees for a in student), student),
        "discounted": accuracy - LAMBDA * call_share,
        "promotions": summary.promotions,
        "seconds": round(summary.seconds, 1),
        "curve": curve,
    }


def _share(part: int, whole: list[Any]) -> float | None:
    return part / len(whole) if whole else None


def run_all(args: argparse.Namespace, started: float) -> list[dict[str, Any]]:
    """Every (target, seed) run; the results so far are written after each one."""
    runs: list[dict[str, Any]] = []
    for target in args.targets:
        for seed in args.seeds:
            print(f"== seed {seed}, quality target {target:g}", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="understudy-replay-") as tmp:
                options = options_for(args, seed, target, Path(tmp) / "run")
                summary = run_demo(options, out=sys.stderr)
            runs.append(
                {
                    "history": args.history,
                    "history_from": args.history_from,
                    "teacher": args.teacher,
                    "seed": seed,
                    "target": target,
                    **scores(summary),
                }
            )
            write_results(args, runs, started, plotted=False)
    return runs


def combined(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs of earlier result files (cold and with history may be mixed)."""
    runs: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(path.read_text())
        history = int(data["config"]["history"])
        teacher = data["config"].get("teacher", "gpt-label")
        source = data["config"].get("history_from", "train")
        runs += [
            {"history": history, "history_from": source, "teacher": teacher, **r}
            for r in data["runs"]
        ]
    runs.sort(key=lambda r: (r["history"], r["target"], str(r["seed"])))
    return runs


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def write_results(
    args: argparse.Namespace, runs: list[dict[str, Any]], started: float, *, plotted: bool
) -> None:
    write_json(
        args.out,
        {
            "benchmark": "replay",
            "config": {k: _jsonable(v) for k, v in vars(args).items()},
            "references": {"teacher_alone": TEACHER_ALONE, "ocats_knn": OCATS_KNN},
            "lambda": LAMBDA,
            "runs": runs,
            "mean": averaged(runs),
            "plot": str(args.plot) if plotted else None,
            "seconds": round(time.perf_counter() - started, 1),
            "machine": machine(),
        },
    )


def averaged(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mean over seeds of each (history, teacher, quality target)."""
    out = []

    def group_key(r: dict[str, Any]) -> tuple[int, str, float]:
        return (r.get("history", 0), r.get("teacher", "gpt-label"), r["target"])

    for history, teacher, target in dict.fromkeys(group_key(r) for r in runs):
        group = [r for r in runs if group_key(r) == (history, teacher, target)]
        row: dict[str, Any] = {
            "history": history,
            "history_from": group[0].get("history_from", "train"),
            "teacher": teacher,
            "seed": "mean",
            "target": target,
        }
        for key in (
            "requests",
            "teacher_calls",
            "saved",
            "accuracy",
            "teacher_alone",
            "agreement",
            "discounted",
            "student_served",
        ):
            row[key] = mean(r[key] for r in group)
        known = [r["student_agreement"] for r in group if r["student_agreement"] is not None]
        row["student_agreement"] = mean(known) if known else None
        row["promotions"] = sum(len(r["promotions"]) for r in group)
        row["misses"] = sum(bool(r.get("miss")) for r in group)
        row["seeds"] = len(group)
        out.append(row)
    return out


def variant(history: int, history_from: str = "train") -> str:
    if not history:
        return "cold"
    return f"{history:,} history ({'gold' if history_from == 'train' else 'teacher'})"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        "| variant | teacher | seed | target | requests | teacher calls | saved "
        "| served by student | accuracy | teacher alone | agreement | student agreement "
        "| discounted | teacher-only disc. | promotions | below target - 1 pt |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        promos = r["promotions"] if isinstance(r["promotions"], int) else len(r["promotions"])
        sa = r["student_agreement"]
        misses = r["misses"] if "misses" in r else int(bool(r.get("miss")))
        print(
            f"| {variant(r.get('history', 0), r.get('history_from', 'train'))} "
            f"| {r.get('teacher', 'gpt-label')} "
            f"| {r['seed']} | {r['target']:g} "
            f"| {r['requests']:.0f} | {r['teacher_calls']:.0f} "
            f"| {r['saved']:.1%} | {r['student_served']:.0f} | {r['accuracy']:.4f} "
            f"| {r['teacher_alone']:.4f} | {r['agreement']:.4f} "
            f"| {'-' if sa is None else f'{sa:.4f}'} | {r['discounted']:.4f} "
            f"| {r['teacher_alone'] - LAMBDA:.4f} | {promos} | {misses} |"
        )


def plot(runs: list[dict[str, Any]], means: list[dict[str, Any]], path: Path) -> bool:
    """Teacher calls saved against accuracy vs gold: a line per variant through the mean of
    each quality target, each seed's run as a faint dot, the references and the targets."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(9.5, 4.5))

    def key(r: dict[str, Any]) -> tuple[int, str]:
        return (r.get("history", 0), r.get("history_from", "train"))

    for n, (history, source) in enumerate(dict.fromkeys(key(r) for r in means)):
        color = f"C{n}"
        rows = [r for r in means if key(r) == (history, source)]
        rows.sort(key=lambda r: (r.get("teacher", ""), r["saved"]))
        # one line per teacher through its quality targets; each teacher's mean annotated
        for teacher in dict.fromkeys(r.get("teacher", "gpt-label") for r in rows):
            line = [r for r in rows if r.get("teacher", "gpt-label") == teacher]
            ax.plot(
                [r["saved"] * 100 for r in line],
                [r["accuracy"] for r in line],
                "o-",
                color=color,
                label=variant(history, source) if teacher == rows[0].get("teacher") else None,
            )
            for r in line:
                ax.annotate(
                    f"{teacher.split('-')[0]} q={r['target']:g}",
                    (r["saved"] * 100, r["accuracy"]),
                    fontsize=7,
                )
        single = [r for r in runs if key(r) == (history, source)]
        ax.plot(
            [r["saved"] * 100 for r in single],
            [r["accuracy"] for r in single],
            ".",
            color=color,
            alpha=0.35,
        )
    alone: dict[str, list[float]] = {}
    for r in runs:
        alone.setdefault(r.get("teacher", "gpt-label"), []).append(r["teacher_alone"])
    references = {t: sum(v) / len(v) for t, v in sorted(alone.items())} or {"": TEACHER_ALONE}
    # each teacher's own accuracy, and the line of equal discounted accuracy through it: a
    # stream is judged against the teacher that answered it
    for n, (teacher, accuracy) in enumerate(references.items()):
        name = teacher.split("-")[0] if len(references) > 1 else "teacher"
        ax.plot([0], [accuracy], "s^Dv"[n % 4], color="black", label=f"{name} alone {accuracy:.4f}")
        ax.plot(
            [0, 100],
            [accuracy, accuracy - LAMBDA],
            color="grey",
            ls="--",
            lw=0.8,
            label=f"same discounted accuracy as the teacher alone (λ={LAMBDA})" if n == 0 else None,
        )
    ocats = f"OCaTS k-NN student: accuracy {OCATS_KNN}"
    ax.axhline(OCATS_KNN, color="tab:orange", ls=":", label=ocats)
    accuracies = [r["accuracy"] for r in runs] + list(references.values())
    top = max(0.9, max(accuracies) + 0.01)
    ax.set_ylim(min(0.77, min(accuracies) - 0.01), top)
    if len(references) == 1:  # the history target is the one teacher's accuracy
        accuracy = next(iter(references.values()))
        ax.fill_between([60, 100], accuracy - 0.01, top, color="tab:green", alpha=0.08)
        ax.annotate("history target", (62, accuracy - 0.005), fontsize=8, color="tab:green")
    ax.set_xlabel("teacher calls saved (%)")
    ax.set_ylabel("accuracy of what users received vs gold")
    ax.set_xlim(-2, 100)
    ax.set_title("Banking77, OCaTS online protocol")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside: never over a point
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if min(args.k, args.first_k or 1, args.limit or 1, first_run(args)) < 1:
        print("--k, --first-k, --limit and --warmup must be >= 1", file=sys.stderr)
        return 2
    if args.history_from == "test" and args.history > 3080 - (args.limit or 3080):
        print("--history-from test holds at most 3080 - --limit queries", file=sys.stderr)
        return 2
    started = time.perf_counter()
    if args.combine:
        runs = combined(args.combine)
    else:
        stop_on_sigterm()  # a stopped benchmark stops its gateway and training too
        try:
            runs = run_all(args, started)
        except KeyboardInterrupt:
            print(f"interrupted; the runs that finished are in {args.out}", file=sys.stderr)
            return 130
    means = averaged(runs)
    print_table(runs + means)
    plotted = plot(runs, means, args.plot)
    write_results(args, runs, started, plotted=plotted)
    print(f"results: {args.out}" + (f", plot: {args.plot}" if plotted else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
