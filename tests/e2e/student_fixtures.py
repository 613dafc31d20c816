"""A small task a tiny student learns in seconds, and gateways that serve it.

The task: route banking support messages to one of eight one-word intents. The stand-in teacher
answers from a table; its answers are logged through a real gateway, one distillation run trains
and promotes a tiny from-scratch student with a calibrated router, and the gateway (student
backend ``local``) picks the champion up from the registry without a restart.

Which requests the student is sure about is measured, not assumed: the fixture judges fresh
in-distribution messages and off-topic ones with the serving code itself (the same generator
and router the gateway uses) and keeps those clearly above or below the gateway's fixed
threshold. The tests then check that the gateway routes each one as judged.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.e2e.conftest import gateway_env
from tests.gateway_process import ROOT, GatewayProcess, database_address, database_for
from tests.teacher_stub import StubTeacher

TASK = "banking"
MODEL = "support-bot"  # routed to TASK by the gateway's config
TEACHER_MODEL = "gpt-4o-2024-08-06"
ADMIN_KEY = "admin-secret-42"
SYSTEM = "You route banking support messages. Reply with the intent name only."
THRESHOLD = 0.8  # the gateways' fixed router threshold
MARGIN = 0.05  # probes are kept only this far from the threshold
OFF_TOPIC_ANSWER = "other"

INTENTS = {
    "delivery": ["delivery of my new card is late", "new card never arrived"],
    "topup": ["top up is not working", "topping up failed twice"],
    "lost": ["lost my card today", "stolen card, block it"],
    "exchange": ["exchange rate seems wrong", "which exchange rate applies"],
    "refund": ["refund still missing", "refund my last order"],
    "pin": ["pin change needed", "forgot my pin"],
    "atm": ["atm kept my cash", "atm withdrawal failed"],
    "closure": ["close my account", "account deletion please"],
}
OFF_TOPIC = [
    "zzqx vvkr plmo",
    "what is the capital of peru",
    "tell me about dinosaurs",
    "sing me a song",
    "qwerty asdf",
    "how do rockets fly",
    "weather in oslo",
    "best pizza topping",
    "who painted the mona lisa",
    "recipe for pancakes",
    "translate this poem",
    "how old is the moon",
    "xj9 kk2 pq7 zz0 mm3 tt8 rr5 ww1",
    "please summarise the plot of a very long novel about sailors, whales and revenge",
    "2 + 2 = ?",
    "!!! ??? ...",
    "the quick brown fox jumps over the lazy dog again and again and again",
    "is it going to snow in the mountains next week or only rain in the valleys",
    "write a haiku about autumn leaves",
    "how many legs does a spider have",
    "lorem ipsum dolor sit amet consectetur",
    "what time does the museum open on sundays",
    "aaaaaaaaaaaaaaaaaaaaaaaa",
    "explain quantum entanglement to a five year old in simple words",
]
LOGGED = 96  # teacher answers logged before the distillation run (72 train, 24 held out)


def task_messages(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` customer messages with their intent, the intents in turn."""
    rng = random.Random(seed)
    labels = list(INTENTS)
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        out.append((f"{rng.choice(INTENTS[label])} (ref {rng.randint(100, 99999)})", label))
    return out


def off_topic_messages() -> list[str]:
    return [f"{text} (ref {555 + i})" for i, text in enumerate(OFF_TOPIC)]


def teacher_table() -> dict[str, str]:
    table = dict(task_messages(LOGGED, seed=0))
    table.update(task_messages(48, seed=7))
    table.update(dict.fromkeys(off_topic_messages(), OFF_TOPIC_ANSWER))
    return table


def chat(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def distill_config(*, epochs: float = 25, learning_rate: float = 2e-3) -> Any:
    from understudy.distiller.config import DatasetConfig, DistillConfig, GateConfig, TrainConfig

    return DistillConfig(
        dataset=DatasetConfig(eval_fraction=0.25, eval_min=10, min_examples=40),
        train=TrainConfig(
            base_model="tiny",
            method="full",
            tiny_hidden=128,
            tiny_layers=2,
            tiny_vocab_size=512,
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=16,
            device="cpu",
            logging_steps=50,
            isolation="inline",
            candidates=["model"],  # these tests serve the language model (classical: its own)
        ),
        gates=GateConfig(
            min_agreement=0.8,
            quality_target=0.8,
            eval_batch_size=64,
            max_new_tokens=8,
            min_calibration_examples=20,
            # 24 held-out answers, 19 of them certify: the bound on at least 12 served ones.
            min_certified_served=12,
            bound="wilson",
            confidence=0.95,
        ),
    )


# -- processes ---------------------------------------------------------------------------


def start_teacher() -> StubTeacher:
    teacher = StubTeacher(table=teacher_table(), model=TEACHER_MODEL)
    teacher.start()
    return teacher


def gateway_config(
    *,
    shadow_rate: float = 0.0,
    audit_rate: float = 0.0,
    degraded_mode: str = "serve",
    **router: Any,
) -> str:
    routes = "\n".join(
        f'"{MODEL}{suffix}" = "{TASK}{suffix}"' for suffix in ("", "-drift", "-mode", "-b")
    )
    extra = "".join(f"{key} = {value}\n" for key, value in router.items())
    return (
        f"[routes]\n{routes}\n"
        "[student]\n"
        'backend = "local"\ndevice = "cpu"\nreload_interval_s = 0.2\nbatch_window_ms = 2\n'
        f'degraded_mode = "{degraded_mode}"\n'
        "[router]\n"
        f'threshold_mode = "fixed"\nfixed_threshold = {THRESHOLD}\nshadow_rate = {shadow_rate}\n'
        f"audit_rate = {audit_rate}\n{extra}"
    )


def start_gateway(teacher: StubTeacher, data_dir: Path, config: str) -> GatewayProcess:
    env = gateway_env(UNDERSTUDY_ADMIN_KEY=ADMIN_KEY)
    return GatewayProcess(teacher.base_url, data_dir, env=env, config=config).start(timeout=60)


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)


