import dataclasses

import pytest

from understudy.config_reader import field_docs
from understudy.distiller.config import DistillConfig, TrainConfig


def test_every_setting_has_a_default_and_a_docstring():
    docs = field_docs(DistillConfig)
    config = DistillConfig()
    for section in ("dataset", "augment", "train", "gates", "schedule"):
        for f in dataclasses.fields(getattr(config, section)):
            assert docs.get(f"{section}.{f.name}"), f"{section}.{f.name} has no docstring"
    assert docs["keep_rejected_weights"] and docs["tasks"]


def test_defaults_are_lora_and_tiny_students_are_documented():
    config = DistillConfig()
    assert config.train.method == "lora" and config.train.isolation == "process"
    assert 'method = "full"' in TrainConfig.__doc__
    assert "full" in field_docs(DistillConfig)["train.method"]


def test_a_table_builds_the_config_and_task_overrides_apply_per_task():
    config = DistillConfig.from_mapping(
        {
            "train": {"method": "full", "epochs": 6, "base_model": "tiny"},
            "gates": {"min_agreement": 0.8},
            "tasks": {"intent": {"gates": {"min_agreement": 0.95}, "train": {"epochs": 2}}},
        }
    )
    assert config.train.epochs == 6.0 and isinstance(config.train.epochs, float)
    intent = config.for_task("intent")
    assert (intent.gates.min_agreement, intent.train.epochs) == (0.95, 2.0)
    assert intent.train.method == "full"
    assert config.for_task("other").gates.min_agreement == 0.8


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"trian": {}}, "distiller.trian"),
        ({"train": {"epoch": 3}}, "distiller.train.epoch"),
        ({"train": {"epochs": "three"}}, "distiller.train.epochs"),
        ({"train": {"method": "qlora-ish"}}, "train.method"),
        ({"train": {"warm_start_epochs": 0}}, "train.warm_start_epochs"),
        ({"train": {"warm_start_lr_scale": 1.5}}, "train.warm_start_lr_scale"),
        ({"tasks": {"t": {"gates": {"min_agrement": 1}}}}, "distiller.tasks.t.gates.min_agrement"),
        ({"tasks": {"t": {"train": {"epochs": "two"}}}}, "distiller.tasks.t.train.epochs"),
        ({"tasks": {"t": {"train": {"epochs": 0}}}}, "distiller.tasks.t.train.epochs"),
        ({"tasks": {"t": {"tasks": {}}}}, "distiller.tasks.t.tasks"),
    ],
)
def test_bad_settings_are_rejected_with_their_name(table, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        DistillConfig.from_mapping(table)


def test_importing_the_distiller_loads_no_ml_library():
    import subprocess
    import sys

    code = (
        "import sys, understudy.distiller, understudy.distiller.cli, understudy.distiller.train\n"
        "import understudy.distiller.worker\n"
        "print([m for m in ('torch', 'transformers', 'trl', 'peft', 'sklearn', 'apscheduler')"
        " if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _fit_target(settings) -> float:
    """The quality target the distiller fits the router with, as ``distill run`` gets it."""
    from understudy.distiller.calibrate import calibrate_router
    from understudy.distiller.commands import distill_settings
    from understudy.distiller.evaluate import ModelEval
    from understudy.router.features import Features

    _, config = distill_settings(settings)
    agreed = [True] * 30
    features = [Features(-0.1, -0.1, 0.9, 0.9, 0.5, 1).to_dict()] * 30
    candidate = ModelEval(agreed, agreed, features, ["a"] * 30)
    router, _ = calibrate_router(candidate, "label", config.for_task("intent").gates)
    return router.quality_target


def test_the_router_target_alone_is_the_target_the_threshold_is_fitted_with(tmp_path):
    from understudy.settings import load_settings

    cfg = tmp_path / "u.toml"
    cfg.write_text("[router]\nquality_target = 0.8\n")
    assert _fit_target(load_settings(cfg, env={})) == 0.8
    env = {"UNDERSTUDY_ROUTER_QUALITY_TARGET": "0.85"}
    assert _fit_target(load_settings(env=env)) == 0.85


def test_the_distiller_target_is_an_alias_that_must_agree_with_the_router(tmp_path):
    from understudy.config_reader import ConfigError
    from understudy.settings import load_settings

    alone = tmp_path / "alone.toml"
    alone.write_text("[distiller.gates]\nquality_target = 0.9\n")
    settings = load_settings(alone, env={})
    assert settings.router.quality_target == 0.9 and _fit_target(settings) == 0.9
    both = tmp_path / "both.toml"
    both.write_text("[router]\nquality_target = 0.8\n[distiller.gates]\nquality_target = 0.9\n")
    with pytest.raises(
        ConfigError,
        match=r"distiller\.gates\.quality_target \(0\.9\).*"
        r"router\.quality_target \(0\.8\)",
    ):
        load_settings(both, env={})
    same = tmp_path / "same.toml"
    same.write_text("[router]\nquality_target = 0.8\n[distiller.gates]\nquality_target = 0.8\n")
    assert _fit_target(load_settings(same, env={})) == 0.8


def test_a_task_override_gives_that_task_its_own_target(tmp_path):
    from understudy.settings import load_settings

    cfg = tmp_path / "u.toml"
    cfg.write_text(
        "[router]\nquality_target = 0.8\n[distiller.tasks.intent.gates]\nquality_target = 0.95\n"
    )
    assert _fit_target(load_settings(cfg, env={})) == 0.95
