"""Several gateway processes on one host: ``understudy serve --workers N``.

The parent binds the listening socket, then forks ``N`` workers that each run the whole app
(its own event loop, request log writer, student pool) and accept on that same socket: the
kernel hands each new connection to one of them. The parent only supervises:

* SIGTERM or SIGINT is passed on to every worker as SIGTERM (a graceful stop: each drains its
  connections and flushes its log), and the parent returns when all have ended;
* a worker that ends on its own is started again, unless it failed to start
  (``startup_failed``), which stops every worker: the same error would repeat;
* a worker whose parent dies (``kill -9`` of the supervisor) receives SIGTERM (Linux), so no
  orphan keeps the port.

Fork before any thread starts: the parent opens nothing but the socket.

What the workers share and what each has alone:

* exact across workers (they read the database): the request log (one SQLite file in WAL mode,
  each worker's write-behind queue committing in turn), the rollups and everything that reads
  them (report, dashboard, tasks, ``/metrics`` totals), monthly budgets of tokens and of USD
  (a request holds its estimate, tokens and their worst-case teacher cost, in the database
  against every worker's logged usage and holds, admitted there or from its worker's slice of
  the key's budget, itself a hold: a key's month ends below each budget plus the one request
  that crossed the line, while requests use no more than they hold; a killed worker's holds
  and slices lapse within ``limits.budget_lease_s``), failed-key throttling (failures
  counted in the database: ``limits.failed_auth_per_minute`` a minute across all workers, plus
  at most one more key judged per worker that had not heard yet), dashboard sessions, the
  registry (every worker loads a newly promoted student from it within
  ``student.reload_interval_s``);
* shared when ``limits.rate_lease_s`` is above 0 (set it for ``--workers N`` on SQLite; unset,
  it is 0.5 on PostgreSQL): rate limits, leased from buckets in the database; at 0 each worker
  counts its own and a key may get up to N times its rate;
* per worker: ``max_auto_tasks`` new fingerprinted tasks (each worker may add up to the cap: at
  most N times it), the teacher-key cache of pass-through mode, ``/ready``'s cache,
  ``/metrics``' in-process gauges (log queue, connections), the student's weights (each worker
  holds a copy in memory), a crash losing at most one commit interval of rows, retention passes
  (each worker runs them; a batch another already deleted is simply found empty).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("understudy.gateway")

_PR_SET_PDEATHSIG = 1


def supervise(run_worker: Callable[[int], int], workers: int, *, startup_failed: int) -> int:
    """Run ``run_worker(i)`` for ``i`` in ``range(workers)``, each in a forked process, until
    stopped; the exit status: 0 after a clean stop, ``startup_failed`` when a worker could not
    start, else the worst status a worker ended with while stopping."""
    children: dict[int, int] = {}
    stopping = False
    parent = os.getpid()

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            os._exit(_worker(run_worker, index, parent))
        children[pid] = index
        log.info("worker %d started (pid %d)", index, pid)

    def stop(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for index in range(workers):
        start(index)
    for sig in previous:
        signal.signal(sig, stop)
    status = 0
    try:
        while children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            index = children.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if stopping:
                status = max(status, code)
            elif code == startup_failed:
                log.error("worker %d could not start; stopping the others", index)
                status = startup_failed
                stop(signal.SIGTERM, None)
            else:
                log.warning("worker %d (pid %d) ended with %d; starting it again", index, pid, code)
                start(index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _worker(run_worker: Callable[[int], int], index: int, parent: int) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    _end_with_parent()
    if os.getppid() != parent:  # the supervisor died before the request above
        return 0
    code = 1
    try:
        code = run_worker(index)
    except BaseException:  # reported here; the supervisor sees the status
        log.exception("worker %d failed", index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
    return code


def _end_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (elsewhere: nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
