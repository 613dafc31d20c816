"""Two gateway replicas on one PostgreSQL database, as behind a load balancer: one monthly
budget enforced across both, and ``kill -9`` of one replica under load loses no request it
acknowledged longer than the commit interval before, while the other goes on serving.

With the tiny real student (``student_fixtures``) on one data directory shared by both: a
distillation run's promotion, a later promotion and an operator's rollback are each served by
both replicas at once (LISTEN/NOTIFY; the poll is set far longer than the waits); a Responses
follow-up sent to the other replica finds a response its neighbour has not committed yet; and
two ``understudy distill run`` of one task on the database: one runs, the other is refused with
the first named, and ``kill -9`` of the first lets the next one run at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.e2e.student_fixtures import (
    ADMIN_KEY,
    MARGIN,
    MODEL,
    SYSTEM,
    TASK,
    THRESHOLD,
    Student,
    _measure,
    client,
    gateway_config,
    log_teacher_traffic,
    served_by,
    start_teacher,
    task_messages,
    wait_for,
)
from tests.e2e.test_kill9 import load
from tests.gateway_process import ROOT, GatewayProcess

KEY = "gw-key-replicas"
AUTH = {"authorization": f"Bearer {KEY}"}
COMMIT_INTERVAL_MS = 50
# The writer shares two busy cores with both gateways, PostgreSQL and the load (and, in CI, with a
# second test process): at 0.25 s one row of 455 was lost once at a load average of 10.
SCHEDULING_SLACK_S = 1.0


def _replicas(stub, tmp_path, url: str, config: str) -> tuple[GatewayProcess, GatewayProcess]:
    env = gateway_env(UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS=str(COMMIT_INTERVAL_MS))
    first = GatewayProcess(stub.base_url, tmp_path / "a", env=env, config=config, storage_url=url)
    second = GatewayProcess(stub.base_url, tmp_path / "b", env=env, config=config, storage_url=url)
    first.start()
    try:
        second.start()
    except BaseException:
        first.stop()
        raise
    return first, second


def test_one_monthly_budget_holds_across_replicas(stub, teacher, postgres_url, tmp_path):
    budget = 400
    config = f'api_keys = ["{KEY}"]\n[limits]\nmonthly_tokens = {budget}\nreserve_tokens = 1\n'
    a, b = _replicas(stub, tmp_path, postgres_url, config)
    try:
        clients = [openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0) for gw in (a, b)]
        used = [0, 0]
        refused_at: int | None = None
        for i in range(200):
            side = i % 2
            try:
                answer = clients[side].chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "Tell me a story."}]
                )
            except openai.RateLimitError:
                refused_at = side
                break
            used[side] += answer.usage.total_tokens
            time.sleep(0.15)  # a refresh of the other replica's usage is at most a second old
        assert refused_at is not None, "the budget was never enforced"
        assert max(used) < budget <= sum(used) + 60  # neither replica alone reached it
        for gw in (a, b):  # and both refuse the key once they have re-read the usage
            assert _refused_within(gw, 3.0), f"{gw.url} still answers the spent key"
    finally:
        a.stop()
        b.stop()


def _refused_within(gw: GatewayProcess, seconds: float) -> bool:
    """Whether the key is refused (429) within ``seconds``: a replica re-reads every process's
    usage at most a second apart, plus the commit interval of the one that logged it."""
    deadline = time.monotonic() + seconds
    while True:
        status = httpx.post(
            gw.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}]},
        ).status_code
        if status == 429:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_kill_9_of_one_replica_loses_no_acknowledged_row(stub, teacher, postgres_url, tmp_path):
    a, b = _replicas(stub, tmp_path, postgres_url, f'api_keys = ["{KEY}"]\n')
    try:
        acked_a: list[tuple[float, str]] = []
        acked_b: list[tuple[float, str]] = []
        stop = threading.Event()
        threads = [threading.Thread(target=load, args=(a, acked_a, stop, AUTH)) for _ in range(6)]
        threads += [threading.Thread(target=load, args=(b, acked_b, stop, AUTH)) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                len(acked_a) < 100 or time.monotonic() - acked_a[0][0] < 2.0
            ):
                time.sleep(0.05)
            killed_at = time.monotonic()
            a.kill()
            served_after = len(acked_b)
            time.sleep(1.0)
            assert len(acked_b) > served_after, "the other replica stopped serving"
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert len(acked_a) >= 100, "the load did not get going"
        b.stop()  # the surviving replica flushes everything it acknowledged

        logged = [r["id"] for r in b.rows()]
        assert len(logged) == len(set(logged))
        horizon = killed_at - COMMIT_INTERVAL_MS / 1000 - SCHEDULING_SLACK_S
        must_have = {rid for at, rid in acked_a if at < horizon} | {rid for _, rid in acked_b}
        missing = must_have - set(logged)
        lost_by_b = missing & {rid for _, rid in acked_b}
        assert not lost_by_b, f"the surviving replica lost {len(lost_by_b)} acknowledged requests"
        assert not missing, f"{len(missing)} of {len(must_have)} acknowledged requests were lost"
    finally:
        a.stop()
        b.stop()


def test_one_rate_limit_holds_across_replicas(stub, teacher, postgres_url, tmp_path):
    """A key's burst of 5 (6 a minute after it) is spent through either replica: 5 answers in
    all, not 5 from each."""
    config = (
        f'api_keys = ["{KEY}"]\n[limits]\nrequests_per_minute = 6\nburst = 5\nrate_lease_s = 1.0\n'
    )
    a, b = _replicas(stub, tmp_path, postgres_url, config)
    try:
        statuses = []
        for i in range(12):
            gw = (a, b)[i % 2]
            statuses.append(
                httpx.post(
                    gw.base_url + "/chat/completions",
                    headers={"authorization": f"Bearer {KEY}"},
                    json={"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}]},
                ).status_code
            )
        assert statuses.count(200) == 5 and statuses.count(429) == 7, statuses
    finally:
        a.stop()
        b.stop()


# -- a student shared by both replicas -----------------------------------------------------

OTHER_HOST = "distiller-2.internal"
RELOAD_INTERVAL_S = 30  # longer than any wait below: a change is seen through LISTEN/NOTIFY
SEEN_WITHIN_S = 20  # loading the tiny student on a busy machine, not waiting for a poll


@dataclass
class Shared:
    """Two student-serving replicas on one PostgreSQL database, the stand-in teacher, and the
    operator's config file for ``understudy`` commands on the same database."""

    url: str
    a: GatewayProcess
    b: GatewayProcess
    config: Path
    data_dir: Path


