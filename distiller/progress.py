"""What ``understudy distill run`` shows while it runs: one line per phase.

The phases are :data:`PHASES` (dataset, train, evaluate, gates). On a terminal each is a
progress bar (training's counts its steps, evaluation's the answers it generates, each with an
ETA; the short dataset and gates phases show their time); otherwise each prints one plain line
when it ends. Everything else a run says (its INFO lines, the training libraries' own output: the
Hugging Face loss dicts, progress bars, warnings) goes to the run's ``train.log``, where the
training process writes too; ``--verbose`` shows it all on stderr instead. Warnings and errors
of the run itself are shown either way.

The pipeline reports through :class:`Progress`; :class:`NoProgress` (the default) ignores it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Protocol, TextIO

PHASES = ("dataset", "train", "evaluate", "gates")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE = "train.log"  # the training process's log, in the run's directory (distiller.worker)
_BAR = "{desc} |{bar:24}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]{postfix}"
_NO_TOTAL = "{desc} [{elapsed}]{postfix}"


class Progress(Protocol):
    """What a run reports as it goes."""

    def started(self, run_id: str, run_dir: Path) -> None:
        """The run has its id and directory."""

    def phase(self, name: str) -> None:
        """Phase ``name`` begins (the one before it ends); a phase already passed is ignored."""

    def step(self, done: int, total: int | None, unit: str = "") -> None:
        """How far the current phase is."""

    def note(self, text: str) -> None:
        """What the current phase did, shown when it ends."""

    def finished(self) -> None:
        """The run ended: the current phase ends."""


class NoProgress:
    """A :class:`Progress` that shows nothing."""

    def started(self, run_id: str, run_dir: Path) -> None:
        return None

    def phase(self, name: str) -> None:
        return None

    def step(self, done: int, total: int | None, unit: str = "") -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def finished(self) -> None:
        return None


class PhaseDisplay:
    """Phases on ``stream``: progress bars with ``bars``, else one plain line as each ends."""

    def __init__(self, stream: TextIO, *, bars: bool) -> None:
        self.stream, self.bars = stream, bars
        self.current: str | None = None
        self._index = -1
        self._started = 0.0
        self._note = ""
        self._done: tuple[int, int | None, str] | None = None
        self._bar: Any = None
        self._lock = threading.RLock()  # a warning logged while a phase changes comes back here
        self.on_started: Callable[[str, Path], None] | None = None

    def started(self, run_id: str, run_dir: Path) -> None:
        if self.on_started is not None:
            self.on_started(run_id, run_dir)

    def phase(self, name: str) -> None:
        with self._lock:
            index = PHASES.index(name) if name in PHASES else -1
            if index <= self._index:
                return
            self._end()
            self.current, self._index = name, index
            self._started, self._note, self._done = time.monotonic(), "", None
            if self.bars:
                from tqdm import tqdm  # type: ignore[import-untyped]

                self._bar = tqdm(
                    total=None, desc=f"{name:<8}", file=self.stream, bar_format=_NO_TOTAL
                )

    def step(self, done: int, total: int | None, unit: str = "") -> None:
        with self._lock:
            if self.current is None:
                return
            self._done = (done, total, unit)
            bar = self._bar
            if bar is not None:
                if total and bar.total != total:
                    bar.total, bar.bar_format, bar.unit = total, _BAR, unit
                bar.n = done
                bar.refresh()

    def note(self, text: str) -> None:
        with self._lock:
            self._note = text
            if self._bar is not None:
                self._bar.set_postfix_str(text)

    def finished(self) -> None:
        with self._lock:
            self._end()
            self.current = None

    def message(self, text: str) -> None:
        """A line (a warning) between the bars, not through one."""
        with self._lock:
            if self._bar is not None:
                self._bar.write(text, file=self.stream)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def _end(self) -> None:
        if self.current is None:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        took = time.monotonic() - self._started
        what = self._note
        if not what and self._done is not None:
            done, total, unit = self._done
            what = f"{done}/{total} {unit}".strip() if total else f"{done} {unit}".strip()
        self.stream.write(f"{self.current:<9}{what + '  ' if what else ''}{took:.1f} s\n")
        self.stream.flush()


class RunLog(io.TextIOBase):
    """A text stream into the run's ``train.log``, held in memory until the run has its
    directory (:meth:`attach`)."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[str] = []
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            if self._file is not None:
                self._file.write(text)
            else:
                self._held.append(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def attach(self, path: Path) -> None:
        with self._lock:
            self._file = path.open("a", encoding="utf-8", buffering=1)
            self._file.write("".join(self._held))
            self._held.clear()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()


class _Console(logging.Handler):
    """Warnings and errors of the run, shown between the bars: one line each (a traceback
    stays in ``train.log``)."""

    def __init__(self, display: PhaseDisplay) -> None:
        super().__init__(logging.WARNING)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.message(f"{record.levelname} {record.name}: {record.getMessage()}")
        except (OSError, ValueError):  # a log line must never break the run
            self.handleError(record)


@contextlib.contextmanager
def command_line_progress(*, verbose: bool, stream: TextIO) -> Iterator[PhaseDisplay]:
    """The display of one ``distill run`` on ``stream`` (stderr). Without ``verbose``, the
    run's logs and the libraries' output go to its ``train.log``; with it, to ``stream`` (the
    training process's ``train.log`` followed there too, and what the libraries print to
    stdout: stdout is for the result)."""
    display = PhaseDisplay(stream, bars=stream.isatty() and not verbose)
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    for old in saved[1]:
        root.removeHandler(old)
    root.setLevel(logging.INFO)
    if verbose:
        handler: logging.Handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        follower: list[Tail] = []

        def follow(run_id: str, run_dir: Path) -> None:
            follower.append(Tail(run_dir / LOG_FILE, lambda line: stream.write(line)).start())

        display.on_started = follow
        try:
            with redirect_stdout(stream):  # stdout is for the result; the libraries print there
                yield display
        finally:
            display.finished()
            for tail in follower:
                tail.stop()
            _restore(root, saved, [handler])
        return
    sink = RunLog()
    to_file = logging.StreamHandler(sink)
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    console = _Console(display)
    root.addHandler(to_file)
    root.addHandler(console)
    display.on_started = lambda run_id, run_dir: sink.attach(run_dir / LOG_FILE)
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            yield display
    finally:
        display.finished()
        _restore(root, saved, [to_file, console])
        sink.close()


def _restore(
    root: logging.Logger, saved: tuple[int, list[logging.Handler]], added: list[logging.Handler]
) -> None:
    for handler in added:
        root.removeHandler(handler)
    for handler in saved[1]:
        root.addHandler(handler)
    root.setLevel(saved[0])


class Tail:
    """Follows a file as it grows, from its current end, handing each complete new line to
    ``handle`` (from a thread of its own, until :meth:`stop`, which reads what is left)."""

    def __init__(self, path: Path, handle: Callable[[str], Any], poll_s: float = 0.25) -> None:
        self.path, self.handle, self.poll_s = path, handle, poll_s
        self.offset = path.stat().st_size if path.is_file() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tail", daemon=True)

    def start(self) -> Tail:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def poll(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines(keepends=True):
            self.handle(line)


@contextlib.contextmanager
def following_progress(path: Path, handle: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """While the body runs, each new JSON line of the training's progress file to ``handle``
    (training in this process writes it as it goes)."""

    def record(line: str) -> None:
        if line.strip():
            with contextlib.suppress(ValueError):
                handle(json.loads(line))

    tail = Tail(path, record).start()
    try:
        yield
    finally:
        tail.stop()
