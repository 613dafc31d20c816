from pathlib import Path

import pytest

from understudy.config_reader import ConfigError
from understudy.router.config import RouterConfig
from understudy.settings import iter_setting_docs, load_settings
from understudy.storage.config import StorageConfig
from understudy.student.config import StudentConfig


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert (s.host, s.port, s.data_dir) == ("127.0.0.1", 8000, Path("understudy-data"))
    assert s.api_keys == [] and s.teacher.api_key is None
    assert s.storage.commit_interval_ms <= 100


def test_file_then_env_then_overrides(tmp_path):
    cfg = tmp_path / "u.toml"
    cfg.write_text(
        'port = 9000\napi_keys = ["k1"]\n[teacher]\nurl = "http://up/v1"\nmax_retries = 5\n'
        '[routes]\nsupport-bot = "support"\n'
    )
    s = load_settings(
        cfg,
        env={"UNDERSTUDY_PORT": "9100", "UNDERSTUDY_TEACHER_API_KEY": "sk"},
        overrides={"host": "0.0.0.0", "port": None},
    )
    assert s.port == 9100  # env beats file; a None override changes nothing
    assert s.host == "0.0.0.0"
    assert s.teacher.url == "http://up/v1" and s.teacher.max_retries == 5
    assert s.teacher.api_key == "sk"
    assert s.routes == {"support-bot": "support"} and s.api_keys == ["k1"]


def test_env_parsing_of_lists_bools_and_tables():
    s = load_settings(
        env={
            "UNDERSTUDY_API_KEYS": "a, b,,c",
            "UNDERSTUDY_TEACHER_PASS_THROUGH_AUTH": "yes",
            "UNDERSTUDY_ROUTES": "m1=t1,m2=t2",
        }
    )
    assert s.api_keys == ["a", "b", "c"]
    assert s.teacher.pass_through_auth is True
    assert s.routes == {"m1": "t1", "m2": "t2"}


def test_an_empty_variable_unsets_an_optional_setting_and_numbers_may_be_padded():
    s = load_settings(env={"UNDERSTUDY_TEACHER_API_KEY": "", "UNDERSTUDY_PORT": " 8100 "})
    assert s.teacher.api_key is None and s.port == 8100


def test_each_section_checks_itself_by_its_full_name():
    with pytest.raises(ValueError, match=r"router\.drift_window"):
        RouterConfig(drift_window=0).validate()
    with pytest.raises(ValueError, match=r"storage\.batch_size"):
        StorageConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match=r"student\.backend"):
        StudentConfig(backend="gpu").validate()


def test_the_reader_is_a_leaf_that_imports_no_part():
    import subprocess
    import sys

    code = (
        "import sys, understudy.config_reader\n"
        "print(sorted(m for m in sys.modules if m.startswith('understudy.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['understudy.config_reader']"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus = 1\n", "bogus"),
        ("[teacher]\nurll = 'x'\n", "teacher.urll"),
        ("[nosuch]\na = 1\n", "nosuch"),
    ],
)
def test_unknown_key_in_file_is_named(tmp_path, text, key):
    cfg = tmp_path / "u.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=f"unknown setting {key}"):
        load_settings(cfg, env={})


def test_unknown_env_var_is_named():
    with pytest.raises(ConfigError, match="UNDERSTUDY_TEACHR_URL"):
        load_settings(env={"UNDERSTUDY_TEACHR_URL": "http://x"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UNDERSTUDY_PORT": "eighty"}, "port"),
        ({"UNDERSTUDY_PORT": "70000"}, "port"),
        ({"UNDERSTUDY_TEACHER_URL": "ftp://x"}, "teacher.url"),
        ({"UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS": "500"}, "commit_interval_ms"),
        ({"UNDERSTUDY_TEACHER_PASS_THROUGH_AUTH": "maybe"}, "pass_through_auth"),
        ({"UNDERSTUDY_ROUTES": "m=bad name!"}, "routes.m"),
        # A router the gateway could not build would leave every student unloaded.
        ({"UNDERSTUDY_ROUTER_DRIFT_MIN_SAMPLES": "500"}, "router.drift_min_samples"),
        ({"UNDERSTUDY_ROUTER_DRIFT_MARGIN": "-0.1"}, "router.drift_margin"),
        ({"UNDERSTUDY_ROUTER_DRIFT_CONFIDENCE": "1"}, "router.drift_confidence"),
    ],
)
def test_bad_values_are_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_wrong_type_in_file(tmp_path):
    cfg = tmp_path / "u.toml"
    cfg.write_text('port = "8000"\n')
    with pytest.raises(ConfigError, match="port"):
        load_settings(cfg, env={})


def test_bad_toml_and_missing_file(tmp_path):
    cfg = tmp_path / "u.toml"
    cfg.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", env={})


def test_every_setting_is_documented_in_code():
    rows = iter_setting_docs()
    assert {r[0] for r in rows} >= {
        "host",
        "port",
        "teacher.url",
        "teacher.api_key",
        "storage.queue_size",
        "api_keys",
    }
    assert all(r[3] for r in rows), [r[0] for r in rows if not r[3]]


