"""How a training job's processes start and share the work: one process, or several under
``accelerate launch`` (distributed data parallel, one process per GPU; gloo on CPU).

The parent builds the command (:func:`launch_command`); each training process asks which one
it is (:func:`rank`, :func:`world_size`) and lets the first do what only one may
(:func:`main_process_first`). accelerate and torch are imported inside the functions.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from understudy.distiller.config import TrainConfig

ACCELERATE_LAUNCH = ("-m", "accelerate.commands.launch")
"""``accelerate launch`` run by this Python (no dependence on a script on ``PATH``)."""


class LaunchError(Exception):
    """The job's launch settings name something that is not there."""


def launch_command(config: TrainConfig, launcher: Sequence[str] = ()) -> list[str]:
    """The command that the worker's ``-m understudy.distiller.worker JOB.json`` follows:
    ``launcher`` as given; ``accelerate launch`` when ``num_processes`` is above 1 or an
    ``accelerate_config`` is set; else this Python."""
    if launcher:
        return list(launcher)
    if not config.distributed:
        return [sys.executable]
    command = [sys.executable, *ACCELERATE_LAUNCH]
    if config.accelerate_config:
        path = Path(config.accelerate_config).expanduser()
        if not path.is_file():
            raise LaunchError(f"train.accelerate_config: no such file: {path}")
        command += ["--config_file", str(path)]
    if config.num_processes > 1:
        command += ["--num_processes", str(config.num_processes)]
    if not config.accelerate_config:
        # One machine, the processes on it: data parallel (on CPU too), the port free now.
        command += [
            "--multi_gpu",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
        ]
    return command


def process_threads(threads: int, processes: int) -> int:
    """Each training process's share of ``threads`` (at least 1)."""
    return max(1, threads // max(1, processes))


def free_port() -> int:
    """A TCP port nothing listens on now, for the processes to meet on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def world_size() -> int:
    """How many training processes this job has (``accelerate launch`` sets ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's place among them: 0 is the one that writes and evaluates."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's place on its machine: the GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def gpu_problem(device: str, gpus: int) -> str | None:
    """Why this training process has no GPU of its own (None: it has, or needs none)."""
    if device != "cuda" or world_size() == 1 or local_rank() < gpus:
        return None
    return (
        f"train.num_processes: training process {local_rank()} on this machine has no GPU of "
        f"its own ({gpus} GPU{'s' if gpus != 1 else ''} here; one process per GPU)"
    )


@contextmanager
def main_process_first(*, cpu: bool) -> Iterator[None]:
    """The first process runs the block; the others wait until it has, then run it (a block
    that writes a file the others read: the first writes, the others find it written)."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState(cpu=cpu).main_process_first():
        yield


def leave_process_group() -> None:
    """Training is over: this process leaves the others (a no-op for a single process)."""
    if world_size() == 1:
        return
    from accelerate import PartialState

    PartialState().destroy_process_group()
