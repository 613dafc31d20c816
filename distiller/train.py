"""Step 3: fine-tune the student with trl's ``SFTTrainer`` (LoRA by default, or full).

Imports torch, transformers, trl and peft inside the functions: importing this module is cheap.
Run it in its own process (``understudy.distiller.worker``) so that nothing else stalls while it
trains.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from understudy.distiller.config import TrainConfig
from understudy.distiller.dataset import Example, common_system_prompt
from understudy.distiller.launch import (
    gpu_problem,
    is_main_process,
    local_rank,
    main_process_first,
    world_size,
)
from understudy.distiller.sequences import fit_sequences

log = logging.getLogger("understudy.distiller")


@dataclass
class TrainResult:
    """Where the trained weights are and how training went."""

    base: str
    """What the weights start from: a hub id or path (the tiny base built for this run)."""
    model_path: str | None
    """Full fine-tuning: the directory with the whole model and tokenizer."""
    adapter_path: str | None
    """LoRA: the directory with the adapter (load it on top of ``base``)."""
    examples: int
    """Examples given to training (repeats of up-weighted failure cases included)."""
    steps: int
    seconds: float
    examples_per_s: float
    final_loss: float | None
    warm_start_from: str | None = None
    """The champion whose weights training started from (``train.warm_start``), if any."""
    trained_examples: int | None = None
    """Examples actually trained on: those whose answer fits ``train.max_length``."""
    shortened_prompts: int = 0
    """Examples whose prompt lost its start to fit ``train.max_length`` (the answer is whole)."""
    epochs: float | None = None
    """Passes over the examples trained (fewer than ``train.epochs`` when
    ``train.example_budget`` cut them)."""
    processes: int = 1
    """Training processes (``train.num_processes``): each took ``batch_size`` per step."""
    setup_seconds: float | None = None
    """Seconds before the first step: tokenizer and model built or loaded, examples
    tokenised."""
    cpu_seconds: float | None = None
    """CPU seconds the training steps took in this process (wall ``seconds`` grows with
    whatever else shares the cores; this much less)."""
    padding_free: bool = False
    """Whether batches trained without padding (``train.padding_free``, and a model that
    keeps packed examples apart: :func:`keeps_packed_examples_apart`)."""
    log_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def weights(self) -> str:
        return self.model_path or self.base

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log_history"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainResult:
        """Inverse of :meth:`to_dict` (keys this version does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class WarmStart:
    """The champion's weights a run continues from (``train.warm_start``)."""

    id: str
    model_path: str | None = None
    """Full fine-tuning: the champion's whole model and tokenizer."""
    adapter_path: str | None = None
    """LoRA: the champion's adapter."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WarmStart:
        return cls(str(data["id"]), data.get("model_path"), data.get("adapter_path"))


def training_rows(examples: Sequence[Example]) -> list[dict[str, Any]]:
    """trl prompt-completion rows: conversational for chat examples, plain for completions."""
    rows = []
    for ex in examples:
        if ex.messages is not None:
            rows.append(
                {
                    "prompt": ex.messages,
                    "completion": [{"role": "assistant", "content": ex.answer}],
                }
            )
        else:
            rows.append({"prompt": ex.prompt or "", "completion": ex.answer})
    return rows


def build_tiny_base(path: Path, examples: Sequence[Example], config: TrainConfig) -> Path:
    """A small from-scratch Llama with a tokenizer trained on the task's conversations; its
    chat template leaves out the task's most common system prompt
    (``train.tiny_implied_system``)."""
    from understudy.student.tiny import build_tiny_model

    texts = [ex.prompt_text() + "\n" + ex.answer for ex in examples]
    return build_tiny_model(
        path,
        texts,
        hidden=config.tiny_hidden,
        layers=config.tiny_layers,
        vocab_size=config.tiny_vocab_size,
        max_positions=config.tiny_context,
        seed=config.seed,
        implied_system=common_system_prompt(examples) if config.tiny_implied_system else None,
    )


def train_candidate(
    examples: Sequence[Example],
    config: TrainConfig,
    output_dir: Path,
    *,
    log_path: Path | None = None,
    warm_start: WarmStart | Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train on ``examples`` (repeat an example to up-weight it) and save into ``output_dir``.

    ``warm_start`` (``id`` and ``model_path`` for ``full`` or ``adapter_path`` for ``lora``;
    a :class:`WarmStart` or its dict): start from a champion's weights and train
    ``config.warm_start_epochs`` passes at ``config.warm_start_lr_scale`` times the learning
    rate.
    """
    if config.base_model == "tiny" and config.method != "full":
        raise ValueError("a tiny from-scratch student needs train.method = 'full'")
    if not isinstance(warm_start, WarmStart):
        warm_start = WarmStart.from_dict(warm_start) if warm_start else None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    setup_started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    base = config.base_model
    epochs = config.warm_start_epochs if warm_start else config.epochs
    learning_rate = config.learning_rate * (config.warm_start_lr_scale if warm_start else 1.0)
    if warm_start and config.method == "full":
        base = str(warm_start.model_path)  # the champion's whole model and tokenizer
    device = _device(config.device)
    problem = gpu_problem(device, torch.cuda.device_count() if device == "cuda" else 0)
    if problem:
        raise ValueError(problem)
    if base == "tiny":
        base = str(_shared_tiny_base(output_dir / "base", examples, config, cpu=device == "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, **_load_kwargs(config, device))
    processes = world_size()
    config = _with_padding_free(config, model, base)
    max_length = _max_length(config, model)
    fitted = fit_sequences(training_rows(examples), tokenizer, max_length)
    if not fitted.rows:
        raise ValueError(
            f"no example fits train.max_length = {max_length} tokens: every answer is longer"
        )
    epochs = _within_budget(epochs, len(fitted.rows), config.example_budget)
    peft_config = None
    if config.method == "lora" and warm_start:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, warm_start.adapter_path, is_trainable=True)
    elif config.method == "lora":
        peft_config = _lora_config(config)
    if warm_start:
        log.info(
            "warm start from %s: %g epochs at learning rate %g",
            warm_start.id,
            epochs,
            learning_rate,
        )
    trainer = _sft_trainer(
        model,
        tokenizer,
        fitted.rows,
        config,
        _sft_args(config, output_dir, epochs, learning_rate, max_length, device),
        peft_config=peft_config,
        callbacks=[_progress_callback(log_path)],
    )
    trained = len(trainer.train_dataset)
    log.info(
        "training on %d of %d examples (max_length %d: %d prompts shortened to their end, "
        "%d left out with an answer longer than that)",
        trained,
        len(examples),
        max_length,
        fitted.shortened,
        len(examples) - trained,
    )
    if processes > 1:
        log.info("%d training processes, %d examples each per step", processes, config.batch_size)
    started = time.perf_counter()
    setup_seconds = round(started - setup_started, 2)
    cpu_started = time.process_time()
    output = trainer.train()
    seconds = time.perf_counter() - started
    cpu_seconds = round(time.process_time() - cpu_started, 2)
    final_dir = output_dir / ("adapter" if config.method == "lora" else "model")
    trainer.save_model(str(final_dir))  # by the first process only
    if is_main_process():
        tokenizer.save_pretrained(str(final_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seen = trained * epochs
    return TrainResult(
        base=base,
        model_path=str(final_dir) if config.method == "full" else None,
        adapter_path=str(final_dir) if config.method == "lora" else None,
        examples=len(examples),
        steps=int(output.global_step),
        seconds=round(seconds, 2),
        examples_per_s=round(seen / seconds, 1) if seconds else 0.0,
        final_loss=losses[-1] if losses else float(output.training_loss),
        warm_start_from=warm_start.id if warm_start else None,
        trained_examples=trained,
        shortened_prompts=fitted.shortened,
        epochs=round(epochs, 4),
        processes=processes,
        setup_seconds=setup_seconds,
        cpu_seconds=cpu_seconds,
        padding_free=config.padding_free,
        log_history=list(trainer.state.log_history),
    )


def keeps_packed_examples_apart(model: Any) -> bool:
    """Whether ``model`` can train on padding-free batches: given two examples end to end in
    one row, positions restarting at the second, the second gets the logits it gets alone.

    Models whose attention builds its mask from position ids do (Llama, Qwen, GPT-2,
    GPT-NeoX in transformers 5); others attend across the examples (OPT, BLOOM), which would
    train each example on its neighbours' tokens.
    """
    import torch

    vocab = int(model.get_input_embeddings().num_embeddings)
    weight = next(model.parameters())
    device = weight.device
    first = torch.arange(1, 9) % vocab
    second = torch.arange(9, 13) % vocab
    packed = torch.cat([first, second])[None].to(device)
    positions = torch.cat([torch.arange(len(first)), torch.arange(len(second))])[None].to(device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=second[None].to(device), use_cache=False).logits.float()
            together = model(input_ids=packed, position_ids=positions, use_cache=False).logits
    except (TypeError, ValueError, RuntimeError):  # no position_ids, or shapes it refuses
        return False
    finally:
        model.train(training)
    together = together[:, len(first) :].float()
    # float32 agrees to rounding; half precision to its few significant digits
    tolerance = 1e-4 if weight.dtype == torch.float32 else 2e-2
    return bool((alone - together).abs().max() <= tolerance * (1 + alone.abs().max()))


def _with_padding_free(config: TrainConfig, model: Any, base: str) -> TrainConfig:
    """``config``, with ``padding_free`` off where ``model`` would mix packed examples."""
    if not config.padding_free or keeps_packed_examples_apart(model):
        return config
    log.warning(
        "train.padding_free: %s attends across the examples of a packed row; "
        "training with padded batches",
        base,
    )
    return replace(config, padding_free=False)


def _sft_args(
    config: TrainConfig,
    output_dir: Path,
    epochs: float,
    learning_rate: float,
    max_length: int,
    device: str,
) -> Any:
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        # padding-free rows are already fitted to max_length (fit_sequences); trl refuses both
        max_length=None if config.padding_free else max_length,
        padding_free=config.padding_free,
        completion_only_loss=config.completion_only_loss,
        seed=config.seed,
        data_seed=config.seed,
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
        activation_checkpointing=False,
        use_cpu=device == "cpu",
        logging_steps=config.logging_steps,
        train_sampling_strategy="group_by_length" if config.length_grouped else "random",
        save_strategy="no",
        report_to="none",
        dataloader_pin_memory=device == "cuda",
        ddp_find_unused_parameters=False,
    )


def _sft_trainer(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, list[int]]],
    config: TrainConfig,
    args: Any,
    *,
    peft_config: Any = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    from datasets import Dataset as HFDataset
    from trl import SFTTrainer

    return _trainer_class(SFTTrainer)(
        model=model,
        args=args,
        train_dataset=HFDataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )


def padded_batches(
    examples: Sequence[Example], config: TrainConfig, tokenizer: Any
) -> list[list[list[int]]]:
    """The batches of one pass over ``examples`` as training draws them (``batch_size``,
    ``length_grouped``, ``seed``): each example's token ids, without the padding its batch
    gives it. The model is ``config.base_model`` (a path)."""
    import tempfile

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(config.base_model)
    config = replace(config, padding_free=False)
    rows = fit_sequences(training_rows(examples), tokenizer, config.max_length).rows
    with tempfile.TemporaryDirectory() as tmp:
        args = _sft_args(config, Path(tmp), 1.0, config.learning_rate, config.max_length, "cpu")
        trainer = _sft_trainer(model, tokenizer, rows, config, args)
        batches = trainer.get_train_dataloader()
        return [
            [
                ids[mask.bool()].tolist()
                for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True)
            ]
            for b in batches
        ]


def _within_budget(epochs: float, examples: int, budget: int) -> float:
    """``epochs``, or fewer passes over ``examples`` when that many would train on more than
    ``budget`` examples (0: no budget)."""
    if budget <= 0 or examples * epochs <= budget:
        return epochs
    passes = budget / examples
    log.info(
        "train.example_budget %d: %.2f passes over %d examples instead of %g",
        budget,
        passes,
        examples,
        epochs,
    )
    return passes


def _shared_tiny_base(
    path: Path, examples: Sequence[Example], config: TrainConfig, *, cpu: bool
) -> Path:
    """The tiny base, built once: by the first training process, while the others wait."""
    with main_process_first(cpu=cpu):
        if is_main_process():
            build_tiny_base(path, examples, config)
    return path


def _max_length(config: TrainConfig, model: Any) -> int:
    """``train.max_length``, at most the positions the model has."""
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if positions is not None and config.max_length > positions:
        log.warning(
            "train.max_length %d is beyond the model's %d positions; training uses %d",
            config.max_length,
            positions,
            positions,
        )
        return int(positions)
    return config.max_length


def _trainer_class(base: type) -> type:
    """``SFTTrainer`` with the plain causal-LM loss (``labels`` already carry trl's masks).

    trl computes the loss through a chunked fused LM head; on CPU with small vocabularies that
    is about three times slower per step than the model's own loss, for the same value.
    """
    from transformers import Trainer

    class Trainer_(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            if self.args.loss_type != "nll" or self.label_smoother is not None:
                return super().compute_loss(model, inputs, *args, **kwargs)
            return Trainer.compute_loss(self, model, inputs, *args, **kwargs)

    return Trainer_


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _load_kwargs(config: TrainConfig, device: str) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = {"dtype": torch.float32 if device == "cpu" else "auto"}
    if config.method == "lora" and config.quantize_4bit and device == "cuda":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            log.warning("quantize_4bit is set but bitsandbytes is missing: plain LoRA")
            return kwargs
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": local_rank()}  # each process's weights on its own GPU
    return kwargs


def _lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    targets: Any = config.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def _progress_callback(log_path: Path | None) -> Any:
    from transformers import TrainerCallback

    class ProgressLog(TrainerCallback):
        """A JSON line per logging step into ``log_path``; a short line to the logger."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()
            if state.is_world_process_zero:
                log.info("training for %d steps", state.max_steps)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not state.is_world_process_zero:
                return  # every process logs the same (gathered) values: the first writes
            record = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "epoch": round(state.epoch or 0.0, 3),
                "elapsed_s": round(time.perf_counter() - self.started, 1),
                **(logs or {}),
            }
            if log_path is not None:
                with Path(log_path).open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            if "loss" in (logs or {}):
                log.info(
                    "step %d/%d epoch %.2f loss %.4f lr %.2e",
                    state.global_step,
                    state.max_steps,
                    record["epoch"],
                    logs["loss"],
                    logs.get("learning_rate", 0.0),
                )

    return ProgressLog()
