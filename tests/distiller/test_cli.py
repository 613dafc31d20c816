import argparse
import json
import types

import pytest

from distiller.cli import EXIT_BUSY, register
from distiller.config import DatasetConfig, DistillConfig
from distiller.lock import TaskLock
from storage.distill_queries import list_golden
from storage.registry import champion, promote, register_model
from tests.distiller.conftest import log_intents


@pytest.fixture
def cli(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="understudy")
    sub = parser.add_subparsers(dest="command", required=True)
    settings = types.SimpleNamespace(
        data_dir=tmp_path, distiller=DistillConfig(dataset=DatasetConfig(min_examples=10_000))
    )
    register(sub, lambda args: settings)

    def run(*argv):
        args = parser.parse_args(argv)
        code = args.func(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_golden_add_list_and_remove(cli, db):
    code, out, _ = cli(
        "golden",
        "add",
        "--task",
        "intent",
        "--input",
        "I lost my card",
        "--expected",
        "lost_card",
        "--note",
        "must never regress",
    )
    assert code == 0 and "golden example 1 added" in out
    messages = json.dumps([{"role": "user", "content": "top me up"}])
    assert (
        cli("golden", "add", "--task", "intent", "--input", messages, "--expected", "top_up")[0]
        == 0
    )
    assert cli("golden", "add", "--task", "intent", "--input", "[1, 2]", "--expected", "x")[0] == 2

    rows = list_golden(db, "intent")
    assert [r["input"] for r in rows] == [
        "I lost my card",
        [{"role": "user", "content": "top me up"}],
    ]
    code, out, _ = cli("golden", "list", "--task", "intent")
    assert "'I lost my card' -> 'lost_card'" in out
    code, out, _ = cli("golden", "list", "--json")
    assert json.loads(out)[0]["note"] == "must never regress"
    assert cli("golden", "remove", "1")[0] == 0
    assert cli("golden", "remove", "1")[0] == 1
    assert len(list_golden(db, "intent")) == 1


def test_distill_run_then_history_as_table_and_json(cli, db):
    log_intents(db, "intent", 12)
    code, out, _ = cli("distill", "run", "--task", "intent", "--json")
    outcome = json.loads(out)
    assert code == 0 and outcome["status"] == "skipped"

    code, out, _ = cli("distill", "history", "--task", "intent")
    assert code == 0
    assert outcome["run_id"] in out and "skipped" in out and "manual" in out
    assert "why: 12 usable examples < min_examples 10000" in out

    code, out, _ = cli("distill", "history", "--task", "intent", "--json")
    (run,) = json.loads(out)
    assert run["id"] == outcome["run_id"] and run["dataset"]["examples"] == 12
    assert cli("distill", "history", "--task", "nothing")[1] == "no distillation runs yet\n"


def test_history_shows_each_gate_with_value_threshold_and_verdict(cli, db):
    gates = [
        {"name": "agreement", "value": 0.91, "threshold": 0.7, "passed": True, "detail": ""},
        {"name": "golden", "value": 0.5, "threshold": 1.0, "passed": False, "detail": "1/2"},
    ]
    with db.conn:
        db["distill_runs"].insert(
            {
                "id": "r1",
                "task": "intent",
                "started_at": 1e9,
                "finished_at": 1e9 + 42,
                "status": "succeeded",
                "trigger": "cron",
                "reason": "golden 0.500 < 1.000",
                "dataset_json": json.dumps({"train": 900, "eval": 100}),
                "gates_json": json.dumps(gates),
                "promoted": 0,
            }
        )
    out = cli("distill", "history", "--task", "intent")[1]
    assert "2001-09-09 01:46:40  42s   succeeded  cron     900    100   no" in out
    assert "agreement          0.910 (threshold 0.700)  pass" in out
    assert "golden             0.500 (threshold 1.000)  FAIL  1/2" in out
    assert "why: golden 0.500 < 1.000" in out


def test_a_run_while_another_holds_the_task_exits_busy(cli, db, tmp_path):
    with TaskLock(tmp_path / "understudy.db", "intent"):
        code, _, err = cli("distill", "run", "--task", "intent")
    assert code == EXIT_BUSY and "already going" in err


def test_rollback_switches_to_the_previous_champion(cli, db):
    assert cli("rollback", "--task", "intent")[0] == 1
    v1 = register_model(db, "intent", base="tiny")
    v2 = register_model(db, "intent", base="tiny")
    promote(db, v1.id)
    promote(db, v2.id)
    code, out, _ = cli("rollback", "--task", "intent")
    assert code == 0 and "intent@v1 serves again (was intent@v2)" in out
    assert champion(db, "intent").id == "intent@v1"
