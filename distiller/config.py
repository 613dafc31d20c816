"""Settings of the distiller: one dataclass per step, nested in :class:`DistillConfig`.

Every field has a default and a docstring. ``DistillConfig.from_mapping`` builds one from a
``[distiller]`` table with the settings' reader (:mod:`understudy.config_reader`: unknown keys
are an error naming the key); ``tasks`` holds per-task overrides in the same shape, applied
by :meth:`DistillConfig.for_task`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from understudy.config_reader import ConfigError, build
from understudy.router.config import RouterConfig
from understudy.storage.records import valid_task_name
from understudy.student.classical import ClassicalSettings

KINDS = ("label", "json", "text")
DEFAULT_QUALITY_TARGET = RouterConfig.quality_target
SECTION = "distiller."
"""Where this section sits in the settings: the prefix of its settings' names."""


@dataclass
class DatasetConfig:
    """Building the training and held-out sets from the log."""

    eval_fraction: float = 0.1
    """Share of the most recent examples held out for evaluation (never trained on)."""
    eval_min: int = 20
    """Fewest held-out examples (taken even when ``eval_fraction`` gives fewer)."""
    eval_max: int = 1000
    """Most held-out examples."""
    min_examples: int = 50
    """Fewest usable examples for a run to train; with fewer it is recorded as skipped."""
    max_examples: int = 50000
    """Most recent examples read from the log per run (older ones are left out)."""
    failure_weight: int = 3
    """Times each failure case (deferred, or disagreeing with the teacher) appears in training."""
    near_duplicate_threshold: float = 0.9
    """Word-shingle Jaccard similarity above which two prompts count as duplicates (1 = off)."""
    scrub_secrets: bool = True
    """Replace API keys, tokens and private keys in prompts and answers by ``[SECRET]``."""
    scrub_pii: list[str] = field(default_factory=list)
    """Built-in PII patterns to replace: any of ``email``, ``phone``, ``card``, ``iban``, ``ip``."""
    pii_patterns: dict[str, str] = field(default_factory=dict)
    """Extra patterns to replace, name to regular expression (replaced by ``[NAME]``)."""
    max_answer_chars: int = 20000
    """Answers longer than this are dropped."""


@dataclass
class AugmentConfig:
    """Synthetic examples from the teacher when a task has too few (off by default)."""

    enabled: bool = False
    """Ask the teacher for new inputs and their answers when a task has too few examples."""
    below: int = 200
    """Augment only when the task has fewer training examples than this."""
    target: int = 200
    """Stop when the training set reaches this many examples."""
    max_teacher_calls: int = 50
    """Most teacher calls (input generation and labelling together) per run."""
    inputs_per_call: int = 10
    """New inputs asked for in one generation call."""
    seed_examples: int = 5
    """Logged examples shown to the teacher as seeds in each generation call."""
    description: str = ""
    """What the task is, shown to the teacher (the logged prompts are used when empty)."""
    model: str = ""
    """Model name the teacher is asked for (empty: the model most requested in the log)."""


