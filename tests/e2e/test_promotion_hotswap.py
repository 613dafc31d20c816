"""Promotion, rollback and rejection as a running gateway sees them: no restart, ever.

The tests share one gateway and run in file order: v1 serves, a promoted v2 takes over, a
rollback brings v1 back, and a candidate the gates reject changes nothing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from tests.e2e.student_fixtures import (
    MODEL,
    TASK,
    Student,
    admin,
    chat,
    cli,
    client,
    distill,
    distill_config,
    gateway_config,
    log_teacher_traffic,
    start_gateway,
    start_teacher,
    train_student,
    wait_for,
    wait_until_student_serves,
)
from tests.gateway_process import GatewayProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Student]]:
    teacher = start_teacher()
    data_dir = tmp_path_factory.mktemp("hotswap") / "data"
    gateway = start_gateway(teacher, data_dir, gateway_config())
    try:
        log_teacher_traffic(gateway)
        student = train_student(data_dir)
        wait_until_student_serves(gateway, student.confident[0].text)
        yield gateway, student
    finally:
        gateway.stop()
        teacher.stop()


def version_served(gateway: GatewayProcess, text: str, *, swapping: bool = False) -> str | None:
    """The student version that answered ``text``. While a new version loads (``swapping``),
    the teacher may answer instead (None), as it does whenever the student cannot answer in
    time: the load and the answer share the cores of a busy machine. (Requests that chose the
    old model keep it loaded until they have their answers: before that, one unloaded under
    a request now and then sent it to the teacher.)"""
    raw = client(gateway).chat.completions.with_raw_response.create(
        model=MODEL, messages=chat(text)
    )
    if swapping and raw.headers["x-understudy-served-by"] == "teacher":
        return None
    assert raw.headers["x-understudy-served-by"] == "student"
    assert raw.parse().model == MODEL
    return raw.headers["x-understudy-student-version"]


def champion_of(gateway: GatewayProcess) -> str:
    from understudy.storage.registry import task_state

    with gateway.database() as db:
        return task_state(db, TASK).champion_id


def serving_since_of(gateway: GatewayProcess, model_id: str) -> float | None:
    from understudy.storage.distill_queries import serving_since

    with gateway.database() as db:
        return serving_since(db, TASK, model_id)


def promoted_at(gateway: GatewayProcess, model_id: str) -> float:
    from understudy.storage.registry import get_model

    with gateway.database() as db:
        return float(get_model(db, model_id).promoted_at)


def test_a_new_promotion_is_served_without_a_restart(served):
    from understudy.storage.registry import promote, register_model

    gateway, student = served
    text = student.confident[0].text
    assert version_served(gateway, text) == f"{TASK}@v1"
    pid = gateway.proc.pid

    weights = gateway.data_dir / "models" / TASK / "retrained"
    shutil.copytree(student.model_path, weights)
    with gateway.database() as db:
        v2 = register_model(db, TASK, base="tiny", model_path=str(weights), router=student.router)
        promote(db, v2.id)

    v2_serves = lambda: version_served(gateway, text, swapping=True) == f"{TASK}@v2"  # noqa: E731
    wait_for(v2_serves, what="v2 to serve")
    assert all(version_served(gateway, text) == f"{TASK}@v2" for _ in range(3))  # and only v2
    assert gateway.proc.pid == pid and gateway.proc.poll() is None
    assert "now served by banking@v2" in gateway.output()
    # Once loaded and switched in, the gateway notes when v2 began serving: the distiller's
    # count trigger counts teacher answers from there, not those sent while it loaded.
    wait_for(lambda: serving_since_of(gateway, v2.id) is not None, what="the serving event")
    assert serving_since_of(gateway, v2.id) >= promoted_at(gateway, v2.id)


def test_rollback_restores_the_previous_champion(served):
    gateway, student = served
    text = student.confident[0].text

    response = admin(gateway, "POST", f"/admin/tasks/{TASK}/rollback")
    assert response.status_code == 200, response.text
    assert (response.json()["champion"], response.json()["previous"]) == (f"{TASK}@v1", None)
    assert version_served(gateway, text) == f"{TASK}@v1"  # at once: the admin API applies it

    # A second rollback has nothing earlier to go to: it never re-promotes v2.
    response = admin(gateway, "POST", f"/admin/tasks/{TASK}/rollback")
    assert response.status_code == 404
    rollback = ["rollback", "--data-dir", str(gateway.data_dir), "--task", TASK]
    done = cli(*rollback, env=gateway.storage_env)
    assert done.returncode == 1 and "no earlier champion" in done.stderr
    assert version_served(gateway, text) == f"{TASK}@v1"
    assert champion_of(gateway) == f"{TASK}@v1"


def test_a_candidate_rejected_by_the_gates_leaves_serving_alone(served):
    gateway, student = served
    text = student.confident[0].text
    before = version_served(gateway, text)

    # One epoch at a tiny learning rate: a candidate that has learned nothing.
    outcome = distill(gateway.data_dir, distill_config(epochs=1, learning_rate=1e-5))

    assert outcome.status == "succeeded" and not outcome.promoted
    assert "agreement" in outcome.reason
    assert champion_of(gateway) == before
    for _ in range(3):  # several registry polls later, still the same student
        time.sleep(0.2)
        assert version_served(gateway, text) == before
