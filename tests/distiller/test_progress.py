"""What ``distill run`` shows: a bar (or one line) per phase, the result on one screen, and the
training libraries' own output in the run's ``train.log`` unless ``--verbose``."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distiller.conftest import log_intents
from understudy.distiller.progress import PHASES, PhaseDisplay, command_line_progress
from understudy.storage.database import open_database

ROOT = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _walk(display: PhaseDisplay) -> None:
    display.phase("dataset")
    display.note("120 train, 40 held out")
    display.phase("train")
    for step in (10, 60, 120):
        display.step(step, 120, "steps")
    display.phase("evaluate")
    display.phase("train")  # a phase already passed is not shown again
    display.phase("gates")
    display.finished()


def test_without_a_terminal_each_phase_is_one_plain_line():
    out = io.StringIO()
    _walk(PhaseDisplay(out, bars=False))
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == list(PHASES)
    assert "120 train, 40 held out" in lines[0] and "120/120 steps" in lines[1]
    assert "\r" not in out.getvalue()


def test_on_a_terminal_each_phase_is_a_bar_and_training_has_an_eta():
    terminal = Terminal()
    with command_line_progress(verbose=False, stream=terminal) as display:
        display.phase("train")
        display.step(30, 120, "steps")
        logging.getLogger("understudy.distiller").info("a line for the run's log only")
        logging.getLogger("understudy.distiller").warning("the champion's weights are gone")
        print("{'loss': 1.23}")  # what a training library prints
        display.phase("evaluate")
    shown = terminal.getvalue()
    assert re.search(r"train .*30/120 steps \[\d\d:\d\d<\d\d:\d\d\]", shown), shown
    assert "the champion's weights are gone" in shown  # warnings are shown between the bars
    assert "a line for the run's log only" not in shown and "'loss'" not in shown


@pytest.mark.slow
def test_a_run_on_the_tiny_model_fits_one_screen_and_keeps_the_trainers_log(tmp_path, tiny_base):
    """`distill run` printed 36 KB for one run: bars, loss dicts and INFO lines interleaved."""
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, "intent", 80)
    db.conn.close()
    config = tmp_path / "understudy.toml"
    config.write_text(
        "[distiller.dataset]\neval_fraction = 0.25\neval_min = 10\nmin_examples = 40\n"
        f'[distiller.train]\nbase_model = "{tiny_base}"\nmethod = "full"\nepochs = 3\n'
        'batch_size = 8\ndevice = "cpu"\nlogging_steps = 1\nisolation = "inline"\n'
        'candidates = ["model"]\n'
        "[distiller.gates]\neval_batch_size = 64\nmax_new_tokens = 8\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}

    def distill(*extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        done = subprocess.run(
            [sys.executable, "-m", "understudy.cli", "distill", "run", "--task", "intent"]
            + ["--data-dir", str(tmp_path), "--config", str(config), *extra],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return done, (done.stdout + done.stderr).splitlines()

    done, lines = distill()
    assert done.returncode == 0, done.stderr
    assert len(lines) <= 40, "\n".join(lines)
    assert [line.split()[0] for line in done.stderr.splitlines()] == list(PHASES)
    first = done.stdout.splitlines()[0]
    assert re.match(r"run \S+ of task intent: (promoted|rejected)", first), first
    assert "'loss'" not in done.stdout + done.stderr and " INFO " not in done.stdout + done.stderr
    (run_dir,) = (tmp_path / "distill" / "intent").iterdir()
    train_log = (run_dir / "train.log").read_text()
    assert "'loss'" in train_log and "INFO understudy.distiller" in train_log
    assert f"log {run_dir / 'train.log'}" in done.stdout

    verbose, _ = distill("--verbose", "--json")
    assert verbose.returncode == 0
    assert "'loss'" in verbose.stderr and "INFO understudy.distiller" in verbose.stderr
    assert json.loads(verbose.stdout)["outcome"] in ("promoted", "rejected")


def test_an_error_of_the_run_is_one_line_and_its_traceback_stays_in_the_log(tmp_path):
    err = io.StringIO()
    with command_line_progress(verbose=False, stream=err) as display:
        display.started("r1", tmp_path)
        try:
            raise ValueError("the dataset is broken")
        except ValueError:
            logging.getLogger("understudy.distiller").exception("task t: run r1 failed")
    assert err.getvalue() == "ERROR understudy.distiller: task t: run r1 failed\n"
    log = (tmp_path / "train.log").read_text()
    assert "Traceback" in log and "the dataset is broken" in log


class Recorder:
    """A :class:`~understudy.distiller.progress.Progress` that keeps what it hears."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.steps: list[tuple[str | None, int, int | None, str]] = []

    def started(self, run_id: str, run_dir: Path) -> None:
        return None

    def phase(self, name: str) -> None:
        self.current = name

    def step(self, done: int, total: int | None, unit: str = "") -> None:
        self.steps.append((self.current, done, total, unit))

    def note(self, text: str) -> None:
        return None

    def finished(self) -> None:
        self.current = None


def test_the_evaluate_phase_counts_the_answers_it_generates(tmp_path):
    """Evaluation (minutes for a language model on a big held-out set) had no count, so its bar
    had no ETA; it counts generated answers now, up to every held-out and golden one."""
    from understudy.distiller.config import DatasetConfig, DistillConfig, GateConfig, TrainConfig
    from understudy.distiller.pipeline import run_distillation

    db = open_database(tmp_path / "understudy.db")
    log_intents(db, "intent", 400)
    db.conn.close()
    cfg = DistillConfig(
        dataset=DatasetConfig(eval_fraction=0.25, eval_min=10, min_examples=40),
        train=TrainConfig(isolation="inline", candidates=["classical"]),
        gates=GateConfig(quality_target=0.9, min_calibration_examples=20),
    )
    recorder = Recorder()
    outcome = run_distillation(tmp_path, "intent", cfg, progress=recorder)
    evaluated = [s for s in recorder.steps if s[0] == "evaluate"]
    assert evaluated and {unit for *_, unit in evaluated} == {"answers"}
    held_out = outcome.metrics["eval_examples"]
    last_done, last_total = evaluated[-1][1], evaluated[-1][2]
    assert last_done == last_total and last_total >= held_out


def test_the_training_process_reports_evaluation_through_its_progress_file(tmp_path):
    """A model evaluated in the training process (candidate, then the champion on the same
    examples) reaches ``distill run``'s evaluate bar through the progress file."""
    from understudy.distiller.pipeline import _progress_logger
    from understudy.distiller.worker import _evaluation_progress

    path = tmp_path / "progress.jsonl"
    report = _evaluation_progress(path, 2)
    report(0)(10, 10)  # the candidate: all of its 10 answers
    report(1)(4, 10)  # the champion: 4 of the same 10
    recorder = Recorder()
    relay = _progress_logger("intent", recorder)
    for line in path.read_text().splitlines():
        relay(json.loads(line))
    assert recorder.steps == [("evaluate", 10, 20, "answers"), ("evaluate", 14, 20, "answers")]
