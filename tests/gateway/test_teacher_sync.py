"""The blocking teacher call used for synthetic examples, against the stand-in teacher."""

import pickle

import pytest

from tests.distiller.conftest import log_intents
from tests.teacher_stub import CHAT, running_stub
from understudy.gateway.config import TeacherConfig
from understudy.gateway.teacher.sync import MAX_FAILURES_IN_A_ROW, SyncTeacher
from understudy.storage.database import open_database


@pytest.fixture(scope="module")
def stub():
    with running_stub(table={"I lost my card": "lost_card"}, model="teacher-1") as teacher:
        yield teacher


@pytest.fixture
def teacher_settings(stub):
    stub.control(reset=True)
    stub.clear()
    return TeacherConfig(url=stub.base_url, api_key="sk-test", backoff_s=0.01, timeout_s=5)


def test_asks_for_the_model_clients_use_most_and_retries_server_errors(
    stub, teacher_settings, tmp_path
):
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, "intent", 3)  # logged as requests for gpt-4o-mini
    db.conn.close()
    stub.control(fail_next=[500, 503])
    teacher = SyncTeacher(teacher_settings, db_path=tmp_path / "understudy.db")
    assert teacher([{"role": "user", "content": "I lost my card"}]) == "lost_card"
    bodies = stub.bodies(CHAT)
    assert len(bodies) == 3 and bodies[-1]["model"] == "gpt-4o-mini"
    assert stub.requests[-1]["headers"]["authorization"] == "Bearer sk-test"
    teacher.close()


def test_failures_give_empty_answers_then_stop_asking(stub, teacher_settings):
    stub.control(fail_always=400)
    teacher = SyncTeacher(teacher_settings, model="teacher-1")
    messages = [{"role": "user", "content": "I lost my card"}]
    assert [teacher(messages) for _ in range(MAX_FAILURES_IN_A_ROW + 2)] == [""] * 5
    assert len(stub.bodies(CHAT)) == MAX_FAILURES_IN_A_ROW  # 4xx are not retried
    teacher.close()


def test_without_a_model_or_a_log_it_refuses_without_calling(stub, teacher_settings, tmp_path):
    teacher = SyncTeacher(teacher_settings, db_path=tmp_path / "missing.db")
    assert teacher([{"role": "user", "content": "hi"}]) == ""
    assert stub.bodies(CHAT) == []


def test_it_travels_to_a_child_process_after_use(stub, teacher_settings):
    teacher = SyncTeacher(teacher_settings, model="teacher-1")
    assert teacher([{"role": "user", "content": "I lost my card"}]) == "lost_card"
    copy = pickle.loads(pickle.dumps(teacher))
    assert copy([{"role": "user", "content": "I lost my card"}]) == "lost_card"
    teacher.close()
    copy.close()


def test_a_refused_teacher_key_is_logged_once_naming_the_setting_and_never_the_key(
    stub, tmp_path, caplog
):
    key = "sk-synthetic-SECRET-0123456789"
    settings = TeacherConfig(url=stub.base_url, api_key=key, backoff_s=0.01, timeout_s=5)
    stub.control(misbehave_next=["echo_auth:401"])
    teacher = SyncTeacher(settings, model="teacher-1")
    with caplog.at_level("WARNING", logger="understudy.distiller"):
        assert teacher([{"role": "user", "content": "I lost my card"}]) == ""
    (record,) = caplog.records
    assert "401" in record.getMessage() and "UNDERSTUDY_TEACHER_API_KEY" in record.getMessage()
    assert key not in record.getMessage()
    teacher.close()
