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


def test_a_tiny_student_leaves_its_tasks_fixed_system_prompt_out_of_every_sequence(tmp_path):
    from transformers import AutoTokenizer

    from understudy.distiller.sequences import fit_sequences
    from understudy.distiller.train import training_rows

    config = TrainConfig(base_model="tiny", method="full", tiny_hidden=32, tiny_layers=1)
    data = examples(40)
    implied = AutoTokenizer.from_pretrained(build_tiny_base(tmp_path / "a", data, config))
    kept = AutoTokenizer.from_pretrained(
        build_tiny_base(tmp_path / "b", data, replace(config, tiny_implied_system=False))
    )
    user = [{"role": "user", "content": "my card has not arrived"}]
    system = [{"role": "system", "content": SYSTEM}]

    def render(tokenizer, messages):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # Training, evaluation and serving all render through the saved template.
    assert render(implied, system + user) == render(implied, user)
    assert SYSTEM in render(kept, system + user)
    other = [{"role": "system", "content": "Answer in French."}]
    assert "Answer in French." in render(implied, other + user)  # another prompt is kept
    shorter = fit_sequences(training_rows(data), implied, 128).rows
    longer = fit_sequences(training_rows(data), kept, 128).rows
    tokens = [sum(len(r["input_ids"]) for r in rows) for rows in (shorter, longer)]
    assert tokens[0] < 0.8 * tokens[1]


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