@dataclass
class TrainConfig:
    """Fine-tuning the student with trl's ``SFTTrainer``.

    The defaults suit a pretrained base with LoRA. For a tiny student trained from scratch set
    ``base_model = "tiny"``, ``method = "full"``, ``learning_rate = 2e-3``, ``epochs = 6``.
    """

    base_model: str = "Qwen/Qwen3-0.6B"
    """Base model: a hub id or a local path; ``tiny`` builds a small Llama from scratch."""
    method: str = "lora"
    """``lora`` (peft adapter; QLoRA when ``quantize_4bit`` and a GPU), or ``full``."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA path."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Modules that get adapters (``all-linear`` or names such as ``q_proj``)."""
    quantize_4bit: bool = False
    """Load the base in 4 bit (QLoRA); needs bitsandbytes and a CUDA GPU, ignored otherwise."""
    epochs: float = 3.0
    """Passes over the training set."""
    warm_start: bool = False
    """Start from the current champion's weights (its model for ``full``, its adapter for
    ``lora``) when it was trained from the same base with the same method, and train
    ``warm_start_epochs`` passes instead of ``epochs``: runs over a log that keeps growing get
    cheaper. The first run, and any run whose champion does not match, starts from the base."""
    warm_start_epochs: float = 1.0
    """Passes over the training set when a run starts from the champion (``warm_start``)."""
    warm_start_lr_scale: float = 0.33
    """Peak learning rate of a run that starts from the champion, as a share of
    ``learning_rate``: continuing at the full rate first undoes part of what the champion
    learned."""
    batch_size: int = 16
    """Examples per device per step (16 is the fastest per example on 2 CPU cores)."""
    gradient_accumulation_steps: int = 1
    """Steps whose gradients are summed before an update."""
    learning_rate: float = 2e-4
    """Peak learning rate (2e-3 to 3e-3 for tiny from-scratch students)."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule (any ``transformers`` scheduler name)."""
    warmup_ratio: float = 0.03
    """Share of steps spent warming the learning rate up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_length: int = 128
    """Longest tokenised example (prompt and answer; at most the model's context). A longer
    one loses the start of its prompt, never its answer; one whose answer alone is longer is
    left out. The run logs how many examples were shortened and trained on."""
    completion_only_loss: bool = True
    """Loss on the answer only; off puts loss on the whole sequence (helps scarce data)."""
    seed: int = 0
    """Seed for data order, initialisation and dropout."""
    device: str = "auto"
    """``auto`` (a GPU when present), ``cpu`` or ``cuda``."""
    threads: int = 0
    """Torch threads of the training process on CPU (``OMP_NUM_THREADS`` and
    ``MKL_NUM_THREADS`` too). 0: the cores available to it less one (for the gateway and
    whatever else runs there), halved when the schedule runs inside the gateway
    (``schedule.in_gateway``), at least 1: one thread on a 2-core box."""
    logging_steps: int = 20
    """Steps between progress lines in the log."""
    example_budget: int = 0
    """Most examples one run trains on, repeats over passes counted (a step budget scaled to
    the data: ``example_budget / batch_size`` steps): a log large enough that ``epochs``
    passes would exceed it trains fewer passes, with the learning-rate schedule ending at the
    budget, so a run's time stops growing with the log. 0: ``epochs`` passes whatever the
    log's size."""
    length_grouped: bool = False
    """Batch examples of similar length together (shuffled groups, each batch of one group):
    with ``padding_free`` off, a batch is padded to its longest example, so random batches of
    short label-shaped examples spend about a third of their compute on padding. Off by
    default: on Banking77, with padded batches, it cut the tiny student's training CPU time by
    36-45% but its held-out agreement fell by 4 points on both seeds measured (BENCHMARKS.md,
    "Distillation"); ``padding_free`` saves the padding without changing the batches."""
    padding_free: bool = True
    """Train on each batch's examples end to end in one row, with no padding (each example
    attends only to itself and keeps its own positions), instead of padding every example to
    the batch's longest. The batches and the loss are the same and padding is no longer
    computed; rounding differs, so after thousands of steps the models are close, not
    identical. On Banking77 the tiny student's 3,024 steps took 19% less CPU and the whole run
    (both candidates) 18% less time: 266 s and 254 s against 323 s and 309 s on two seeds;
    on four seeds its held-out agreement was 1.0-1.3 points higher and it certified at 0.97
    on one seed instead of two.
    A run first checks that the model keeps packed examples apart (an example's logits
    alone and behind another in one row): one that does not (OPT, BLOOM) trains with padded
    batches, and the run's log says so; its ``train`` metrics record ``padding_free``."""
    tiny_hidden: int = 128
    """Tiny students: hidden size."""
    tiny_layers: int = 2
    """Tiny students: transformer layers."""
    tiny_vocab_size: int = 2048
    """Tiny students: tokenizer vocabulary size (trained on the task's texts)."""
    tiny_context: int = 256
    """Tiny students: context length in tokens (prompt and answer). A longer prompt keeps its
    end, in training and when the student answers."""
    tiny_implied_system: bool = True
    """Tiny students: leave the task's most common system prompt out of every sequence (the
    student's chat template drops a system message with exactly that text, in training and
    when it answers, whatever serves it). For a student trained from scratch on one task, a
    prompt every example shares tells no two examples apart, yet costs compute: the demo's
    Banking77 prompt is 23 of each example's 53 tokens. On Banking77 the training steps took
    23-30% less CPU; the student's agreement moved +0.6 and -1.7 points on two seeds."""
    isolation: str = "process"
    """``process`` (train and evaluate in a spawned process) or ``inline`` (this process)."""
    timeout_s: float = 6 * 3600.0
    """Longest a training process may run before it is killed and the run fails."""
    candidates: list[str] = field(default_factory=lambda: ["classical", "model"])
    """What each run trains and judges: ``classical`` (TF-IDF + logistic regression, on
    label-shaped tasks only, ``[distiller.classical]``) and ``model`` (``base_model`` with
    ``method``). The gates promote the candidate that passes them all and serves the most at
    the certified target."""
    launcher: list[str] = field(default_factory=list)
    """Command that starts the training process instead of this Python (the worker's ``-m
    understudy.distiller.worker JOB.json`` follows it). For several GPUs set
    ``num_processes`` or ``accelerate_config`` instead."""
    num_processes: int = 1
    """Training processes, one per GPU: above 1 the job runs under ``accelerate launch``
    (distributed data parallel; the gloo backend on CPU). Each process takes ``batch_size``
    examples per step, so a run takes ``num_processes`` times fewer steps; only the first
    process writes the model and evaluates it. Needs ``isolation = "process"``."""
    accelerate_config: str = ""
    """Path of an ``accelerate`` config file (``accelerate config`` writes one: GPUs, mixed
    precision, FSDP or DeepSpeed) the job is launched with; ``num_processes`` above 1
    overrides its process count. Empty: none."""

    @property
    def distributed(self) -> bool:
        """The training job runs under ``accelerate launch``."""
        return self.num_processes > 1 or bool(self.accelerate_config)


@dataclass
class GateConfig:
    """Evaluation and the gates a candidate must pass to be promoted."""

    kind: str = "auto"
    """How answers are compared: ``label``, ``json``, ``text`` or ``auto`` (from the data)."""
    min_agreement: float | None = None
    """Least agreement with the teacher on the whole held-out set; unset (the default), no
    such gate: the router serves only what it certifies, so the gates judge served traffic
    (``min_coverage``, ``non_inferiority_margin``), not answers it would defer."""
    quality_target: float | None = None
    """Alias of ``router.quality_target``, the one to set: unset, it follows it; set in
    ``[distiller.gates]``, it must equal it (start-up error otherwise). Only a per-task
    override (``distiller.tasks.NAME.gates.quality_target``) gives one task its own target."""
    confidence: float = 0.99
    """Confidence of the lower bound a threshold is certified with (and of the paired
    non-inferiority bound). The threshold serves as much as keeps this bound at the quality
    target, so the true agreement there sits just above it; at 0.95 that left too little room
    for the few hundred answers a dashboard or a short stream shows: they fell a point below
    the target in about one run in three where the bound was tight."""

    min_coverage: float = 0.0
    """Least share of held-out requests the student would serve at the certified quality
    target (0: any share above 0)."""
    min_calibration_examples: int = 100
    """Fewest held-out examples drawn uniformly from traffic (audits, and teacher answers
    logged while no student routed the task) for a threshold to be certified; with fewer the
    candidate serves nothing."""
    min_certified_served: int = 50
    """Fewest held-out examples a threshold must serve to be tested: the lower bound is taken
    on at least this many, and thresholds are tested in a fixed sequence from the strictest
    serving this many down, stopping at the first that fails (no luckiest-of-many choice); more
    sequences start from twice, four times... this many served, each at the confidence split
    between them (:func:`~understudy.router.sequence_starts`)."""
    bound: str = "clopper_pearson"
    """Lower bound on served agreement a threshold is certified with: ``clopper_pearson``
    (exact) or ``wilson``."""
    non_inferiority_margin: float = 0.02
    """On the same held-out examples, the candidate may serve at most this share less than
    the champion, and agree at most this much less on what it serves (than the lower of the
    champion's served agreement and the quality target)."""
    non_inferiority_test: str = "mcnemar"
    """Paired test of ``non_inferiority`` (the function; the gate compares served traffic):
    ``mcnemar`` (normal bound) or ``bootstrap``."""
    require_golden: bool = True
    """Every golden example of the task must pass."""
    min_validity: float = 0.95
    """Least share of answers that are complete and well formed (valid JSON for ``json``)."""
    max_new_tokens: int = 64
    """Longest answer generated during evaluation."""
    eval_batch_size: int = 32
    """Prompts generated together during evaluation."""

    @property
    def target(self) -> float:
        """The quality target the threshold is fitted with (the router's default when this
        config stands alone, outside the assembled settings)."""
        target = self.quality_target
        return target if target is not None else DEFAULT_QUALITY_TARGET


@dataclass
class ScheduleConfig:
    """When ``understudy distill schedule`` (or the gateway, with ``in_gateway``) starts runs."""

    cron: str = "0 3 * * *"
    """Crontab expression of the regular run (default: nightly at 03:00)."""
    timezone: str = "UTC"
    """Timezone of ``cron`` (an IANA name)."""
    tasks: list[str] = field(default_factory=list)
    """Tasks to distil (empty: every task with logged teacher answers)."""
    new_examples_trigger: int = 1000
    """Start a run once this many new teacher answers arrived since the last one (0: off)."""
    first_student_trigger: int = 250
    """While the task has no champion, start a run once this many new teacher answers arrived
    instead (0: ``new_examples_trigger`` throughout). A first student can certify on a few
    hundred answers, and a run on so few takes seconds, so saving starts without waiting for
    the night or a thousand answers."""
    cooldown_s: float = 3600.0
    """Least time between the end of a run and a count-triggered one."""
    check_interval_s: float = 60.0
    """How often the count trigger is checked."""
    catch_up: bool = True
    """On start, run once any task whose last scheduled run was missed."""
    lock_ttl_s: float = 300.0
    """A run's lock expires this long after its last heartbeat (a crashed worker's lock)."""
    heartbeat_s: float = 30.0
    """How often a running run renews its lock."""
    in_gateway: bool = False
    """Run this schedule inside ``understudy serve`` (in a child process, so serving never
    waits on it) instead of a separate ``understudy distill schedule`` worker."""


@dataclass
class DistillConfig:
    """The ``[distiller]`` section: every step's settings, plus per-task overrides."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    classical: ClassicalSettings = field(default_factory=ClassicalSettings)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    keep_rejected_weights: bool = False
    """Keep a rejected candidate's weights in its run directory (deleted by default)."""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-task overrides, e.g. ``{"intent" = {gates = {min_agreement = 0.9}}}``."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DistillConfig:
        """Build from a parsed ``[distiller]`` table; a bad key or value raises ``ValueError``
        (a :class:`~understudy.config_reader.ConfigError`) naming it."""
        config = build(cls, data, SECTION)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting with an impossible value: this
        section's, or a per-task override's (each override is applied once, so a bad key or
        value in one fails at start-up, not at its task's next run)."""
        self._check(SECTION)
        for task in self.tasks:
            if not valid_task_name(task):
                raise ValueError(f"{SECTION}tasks: invalid task name {task!r}")
            self.for_task(task)._check(f"{SECTION}tasks.{task}.")

    def _check(self, prefix: str) -> None:
        checks = [
            (self.train.method in ("lora", "full"), "train.method must be lora or full"),
            (
                self.train.base_model != "tiny" or self.train.method == "full",
                "train.base_model = 'tiny' needs train.method = 'full'",
            ),
            (
                self.train.isolation in ("process", "inline"),
                "train.isolation must be process or inline",
            ),
            (self.gates.kind in ("auto", *KINDS), "gates.kind must be auto, label, json or text"),
            (
                self.gates.non_inferiority_test in ("mcnemar", "bootstrap"),
                "gates.non_inferiority_test must be mcnemar or bootstrap",
            ),
            (
                self.gates.bound in ("clopper_pearson", "wilson"),
                "gates.bound must be clopper_pearson or wilson",
            ),
            (self.gates.min_certified_served >= 1, "gates.min_certified_served must be >= 1"),
            (0 < self.dataset.eval_fraction < 1, "dataset.eval_fraction must be in (0, 1)"),
            (self.dataset.failure_weight >= 1, "dataset.failure_weight must be >= 1"),
            (0 < self.gates.target <= 1, "gates.quality_target must be in (0, 1]"),
            (self.train.epochs > 0, "train.epochs must be positive"),
            (
                set(self.train.candidates) <= {"classical", "model"}
                and bool(self.train.candidates),
                "train.candidates must be a non-empty list of classical and model",
            ),
            (
                1 <= self.classical.char_min <= self.classical.char_max,
                "classical.char_min must be between 1 and classical.char_max",
            ),
            (self.classical.folds >= 1, "classical.folds must be >= 1 (1: no cross-fitting)"),
            (self.classical.fold_max_train >= 0, "classical.fold_max_train must be >= 0"),
            (self.train.threads >= 0, "train.threads must be >= 0 (0: auto)"),
            (self.train.example_budget >= 0, "train.example_budget must be >= 0 (0: none)"),
            (self.train.num_processes >= 1, "train.num_processes must be >= 1"),
            (
                not (self.train.launcher and self.train.distributed),
                "train.launcher cannot be combined with train.num_processes above 1 or "
                "train.accelerate_config (they build the launcher)",
            ),
            (
                self.train.isolation == "process" or not self.train.distributed,
                "train.num_processes above 1 and train.accelerate_config need "
                "train.isolation = process",
            ),
            (self.train.max_length >= 2, "train.max_length must be >= 2"),
            (self.train.tiny_context >= 16, "train.tiny_context must be >= 16"),
            (self.train.warm_start_epochs > 0, "train.warm_start_epochs must be positive"),
            (
                0 < self.train.warm_start_lr_scale <= 1,
                "train.warm_start_lr_scale must be in (0, 1]",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(prefix + message)

    def for_task(self, task: str) -> DistillConfig:
        """This configuration with ``tasks[task]`` applied (a copy; ``self`` when it has none)."""
        overrides = self.tasks.get(task)
        if not overrides:
            return self
        prefix = f"{SECTION}tasks.{task}."
        if "tasks" in overrides:  # overrides do not nest
            raise ConfigError(f"unknown setting {prefix}tasks")
        return build(DistillConfig, overrides, prefix, base=copy.deepcopy(self))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
