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