def long_examples(n: int, words: int = 300) -> list[Example]:
    """Reviews far longer than ``max_length``, each with a one-word answer."""
    filler = " ".join(["the film goes on and on with more scenes"] * (words // 10))
    return [
        Example(
            str(i),
            i,
            label,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{filler} and in the end {text}"},
            ],
        )
        for i, (text, label) in enumerate(intent_messages(n))
    ]


def test_long_prompts_keep_their_end_and_whole_answer_and_are_all_trained_on(
    tmp_path, tiny_base, caplog
):
    """trl cut the end off long sequences (the answer with it) and dropped them as fully
    masked, while the run logged every example as trained on."""
    from transformers import AutoTokenizer

    from understudy.distiller.sequences import fit_sequences
    from understudy.distiller.train import training_rows

    data = long_examples(16)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    fitted = fit_sequences(training_rows(data), tokenizer, max_length=64)
    assert len(fitted.rows) == 16 and fitted.shortened == 16
    for row, ex in zip(fitted.rows, data, strict=True):
        assert len(row["input_ids"]) == 64
        answer = [t for t, m in zip(row["input_ids"], row["completion_mask"], strict=True) if m]
        assert tokenizer.decode(answer).startswith(ex.answer)  # the whole answer, then <|im_end|>
        prompt = tokenizer.decode(row["input_ids"][: len(row["input_ids"]) - len(answer)])
        assert prompt.endswith(
            f"in the end {ex.prompt_text().rsplit('in the end ', 1)[1]}"
            "<|im_end|>\n<|im_start|>assistant\n"
        )

    config = TrainConfig(
        base_model=tiny_base, method="full", epochs=1, max_length=64, batch_size=8, device="cpu"
    )
    with caplog.at_level("INFO", logger="understudy.distiller"):
        result = train_candidate(data, config, tmp_path / "out")
    assert (result.trained_examples, result.shortened_prompts, result.steps) == (16, 16, 2)
    assert "training on 16 of 16 examples (max_length 64: 16 prompts shortened" in caplog.text


def test_an_answer_longer_than_max_length_is_left_out_and_counted(tmp_path, tiny_base):
    data = examples(8)
    data[0] = Example("long", 0, " ".join(["card_arrival"] * 80), messages=data[0].messages)
    config = TrainConfig(
        base_model=tiny_base, method="full", epochs=1, max_length=48, batch_size=8, device="cpu"
    )
    result = train_candidate(data, config, tmp_path / "out")
    assert result.examples == 8 and result.trained_examples == 7


def test_a_tiny_students_context_is_a_setting_and_long_prompts_keep_their_end(tmp_path):
    from transformers import AutoModelForCausalLM

    from understudy.distiller.generate import StudentRunner

    config = TrainConfig(
        base_model="tiny", method="full", tiny_hidden=32, tiny_layers=1, tiny_context=96
    )
    path = build_tiny_base(tmp_path / "base", long_examples(8), config)
    assert AutoModelForCausalLM.from_pretrained(path).config.max_position_embeddings == 96

    runner = StudentRunner(str(path), device="cpu")
    long_prompt = Prompt(messages=long_examples(1, words=600)[0].messages)
    (gen,) = runner.generate([long_prompt], max_new_tokens=8)  # no "context" error
    assert 1 <= len(gen.logprobs) <= 8  # an answer, not the empty one of a refused prompt


def test_the_example_budget_caps_the_steps_whatever_the_epochs(tmp_path, tiny_base):
    """A large log trains fewer passes: 16 examples, 4 epochs of batch 8 would be 8 steps;
    a budget of 24 examples is 3 steps (1.5 passes). Below the budget nothing changes."""
    data = examples(16)
    config = TrainConfig(base_model=tiny_base, method="full", epochs=4, batch_size=8, device="cpu")
    capped = train_candidate(data, replace(config, example_budget=24), tmp_path / "capped")
    assert (capped.steps, capped.epochs) == (3, 1.5)
    roomy = train_candidate(data, replace(config, example_budget=64), tmp_path / "roomy")
    assert (roomy.steps, roomy.epochs) == (8, 4)


def test_length_grouped_batches_pad_less_than_random_ones(tiny_base):
    """Each batch is padded to its longest example: grouping by length leaves little
    padding where random batches of short and long examples waste much of each step."""
    from transformers import AutoTokenizer

    from understudy.distiller.train import padded_batches

    short, long = examples(32), long_examples(32, words=40)
    mixed = [ex for pair in zip(short, long, strict=True) for ex in pair]
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    config = TrainConfig(base_model=tiny_base, method="full", batch_size=8, device="cpu")

    def padding(grouped: bool) -> float:
        batches = padded_batches(mixed, replace(config, length_grouped=grouped), tokenizer)
        real = sum(sum(len(ids) for ids in batch) for batch in batches)
        padded = sum(max(len(ids) for ids in batch) * len(batch) for batch in batches)
        assert sum(len(batch) for batch in batches) == 64  # every example, once
        return padded / real - 1

    grouped, random = padding(grouped=True), padding(grouped=False)
    assert grouped < 0.2 and grouped < random / 2, (grouped, random)


@pytest.mark.parametrize("answer_only", [True, False])
def test_padding_free_training_computes_no_padding_and_trains_the_same_model(
    tmp_path, tiny_base, answer_only
):
    """A batch of short and long examples is one row of its examples end to end: no padding
    is computed, yet each example attends only to itself at its own positions, so the
    losses and the trained weights are the padded batches' (loss on the answer or on the
    whole sequence)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from understudy.distiller.sequences import fit_sequences
    from understudy.distiller.train import _sft_args, _sft_trainer, training_rows

    short, long = examples(16), long_examples(16, words=40)
    mixed = [ex for pair in zip(short, long, strict=True) for ex in pair]
    config = TrainConfig(
        base_model=tiny_base,
        method="full",
        epochs=1,
        batch_size=8,
        learning_rate=3e-3,
        completion_only_loss=answer_only,
        logging_steps=1,
        device="cpu",
    )
    assert config.padding_free  # the default

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    rows = fit_sequences(training_rows(mixed), tokenizer, config.max_length).rows
    args = _sft_args(config, tmp_path / "args", 1.0, 3e-3, config.max_length, "cpu")
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    batch = next(iter(_sft_trainer(model, tokenizer, rows, config, args).get_train_dataloader()))
    lengths = sorted(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    assert (batch["position_ids"] == 0).sum() == 8  # 8 examples, each from position 0
    assert lengths[0] * 8 <= batch["input_ids"].shape[1] < lengths[-1] * 8  # short and long

    padded = train_candidate(mixed, replace(config, padding_free=False), tmp_path / "padded")
    free = train_candidate(mixed, config, tmp_path / "free")
    assert free.steps == padded.steps == 4
    assert free.padding_free and not padded.padding_free

    def losses(result):
        return [h["loss"] for h in result.log_history if "loss" in h]

    assert len(losses(free)) == 4
    assert losses(free) == pytest.approx(losses(padded), rel=1e-4)
    a = AutoModelForCausalLM.from_pretrained(free.model_path).state_dict()
    b = AutoModelForCausalLM.from_pretrained(padded.model_path).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_a_model_that_mixes_packed_examples_trains_with_padded_batches(tmp_path, tiny_base, caplog):
    """Padding-free batches need a model that keeps each packed example to itself. The tiny
    Llama and a Qwen3 do; an OPT attends across the examples of a row, so a run on an OPT
    base trains with padded batches and says so, rather than teach each example its
    neighbours' tokens."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from understudy.distiller.train import keeps_packed_examples_apart

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    small = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_attention_heads": 2}
    qwen = transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(
            **small, num_hidden_layers=1, num_key_value_heads=1, intermediate_size=64, head_dim=16
        )
    )
    opt = transformers.OPTForCausalLM(
        transformers.OPTConfig(
            **small,
            num_hidden_layers=1,
            ffn_dim=64,
            word_embed_proj_dim=32,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    assert keeps_packed_examples_apart(AutoModelForCausalLM.from_pretrained(tiny_base))
    assert keeps_packed_examples_apart(qwen)
    assert not keeps_packed_examples_apart(opt)
    assert opt.training  # the check leaves the model as it found it

    opt.save_pretrained(tmp_path / "opt")
    tokenizer.save_pretrained(tmp_path / "opt")
    config = TrainConfig(
        base_model=str(tmp_path / "opt"), method="full", epochs=1, batch_size=8, device="cpu"
    )
    assert config.padding_free
    with caplog.at_level("WARNING", logger="understudy.distiller"):
        result = train_candidate(examples(16), config, tmp_path / "out")
    assert result.steps == 2 and not result.padding_free
    assert "attends across the examples of a packed row" in caplog.text


def test_evaluation_stops_a_batch_at_its_answers_end_not_at_max_new_tokens(tiny_base):
    """Label answers are a few tokens: a batch is done once every row has ended its turn, so
    evaluating with a generous ``max_new_tokens`` costs no more model calls than the answers
    need."""
    runner = StudentRunner(tiny_base, device="cpu")
    model, end = runner.generator.model, runner.generator.stop_ids[0]
    calls: list[int] = []

    def end_after_two_tokens(module, inputs, logits):
        calls.append(1)
        if len(calls) > 2:  # the prefill gives the first token, the next call the second
            logits[..., end] += 1e4
        return logits

    model.lm_head.register_forward_hook(end_after_two_tokens)
    prompts = [Prompt([{"role": "user", "content": f"query {i}"}]) for i in range(8)]
    gens = runner.generate(prompts, max_new_tokens=64, batch_size=8)
    assert len(calls) == 3
    assert all(len(g.logprobs) == 2 and g.finish_reason == "stop" for g in gens)