def _operator_config(path: Path, url: str, replica_config: str) -> Path:
    """The replicas' config plus ``storage.url`` and a distillation of the tiny student."""
    path.write_text(
        f'[storage]\nurl = "{url}"\n'
        + replica_config.replace("[router]\n", "[router]\nquality_target = 0.8\n")
        + "[distiller.dataset]\neval_fraction = 0.25\neval_min = 10\nmin_examples = 40\n"
        + '[distiller.train]\nbase_model = "tiny"\nmethod = "full"\ntiny_hidden = 128\n'
        + "tiny_layers = 2\ntiny_vocab_size = 512\nlearning_rate = 2e-3\nepochs = 25\n"
        + 'batch_size = 16\ndevice = "cpu"\nlogging_steps = 50\nisolation = "inline"\n'
        + 'candidates = ["model"]\n'
        + "[distiller.gates]\nmin_agreement = 0.8\neval_batch_size = 64\nmax_new_tokens = 8\n"
        + 'min_calibration_examples = 20\nmin_certified_served = 12\nbound = "wilson"\n'
        + "confidence = 0.95\n"
    )
    return path


def understudy(
    shared: Shared, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``understudy ARGS --config`` the operator's file, started (one torch thread: on two busy
    cores one trains the tiny student fastest)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")} | (env or {})
    env["OMP_NUM_THREADS"] = "1"
    argv = [*args, "--config", str(shared.config), "--data-dir", str(shared.data_dir)]
    return subprocess.Popen(
        [sys.executable, "-m", "understudy.cli", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def shared(postgres_server, tmp_path_factory) -> Iterator[Shared]:
    from understudy.storage.engine_postgres import close_pools

    root = tmp_path_factory.mktemp("replicas-student")
    url = postgres_server.fresh_database()
    config = gateway_config().replace(
        "reload_interval_s = 0.2", f"reload_interval_s = {RELOAD_INTERVAL_S}"
    )
    env = gateway_env(UNDERSTUDY_ADMIN_KEY=ADMIN_KEY, UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS="100")
    teacher = start_teacher()
    # One data directory path for all (as one volume mounted at /data in every container): a
    # replica loads only students inside its own data directory, where the distiller puts them.
    data = root / "data"
    a = GatewayProcess(teacher.base_url, data, env=env, config=config, storage_url=url)
    b = GatewayProcess(teacher.base_url, data, env=env, config=config, storage_url=url)
    try:
        a.start(timeout=60)
        b.start(timeout=60)
        log_teacher_traffic(a)
        operator = _operator_config(root / "operator.toml", url, config)
        yield Shared(url, a, b, operator, data)
    finally:
        a.stop()
        b.stop()
        teacher.stop()
        close_pools(url)
        postgres_server.drop_database(url)


def _confident(version: Any) -> str:
    """A task message the served student answers as the teacher does, clearly above the
    replicas' threshold (measured with the serving code, as ``student_fixtures`` does)."""
    student = Student(version.id, str(version.model_path), version.router)
    for probe in _measure(student):
        if probe.confidence >= THRESHOLD + MARGIN and probe.student == probe.teacher:
            return probe.text
    raise AssertionError(f"{version.id} is sure of no task message")


def _version_served(gw: GatewayProcess, text: str) -> str | None:
    headers = served_by(gw, text)
    if headers.get("x-understudy-served-by") != "student":
        return None
    return headers["x-understudy-student-version"]


def _both_serve(shared: Shared, text: str, version: str | None) -> None:
    for gw in (shared.a, shared.b):
        wait_for(
            lambda gw=gw: _version_served(gw, text) == version,
            timeout=SEEN_WITHIN_S,
            interval=0.2,
            what=f"{gw.url} to serve {version or 'the teacher'}",
        )


def _registry(shared: Shared) -> Any:
    from understudy.storage.database import open_database

    return open_database(shared.url, migrate_schema=False)


@pytest.mark.slow
def test_a_promotion_and_a_rollback_are_served_by_both_replicas(shared):
    from understudy.storage.registry import champion, promote, register_model

    probe = task_messages(48, seed=7)[0][0]
    assert _version_served(shared.a, probe) is None  # the teacher answers: no student yet

    # The distiller trains on both replicas' log and promotes in the shared registry.
    code, out, err = finished(understudy(shared, "distill", "run", "--task", TASK, "--json"))
    assert code == 0, err
    assert json.loads(out)["outcome"] == "promoted", out
    db = _registry(shared)
    try:
        v1 = champion(db, TASK)
    finally:
        db.conn.close()
    assert v1 is not None and v1.id == f"{TASK}@v1"
    text = _confident(v1)
    _both_serve(shared, text, v1.id)

    # A second version promoted through the registry, as a distillation run promotes.
    weights = shared.data_dir / "models" / TASK / "retrained"
    shutil.copytree(str(v1.model_path), weights)
    db = _registry(shared)
    try:
        v2 = register_model(db, TASK, base="tiny", model_path=str(weights), router=v1.router)
        promote(db, v2.id, reason="retrained")
    finally:
        db.conn.close()
    _both_serve(shared, text, v2.id)

    # The operator rolls back on the same database: both replicas serve v1 again.
    code, out, err = finished(understudy(shared, "rollback", "--task", TASK), timeout=60)
    assert code == 0, err
    assert f"{v1.id} serves again (was {v2.id})" in out
    _both_serve(shared, text, v1.id)
    for gw in (shared.a, shared.b):
        assert f"now served by {v1.id}" in gw.output().split(f"now served by {v2.id}")[-1]


@pytest.mark.slow
def test_a_responses_follow_up_on_the_other_replica_finds_the_response(shared):
    """A stored student answer from replica A, named at once on replica B (before A's
    write-behind log committed it): B waits for the commit instead of answering 404."""
    db = _registry(shared)
    try:
        from understudy.storage.registry import champion

        version = champion(db, TASK)
    finally:
        db.conn.close()
    assert version is not None, "no champion: the promotion test did not get that far"
    text = _confident(version)
    on_a, on_b = client(shared.a), client(shared.b)

    def stored_on_a() -> Any:
        raw = on_a.responses.with_raw_response.create(model=MODEL, instructions=SYSTEM, input=text)
        assert raw.headers["x-understudy-served-by"] == "student"
        return raw.parse()

    for _ in range(10):  # each a race with A's writer, lost most times before the wait
        first = stored_on_a()
        found = on_b.responses.retrieve(first.id)
        assert found.id == first.id and found.output_text == first.output_text

        second = stored_on_a()
        follow_up = on_b.responses.create(
            model=MODEL,
            instructions=SYSTEM,
            input="and my other card?",
            previous_response_id=second.id,
        )
        assert follow_up.output_text


@pytest.mark.slow
def test_one_distill_lock_across_two_workers(shared):
    """Two ``understudy distill run`` of one task on one database: the second is refused with
    the first named; ``kill -9`` of the first frees the task at once for the next, though the
    first's lock row says it runs on another host with a fresh heartbeat: only the session lock
    the server ended with the killed worker's connection tells that it is gone."""
    from understudy.distiller.commands import EXIT_BUSY
    from understudy.storage.distill_queries import get_lock

    def holder() -> dict[str, Any] | None:
        db = _registry(shared)
        try:
            return get_lock(db, TASK)
        finally:
            db.conn.close()

    def holds(proc: subprocess.Popen[str]) -> bool:
        lock = holder()
        return lock is not None and lock["pid"] == proc.pid and lock.get("run_id") is not None

    long_run = {"UNDERSTUDY_DISTILLER_TRAIN_EPOCHS": "100000"}  # still training when killed
    first = understudy(shared, "distill", "run", "--task", TASK, env=long_run)
    third: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: holds(first), timeout=60, what="the first run to take the lock")
        db = _registry(shared)
        try:  # as a worker in another container: its process cannot be looked up from here
            with db.conn:
                db.execute("update distill_locks set host = ? where task = ?", [OTHER_HOST, TASK])
        finally:
            db.conn.close()
        lock = holder()
        run_id, expires_at = lock["run_id"], lock["expires_at"]

        code, _, err = finished(understudy(shared, "distill", "run", "--task", TASK), 60)
        assert code == EXIT_BUSY, err
        assert (
            f"run of task {TASK!r} is already going (run {run_id}, pid {first.pid} on {OTHER_HOST})"
            in err
        )
        assert first.poll() is None  # refused, not taken over

        first.kill()
        first.wait()
        third = understudy(shared, "distill", "run", "--task", TASK, env=long_run)
        wait_for(lambda: holds(third), timeout=60, what="the next run to take the lock")
        assert time.time() < expires_at  # not by the row's expiry
        db = _registry(shared)
        try:  # the killed worker's run is over, not left "running" until the row expires
            (status,) = db.execute(
                "select status from distill_runs where id = ?", [run_id]
            ).fetchone()
        finally:
            db.conn.close()
        assert status == "failed"
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
