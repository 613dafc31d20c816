"""Training on its own: LoRA adapters on a tiny base, and the offline generation used by eval."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.distiller.conftest import SYSTEM, intent_messages
from understudy.distiller.config import TrainConfig
from understudy.distiller.dataset import Example
from understudy.distiller.generate import Prompt, StudentRunner
from understudy.distiller.train import build_tiny_base, train_candidate

pytestmark = pytest.mark.slow


def examples(n):
    return [
        Example(
            str(i),
            i,
            label,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        )
        for i, (text, label) in enumerate(intent_messages(n))
    ]


def lora_config(base: str) -> TrainConfig:
    """A small LoRA adapter on the attention projections of ``base``, one epoch."""
    return TrainConfig(
        base_model=base,
        method="lora",
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
        learning_rate=5e-3,
        epochs=1,
        device="cpu",
    )


def test_lora_trains_an_adapter_that_loads_on_its_base(tmp_path, tiny_base):
    from safetensors.torch import load_file

    data = examples(48)
    lora = lora_config(tiny_base)

    result = train_candidate(data, lora, tmp_path / "out", log_path=tmp_path / "progress.jsonl")

    assert result.model_path is None and result.base == tiny_base
    weights = load_file(f"{result.adapter_path}/adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: it trained
    assert result.steps == 3 and result.examples == 48
    assert '"step": 3' in (tmp_path / "progress.jsonl").read_text()

    runner = StudentRunner(result.base, result.adapter_path, device="cpu")
    (gen,) = runner.generate([Prompt(messages=data[0].messages)], max_new_tokens=4)
    assert gen.finish_reason in ("stop", "length")
    assert len(gen.logprobs) <= 4 and all(lp <= 0 for lp in gen.logprobs)
    assert len(gen.first_alternatives) == 5


def test_a_tiny_student_needs_full_fine_tuning(tmp_path):
    with pytest.raises(ValueError, match="method = 'full'"):
        train_candidate(examples(4), TrainConfig(base_model="tiny", method="lora"), tmp_path)


def test_a_tiny_base_is_built_from_scratch_with_a_tokenizer_for_the_task(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = TrainConfig(base_model="tiny", method="full", tiny_hidden=64, tiny_layers=1)
    path = build_tiny_base(tmp_path / "base", examples(40), config)

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 1
    assert tokenizer.chat_template
    assert len(tokenizer("card_arrival")["input_ids"]) <= 4  # learnt from the task's words


def _weights(path: str, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(f"{path}/{name}")


def test_a_warm_start_continues_from_the_champions_full_model(tmp_path, tiny_base):
    import torch

    data = examples(32)
    full = TrainConfig(
        base_model=tiny_base, method="full", learning_rate=3e-3, epochs=1, device="cpu"
    )
    first = train_candidate(data, full, tmp_path / "v1")
    frozen = replace(full, learning_rate=0.0, warm_start_epochs=2)

    second = train_candidate(
        data, frozen, tmp_path / "v2", warm_start={"id": "t@v1", "model_path": first.model_path}
    )

    assert second.warm_start_from == "t@v1" and second.steps == 4  # 2 passes of 2 batches
    before = _weights(first.model_path, "model.safetensors")
    after = _weights(second.model_path, "model.safetensors")
    base = _weights(tiny_base, "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # lr 0: v1's weights, kept
    assert any(not torch.equal(base[k], after[k]) for k in base)  # ... not the base's


def test_a_warm_start_continues_training_the_champions_adapter(tmp_path, tiny_base):
    import torch

    data = examples(32)
    lora = lora_config(tiny_base)
    first = train_candidate(data, lora, tmp_path / "v1")
    frozen = replace(lora, learning_rate=0.0)

    second = train_candidate(
        data, frozen, tmp_path / "v2", warm_start={"id": "t@v1", "adapter_path": first.adapter_path}
    )

    assert second.warm_start_from == "t@v1" and second.base == tiny_base and second.steps == 2
    before = _weights(first.adapter_path, "adapter_model.safetensors")
    after = _weights(second.adapter_path, "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any("lora_B" in k and after[k].abs().sum() > 0 for k in after)
