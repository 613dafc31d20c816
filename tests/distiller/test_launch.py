"""Starting the training job: one process, or several under ``accelerate launch``; the
settings that choose it; the job's processes stopped together and when the run is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from understudy.distiller.config import DistillConfig, GateConfig, TrainConfig
from understudy.distiller.job import Job
from understudy.distiller.launch import launch_command, process_threads
from understudy.distiller.process import TrainingFailed, run_job_process
from understudy.distiller.worker import JOB_FILE, LOG_FILE, RUN_PID_VARIABLE


def test_one_process_is_this_python():
    assert launch_command(TrainConfig()) == [sys.executable]
    assert not TrainConfig().distributed


def test_several_processes_run_under_accelerate_launch_on_one_machine():
    command = launch_command(TrainConfig(num_processes=4))
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "4"
    assert "--multi_gpu" in command and command[command.index("--num_machines") + 1] == "1"
    port = int(command[command.index("--main_process_port") + 1])
    assert 0 < port < 65536


def test_an_accelerate_config_decides_everything_but_an_explicit_process_count(tmp_path):
    config_file = tmp_path / "accelerate.yaml"
    config_file.write_text("distributed_type: MULTI_GPU\nnum_processes: 8\n")

    command = launch_command(TrainConfig(accelerate_config=str(config_file)))
    assert command[command.index("--config_file") + 1] == str(config_file)
    assert "--num_processes" not in command and "--multi_gpu" not in command
    assert "--main_process_port" not in command  # the config's, for several machines

    command = launch_command(TrainConfig(num_processes=2, accelerate_config=str(config_file)))
    assert command[command.index("--num_processes") + 1] == "2"


def test_a_launcher_setting_is_used_as_given():
    assert launch_command(TrainConfig(), ["torchrun", "--nproc-per-node", "2"]) == [
        "torchrun",
        "--nproc-per-node",
        "2",
    ]


def test_threads_are_shared_among_the_training_processes():
    assert process_threads(8, 1) == 8
    assert process_threads(8, 4) == 2
    assert process_threads(1, 2) == 1  # 2 cores, 2 processes: one thread each


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"num_processes": 0}, "train.num_processes must be >= 1"),
        (
            {"num_processes": 2, "launcher": ["torchrun"]},
            "train.launcher cannot be combined",
        ),
        (
            {"accelerate_config": "/etc/accelerate.yaml", "launcher": ["torchrun"]},
            "train.launcher cannot be combined",
        ),
        ({"num_processes": 2, "isolation": "inline"}, "need train.isolation = process"),
    ],
)
def test_settings_that_cannot_launch_are_refused_with_their_name(train, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig.from_mapping({"train": train})


def test_the_settings_are_read_from_the_environment():
    from understudy.settings import load_settings

    settings = load_settings(
        env={
            "UNDERSTUDY_DISTILLER_TRAIN_NUM_PROCESSES": "4",
            "UNDERSTUDY_DISTILLER_TRAIN_ACCELERATE_CONFIG": "/etc/accelerate.yaml",
        }
    )
    assert settings.distiller.train.num_processes == 4
    assert settings.distiller.train.accelerate_config == "/etc/accelerate.yaml"


def write_job(run_dir: Path, **train: object) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / JOB_FILE
    Job(str(run_dir), "label", None, TrainConfig(**train), GateConfig()).write(path)  # type: ignore[arg-type]
    return path


def test_a_missing_accelerate_config_fails_the_run_before_anything_starts(tmp_path):
    job = write_job(tmp_path / "run", accelerate_config=str(tmp_path / "nowhere.yaml"))
    with pytest.raises(TrainingFailed, match=r"train\.accelerate_config: no such file"):
        run_job_process(job, timeout_s=30)
    assert not (tmp_path / "run" / LOG_FILE).exists()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


# A launcher that starts a process of its own (as accelerate launch starts one per GPU), writes
# its id, and waits.
SPAWNING_LAUNCHER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open("child.pid", "w").write(str(child.pid))
time.sleep(120)
"""


def test_a_timed_out_job_is_stopped_with_every_process_it_started(tmp_path):
    """Only the launcher was killed: the processes it had started trained on."""
    job = write_job(tmp_path / "run")
    launcher = [sys.executable, "-c", SPAWNING_LAUNCHER]
    child_file = tmp_path / "run" / "child.pid"

    with pytest.raises(TrainingFailed, match="timed out"):
        run_job_process(job, timeout_s=3, launcher=launcher)

    child = int(child_file.read_text())
    deadline = time.monotonic() + 5
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child)


WATCHING_WORKER = """
from understudy.distiller.worker import exit_with_parent
import time
exit_with_parent(0.05)
time.sleep(30)
"""


def test_a_training_process_stops_when_the_run_that_started_it_is_gone(tmp_path):
    """Under a launcher the training process's parent is the launcher, which outlives a killed
    run: the process watches the run itself."""
    run = subprocess.Popen([sys.executable, "-c", "pass"])
    run.wait()
    env = {**os.environ, RUN_PID_VARIABLE: str(run.pid)}
    started = time.monotonic()
    worker = subprocess.run(
        [sys.executable, "-c", WATCHING_WORKER], env=env, capture_output=True, timeout=20
    )
    assert worker.returncode == 3 and time.monotonic() - started < 15
    assert b"the distillation run that started this job is gone" in worker.stderr


def test_a_training_process_keeps_going_while_its_run_lives(tmp_path):
    env = {**os.environ, RUN_PID_VARIABLE: str(os.getpid())}
    script = WATCHING_WORKER.replace("time.sleep(30)", "time.sleep(0.5); print('done')")
    worker = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=20
    )
    assert worker.returncode == 0 and worker.stdout.strip() == "done"


def test_the_job_file_carries_the_launch_settings(tmp_path):
    job = write_job(tmp_path / "run", num_processes=2, accelerate_config="/a.yaml")
    stored = json.loads(job.read_text())["train"]
    assert (stored["num_processes"], stored["accelerate_config"]) == (2, "/a.yaml")
    assert Job.read(job).train.distributed


def test_a_process_without_a_gpu_of_its_own_is_named(monkeypatch):
    from understudy.distiller.launch import gpu_problem

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert gpu_problem("cuda", 2) is None
    assert gpu_problem("cpu", 0) is None  # processes on CPU need no GPU
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert gpu_problem("cuda", 2) == (
        "train.num_processes: training process 2 on this machine has no GPU of its own "
        "(2 GPUs here; one process per GPU)"
    )
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert gpu_problem("cuda", 1) is None