def log_teacher_traffic(gateway: GatewayProcess, n: int = LOGGED) -> None:
    """Ask the gateway ``n`` task messages (the teacher answers) and wait until all are logged.

    One at a time: the distillation run holds out the newest answers, so the log's order decides
    what the student trains on. Sent in parallel, that order (and with it the student's
    confidence on the probes) changed from run to run."""
    c = client(gateway)
    for text, _ in task_messages(n, seed=0):
        c.chat.completions.create(model=MODEL, messages=chat(text))
    rows = gateway.wait_rows("task = ? and served_by = 'teacher'", (TASK,), count=n, timeout=10)
    assert len(rows) >= n, f"only {len(rows)} of {n} teacher answers were logged"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``understudy ARGS`` in a subprocess, as an operator runs it (``env`` added to the
    environment: a gateway's ``storage_env``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "understudy.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def admin(gateway: GatewayProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=30, **kw)


# -- the trained student -----------------------------------------------------------------


@dataclass
class Probe:
    """A message, the teacher's answer, and how the served student judges it."""

    text: str
    teacher: str
    student: str
    confidence: float


@dataclass
class Student:
    version: str
    model_path: str
    router: dict[str, Any]
    confident: list[Probe] = field(default_factory=list)
    uncertain: list[Probe] = field(default_factory=list)


_TRAINED: dict[str, Any] = {}
"""The first distillation of this test session, reused by later modules (one run per session)."""


def distill(data_dir: Path, config: Any) -> Any:
    """One distillation run of ``TASK``, in this process, on one CPU thread.

    A tiny model's matrices are too small to gain from a second thread, and on a busy 2-core
    machine the threads wait on each other: one thread trains about 7 times faster there.
    """
    import torch

    from understudy.distiller.pipeline import run_distillation

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_distillation(data_dir, TASK, config, database=database_for(data_dir))
    finally:
        torch.set_num_threads(threads)


def train_student(data_dir: Path) -> Student:
    """A promoted ``TASK@v1`` in ``data_dir``: distilled from its log, or, when an earlier module
    of this session distilled one already, that student's weights and router registered there."""
    from understudy.storage.database import open_database
    from understudy.storage.registry import champion, promote, register_model

    db = open_database(database_address(data_dir))
    try:
        if _TRAINED:
            target = data_dir / "models" / TASK / "v1"
            shutil.copytree(_TRAINED["model_path"], target)
            model = register_model(
                db, TASK, base="tiny", model_path=str(target), router=_TRAINED["router"]
            )
            promote(db, model.id, reason="test session: trained once")
        else:
            outcome = distill(data_dir, distill_config())
            assert outcome.promoted, f"the distillation run was not promoted: {outcome.reason}"
        model = champion(db, TASK)
        assert model is not None and model.model_path
        _TRAINED.setdefault("model_path", model.model_path)
        _TRAINED.setdefault("router", model.router)
        _TRAINED.setdefault("probes", None)
    finally:
        db.conn.close()
    student = Student(model.id, model.model_path, model.router)
    _judge_probes(student)
    return student


def _judge_probes(student: Student) -> None:
    """Sort fresh messages into those the served student is sure about and those it is not."""
    if _TRAINED.get("probes") is None:
        _TRAINED["probes"] = _measure(student)
    probes: list[Probe] = _TRAINED["probes"]
    student.confident = [
        p for p in probes if p.confidence >= THRESHOLD + MARGIN and p.student == p.teacher
    ]
    # Answers the teacher disagrees with first: an unsure task message may still be right.
    student.uncertain = sorted(
        (p for p in probes if p.confidence <= THRESHOLD - MARGIN),
        key=lambda p: p.student == p.teacher,
    )
    assert len(student.confident) >= 6, f"the student is sure of too few task messages: {probes}"
    assert student.uncertain and student.uncertain[0].student != student.uncertain[0].teacher, (
        f"the student is sure of every off-topic message: {probes}"
    )


def _measure(student: Student) -> list[Probe]:
    from understudy.gateway.serving.routing import TaskRouter
    from understudy.router.config import RouterConfig
    from understudy.student.base import StudentModel, StudentRequest
    from understudy.student.generation import load_generator

    generator = load_generator(student.model_path, None, "cpu")
    router = TaskRouter(
        student.router, RouterConfig(threshold_mode="fixed", fixed_threshold=THRESHOLD)
    )
    model = StudentModel(name=student.version, base=student.model_path)
    table = teacher_table()
    texts = [text for text, _ in task_messages(48, seed=7)] + off_topic_messages()
    requests = [StudentRequest(model, messages=chat(t), max_tokens=256) for t in texts]
    answers = generator.generate(requests)
    return [
        Probe(text, table[text], answer.text, router.judge(answer, {}).confidence)
        for text, answer in zip(texts, answers, strict=True)
    ]


def wait_for(
    predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def served_by(gateway: GatewayProcess, text: str, model: str = MODEL) -> dict[str, str]:
    """The response headers of one request (through the SDK)."""
    raw = client(gateway).chat.completions.with_raw_response.create(
        model=model, messages=chat(text)
    )
    return dict(raw.headers)


def wait_until_student_serves(gateway: GatewayProcess, text: str, model: str = MODEL) -> None:
    wait_for(
        lambda: served_by(gateway, text, model).get("x-understudy-served-by") == "student",
        timeout=60,
        interval=0.2,
        what=f"the student to serve {model}",
    )