DISTILLER_TOML = """
[distiller]
keep_rejected_weights = true

[distiller.train]
base_model = "tiny"
method = "full"
epochs = 6
lora_target_modules = ["q_proj", "v_proj"]

[distiller.gates]
min_agreement = 0.8

[distiller.schedule]
cron = "0 4 * * *"
timezone = "Europe/Paris"

[distiller.tasks.intent.gates]
min_agreement = 0.95
"""


def test_distiller_settings_from_the_file_with_per_task_overrides(tmp_path):
    cfg = tmp_path / "u.toml"
    cfg.write_text(DISTILLER_TOML)
    d = load_settings(cfg, env={}).distiller
    assert d.keep_rejected_weights is True
    assert (d.train.base_model, d.train.method, d.train.epochs) == ("tiny", "full", 6.0)
    assert d.train.lora_target_modules == ["q_proj", "v_proj"]
    assert (d.schedule.cron, d.schedule.timezone) == ("0 4 * * *", "Europe/Paris")
    assert d.schedule.in_gateway is False
    assert d.gates.min_agreement == 0.8
    assert d.for_task("intent").gates.min_agreement == 0.95
    assert d.for_task("other").gates.min_agreement == 0.8


def test_distiller_settings_from_env_beat_the_file(tmp_path):
    cfg = tmp_path / "u.toml"
    cfg.write_text(DISTILLER_TOML)
    d = load_settings(
        cfg,
        env={
            "UNDERSTUDY_DISTILLER_TRAIN_EPOCHS": "2.5",
            "UNDERSTUDY_DISTILLER_TRAIN_LORA_R": "8",  # underscores inside the key name
            "UNDERSTUDY_DISTILLER_SCHEDULE_CRON": "*/5 * * * *",
            "UNDERSTUDY_DISTILLER_SCHEDULE_IN_GATEWAY": "true",
            "UNDERSTUDY_DISTILLER_SCHEDULE_NEW_EXAMPLES_TRIGGER": "0",
            "UNDERSTUDY_DISTILLER_SCHEDULE_FIRST_STUDENT_TRIGGER": "100",
            "UNDERSTUDY_DISTILLER_DATASET_SCRUB_PII": "email,phone",
            "UNDERSTUDY_DISTILLER_KEEP_REJECTED_WEIGHTS": "no",
        },
    ).distiller
    assert d.train.epochs == 2.5 and d.train.lora_r == 8 and d.train.method == "full"
    assert d.schedule.cron == "*/5 * * * *" and d.schedule.in_gateway is True
    assert d.schedule.new_examples_trigger == 0 and d.schedule.first_student_trigger == 100
    assert d.dataset.scrub_pii == ["email", "phone"]
    assert d.keep_rejected_weights is False


def test_distiller_settings_from_command_line_overrides():
    s = load_settings(env={}, overrides={"distiller.schedule.in_gateway": True})
    assert s.distiller.schedule.in_gateway is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[distiller.train]\nepoch = 3\n", "unknown setting distiller.train.epoch"),
        ("[distiller]\ntrian = 1\n", "unknown setting distiller.trian"),
        ("[distiller.schedule]\ncorn = '0 3 * * *'\n", "unknown setting distiller.schedule.corn"),
        (
            "[distiller.tasks.intent.gates]\nmin_agrement = 0.9\n",
            "unknown setting distiller.tasks.intent.gates.min_agrement",
        ),
        ("[distiller.train]\nepochs = 'six'\n", "distiller.train.epochs"),
        ("[distiller.train]\nmethod = 'qlora-ish'\n", "distiller.train.method"),
        ("[distiller.tasks.intent.train]\nepochs = -1\n", "distiller.tasks.intent.train.epochs"),
        ("[distiller.tasks.'bad name']\n", "invalid task name"),
    ],
)
def test_a_bad_distiller_setting_in_the_file_is_named(tmp_path, text, message):
    cfg = tmp_path / "u.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(cfg, env={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UNDERSTUDY_DISTILLER_TRAIN_EPOCH": "3"}, "UNDERSTUDY_DISTILLER_TRAIN_EPOCH$"),
        ({"UNDERSTUDY_DISTILLER_TRAIN_EPOCHS": "six"}, "distiller.train.epochs"),
        ({"UNDERSTUDY_DISTILLER_GATES_KIND": "vibes"}, "distiller.gates.kind"),
        ({"UNDERSTUDY_DISTILLER_TASKS": "intent"}, "config file only"),
    ],
)
def test_a_bad_distiller_variable_is_named(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_every_setting_has_its_own_environment_variable():
    rows = iter_setting_docs()
    keys = {r[0] for r in rows}
    assert {"distiller.train.epochs", "distiller.schedule.in_gateway", "distiller.tasks"} <= keys
    envs = [r[1] for r in rows if r[1]]
    assert len(envs) == len(set(envs))
    by_key = {r[0]: r[1] for r in rows}
    assert by_key["distiller.train.lora_r"] == "UNDERSTUDY_DISTILLER_TRAIN_LORA_R"
    assert by_key["distiller.tasks"] == ""  # nested tables are set in the file only
