from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import iter_setting_docs, load_settings


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
