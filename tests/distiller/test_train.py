"""Training on its own: LoRA adapters on a tiny base, and the offline generation used by eval."""

from __future__ import annotations

import pytest

from distiller.config import TrainConfig
from distiller.dataset import Example
from distiller.generate import Prompt, StudentRunner
from distiller.train import build_tiny_base, train_candidate
from tests.distiller.conftest import SYSTEM, intent_messages

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


def test_lora_trains_an_adapter_that_loads_on_its_base(tmp_path, tiny_base):
    from safetensors.torch import load_file

    data = examples(48)
    lora = TrainConfig(
        base_model=tiny_base,
        method="lora",
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
        learning_rate=5e-3,
        epochs=1,
        device="cpu",
    )

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
