import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distiller.conftest import log_feedback, log_intents
from understudy.cli import main
from understudy.distiller.commands import EXIT_BUSY
from understudy.distiller.lock import TaskLock
from understudy.storage.distill_queries import list_golden
from understudy.storage.registry import champion, promote, register_model, task_state

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    """``understudy ...`` through the console script's entry point, with a data directory and
    settings from the environment, as a user runs it."""
    for name in [n for n in os.environ if n.startswith("UNDERSTUDY_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./understudy.toml is picked up
    monkeypatch.setenv("UNDERSTUDY_DISTILLER_DATASET_MIN_EXAMPLES", "10000")

    def run(*argv):
        words = 2 if argv[0] in ("distill", "golden") else 1
        code = main([*argv[:words], "--data-dir", str(tmp_path), *argv[words:]])
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
    log_intents(db, "fresh", 1)  # a task with traffic, never distilled
    assert cli("distill", "history", "--task", "fresh")[1] == "no distillation runs yet\n"


def test_history_shows_how_many_corrections_a_run_used(cli, db):
    ids = log_intents(db, "intent", 12)
    log_feedback(db, ids[3], correction="lost_card")
    log_feedback(db, ids[11], correction="top_up", reviewed=True)
    assert cli("distill", "run", "--task", "intent")[0] == 0
    out = cli("distill", "history", "--task", "intent")[1]
    assert "corrections: 2 from feedback (1 reviewed; unreviewed ones train only)" in out


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
                "metrics_json": json.dumps(
                    {"quality_target": 0.8, "confidence_levels": 37, "eval_examples": 100}
                ),
                "promoted": 0,
            }
        )
    out = cli("distill", "history", "--task", "intent")[1]
    assert "router: quality target 0.8, 37 confidence levels on 100 held-out answers" in out
    assert "2001-09-09 01:46:40  42s   rejected  cron     900    100   -" in out  # not "succeeded"
    assert "agreement  0.910  >= 0.700   pass" in out
    failed = "golden     0.500  >= 1.000   FAIL     share of golden examples passing 0.500 < 1.000"
    assert failed in out
    assert "why: golden: share of golden examples passing 0.500 < 1.000 (1/2)" in out
    run = json.loads(cli("distill", "history", "--task", "intent", "--json")[1])[0]
    assert run["outcome"] == "rejected"


def test_a_run_while_another_holds_the_task_exits_busy(cli, db, tmp_path):
    log_intents(db, "intent", 1)
    with TaskLock(tmp_path / "understudy.db", "intent"):
        code, _, err = cli("distill", "run", "--task", "intent")
    assert code == EXIT_BUSY and "already going" in err


def test_rollback_switches_to_the_previous_champion(cli, db):
    assert cli("rollback", "--task", "intent")[0] == 2  # a task never seen
    v1 = register_model(db, "intent", base="tiny")
    v2 = register_model(db, "intent", base="tiny")
    promote(db, v1.id)
    assert cli("rollback", "--task", "intent")[0] == 1  # no earlier champion
    promote(db, v2.id)
    code, out, _ = cli("rollback", "--task", "intent")
    assert code == 0 and "intent@v1 serves again (was intent@v2)" in out
    assert champion(db, "intent").id == "intent@v1"


def test_a_repeated_rollback_never_re_promotes_and_to_names_the_version(cli, db):
    v1, v2, v3 = (register_model(db, "intent", base="tiny") for _ in range(3))
    for v in (v1, v2, v3):
        promote(db, v.id)
    code, out, _ = cli("rollback", "--task", "intent", "--to", v1.id)
    assert code == 0 and "intent@v1 serves again (was intent@v3)" in out
    code, _, err = cli("rollback", "--task", "intent")
    assert code == 1 and "no earlier champion" in err
    assert champion(db, "intent").id == v1.id


@pytest.mark.parametrize(
    "argv",
    [
        ("distill", "run", "--task", "../../outside-data-dir"),
        ("distill", "history", "--task", "a/b"),
        ("mode", "--task", "../../../x", "shadow"),
        ("rollback", "--task", ".."),
        ("export", "--task", "A" * 65),
        ("golden", "add", "--task", "x y", "--input", "hi", "--expected", "x"),
    ],
)
def test_a_task_name_outside_the_rule_is_refused_by_every_command(cli, tmp_path, argv):
    before = {p for p in tmp_path.parent.rglob("*")}
    with pytest.raises(SystemExit) as exited:
        cli(*argv)
    assert exited.value.code == 2
    assert {p for p in tmp_path.parent.rglob("*")} == before  # no folder or database made


def test_the_config_file_reaches_the_distiller(cli, db, tmp_path, monkeypatch):
    monkeypatch.delenv("UNDERSTUDY_DISTILLER_DATASET_MIN_EXAMPLES")  # it would beat the file
    log_intents(db, "intent", 12)
    config = tmp_path / "distill.toml"
    config.write_text("[distiller.dataset]\nmin_examples = 500\n")
    code, out, _ = cli("distill", "run", "--task", "intent", "--config", str(config), "--json")
    assert code == 0
    assert json.loads(out)["reason"] == "12 usable examples < min_examples 500"


def test_a_bad_distiller_setting_stops_the_command_with_its_name(cli, db, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[distiller.train]\nepoch = 3\n")
    code, _, err = cli("distill", "history", "--task", "intent", "--config", str(config))
    assert code == 2 and "unknown setting distiller.train.epoch" in err


def test_tiny_model_builds_a_loadable_model_with_the_asked_sizes(tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("i lost my card\nwhere is my new card\n\ntop up with a bank transfer\n")
    target = tmp_path / "tiny"
    code = main(
        [
            "tiny-model",
            str(target),
            "--hidden",
            "64",
            "--layers",
            "1",
            "--vocab-size",
            "400",
            "--texts",
            str(texts),
        ]
    )
    assert code == 0 and f"tiny model written to {target}" in capsys.readouterr().out
    config = json.loads((target / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (64, 1)
    assert config["vocab_size"] <= 400
    vocab = json.loads((target / "tokenizer.json").read_text())["model"]["vocab"]
    assert "card" in vocab or "Ġcard" in vocab  # trained on the given texts

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["tiny-model", str(tmp_path / "none"), "--texts", str(empty)]) == 2


def test_the_installed_console_script_runs_the_commands(tmp_path, db):
    """``understudy`` as installed: golden add, mode and rollback end to end."""
    script = shutil.which("understudy", path=str(Path(sys.executable).parent))
    assert script, "the understudy console script is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    env["UNDERSTUDY_DATA_DIR"] = str(tmp_path)

    def understudy(*argv):
        done = subprocess.run(
            [script, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        return done.returncode, done.stdout + done.stderr

    code, out = understudy("golden", "add", "--task", "intent", "--input", "hi", "--expected", "x")
    assert code == 0 and "golden example 1 added to task intent" in out
    assert list_golden(db, "intent")[0]["expected"] == "x"

    code, out = understudy("mode", "--task", "intent", "shadow")
    assert code == 0 and task_state(db, "intent").mode == "shadow"

    v1 = register_model(db, "intent", base="tiny")
    promote(db, v1.id)
    promote(db, register_model(db, "intent", base="tiny").id)
    code, out = understudy("rollback", "--task", "intent")
    assert code == 0 and "intent@v1 serves again (was intent@v2)" in out
    assert champion(db, "intent").id == "intent@v1"
