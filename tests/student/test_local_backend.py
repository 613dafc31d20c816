"""The ``local`` student backend on real tiny models: answers, logprobs, batching, adapters."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time

import pytest

from understudy.student.base import StudentError, StudentModel, StudentRequest
from understudy.student.local import LocalBackend

COUNT = "one two three four five six seven eight nine ten"
LESSONS = {"count": COUNT, "ping": "pong", "hello there": "hi, how can I help?"}


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def taught_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model, fitted for a few seconds to answer ``LESSONS`` exactly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    texts = [
        tokenizer.apply_chat_template(
            [*chat(q), {"role": "assistant", "content": a}], tokenize=False
        )
        for q, a in LESSONS.items()
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and immune to busy CPUs
    try:
        for _ in range(120):
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("taught") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the untrained tiny model, with non-zero weights so it matters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(
        r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    path = tmp_path_factory.mktemp("lora") / "adapter"
    get_peft_model(base, config).save_pretrained(path)
    return path


@pytest.fixture
async def backend():
    engine = LocalBackend(device="cpu", max_batch_size=8, batch_window_ms=5)
    yield engine
    await engine.close()


def forward_logprobs(model_dir, prompt_ids, answer_ids, adapter=None):
    """Each answer token's log-probability from one plain forward pass."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.inference_mode():
        logprobs = model(ids).logits[0].float().log_softmax(-1)
    start = len(prompt_ids)
    return [float(logprobs[start - 1 + j, t]) for j, t in enumerate(answer_ids)]


def prompt_ids(model_dir, messages):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


async def test_a_chat_answer_carries_tokens_logprobs_and_top_alternatives(backend, taught_dir):
    model = StudentModel("count@v1", str(taught_dir))

    answer = await backend.generate(StudentRequest(model, chat("count"), top_logprobs=3))

    assert answer.text == COUNT
    assert answer.finish_reason == "stop"
    assert "".join(answer.tokens) == answer.text
    assert len(answer.token_ids) == len(answer.tokens) == len(answer.logprobs) == 10
    assert all(lp <= 0 for lp in answer.logprobs)
    for token, lp, top in zip(answer.tokens, answer.logprobs, answer.top_logprobs, strict=True):
        assert len(top) == 3
        assert [alt.logprob for alt in top] == sorted((alt.logprob for alt in top), reverse=True)
        assert top[0].token == token and top[0].logprob == pytest.approx(lp)  # greedy
    assert answer.prompt_tokens == len(prompt_ids(taught_dir, chat("count")))
    assert answer.completion_tokens == 11  # the ten words and the end-of-turn token
    assert answer.latency_ms > 0


async def test_logprobs_are_the_ones_a_forward_pass_gives(backend, tiny_model_dir):
    model = StudentModel("untrained@v1", str(tiny_model_dir))
    messages = chat("where is my card?")

    answer = await backend.generate(StudentRequest(model, messages, max_tokens=12))

    assert answer.finish_reason == "length" and len(answer.token_ids) == 12
    expected = forward_logprobs(
        tiny_model_dir, prompt_ids(tiny_model_dir, messages), answer.token_ids
    )
    assert answer.logprobs == pytest.approx(expected, abs=1e-4)
    assert sum(answer.logprobs) == pytest.approx(sum(expected), abs=1e-3)


async def test_max_tokens_cuts_the_answer_and_says_length(backend, taught_dir):
    model = StudentModel("count@v1", str(taught_dir))

    answer = await backend.generate(StudentRequest(model, chat("count"), max_tokens=3))

    assert answer.text == "one two three"
    assert answer.finish_reason == "length"
    assert len(answer.logprobs) == answer.completion_tokens == 3


async def test_a_stop_string_ends_the_answer_before_it(backend, taught_dir):
    model = StudentModel("count@v1", str(taught_dir))

    stopped = await backend.generate(StudentRequest(model, chat("count"), stop=["xyz", " four"]))
    unmatched = await backend.generate(StudentRequest(model, chat("count"), stop=["eleven"]))

    assert stopped.text == "one two three"
    assert stopped.finish_reason == "stop"
    assert "".join(stopped.tokens) == stopped.text and len(stopped.logprobs) == 3
    assert unmatched.text == COUNT and unmatched.finish_reason == "stop"


async def test_a_plain_prompt_is_continued_as_it_is(backend, taught_dir):
    model = StudentModel("count@v1", str(taught_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(taught_dir)
    rendered = tokenizer.apply_chat_template(
        chat("ping"), add_generation_prompt=True, tokenize=False
    )

    as_prompt = await backend.generate(StudentRequest(model, prompt=rendered))
    as_chat = await backend.generate(StudentRequest(model, chat("ping")))

    assert as_prompt.text == as_chat.text == "pong"
    assert as_prompt.logprobs == pytest.approx(as_chat.logprobs)


async def test_concurrent_requests_are_answered_in_one_batch_as_if_alone(taught_dir):
    engine = LocalBackend(device="cpu", max_batch_size=8, batch_window_ms=200)
    model = StudentModel("count@v1", str(taught_dir))
    questions = ["count", "ping", "hello there", "count", "ping", "hello there"]
    try:
        await engine.load(model)
        answers = await asyncio.gather(
            *(engine.generate(StudentRequest(model, chat(q), max_tokens=16)) for q in questions)
        )
        assert (engine.stats.batches, engine.stats.largest_batch) == (1, 6)
        alone = await engine.generate(StudentRequest(model, chat("hello there"), max_tokens=16))
    finally:
        await engine.close()

    assert [a.text for a in answers] == [LESSONS[q] for q in questions]
    # Left padding in a batch changes nothing: same tokens, same logprobs as a lone request.
    assert answers[2].token_ids == alone.token_ids
    assert answers[2].logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    assert engine.stats.batches == 2


async def test_a_batch_never_exceeds_max_batch_size_nor_mixes_models(taught_dir, tiny_model_dir):
    engine = LocalBackend(device="cpu", max_batch_size=4, batch_window_ms=100)
    taught = StudentModel("count@v1", str(taught_dir))
    untrained = StudentModel("other@v1", str(tiny_model_dir))
    requests = [StudentRequest(taught, chat("ping"), max_tokens=4) for _ in range(6)]
    requests += [StudentRequest(untrained, chat("ping"), max_tokens=4) for _ in range(2)]
    try:
        await engine.load(taught)
        await engine.load(untrained)
        answers = await asyncio.gather(*(engine.generate(r) for r in requests))
    finally:
        await engine.close()

    assert [a.text for a in answers[:6]] == ["pong"] * 6
    assert engine.stats.batches == 3  # 4 + 2 for one model, 2 for the other
    assert engine.stats.largest_batch == 4 and engine.stats.requests == 8


async def test_the_event_loop_keeps_running_while_the_student_generates(backend, tiny_model_dir):
    model = StudentModel("untrained@v1", str(tiny_model_dir))
    await backend.load(model)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    requests = [StudentRequest(model, chat(f"card {i}"), max_tokens=120) for i in range(8)]
    await asyncio.gather(*(backend.generate(r) for r in requests))
    ended = time.perf_counter()
    task.cancel()

    during = [t for t in ticks if started <= t <= ended]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert ended - started > 0.1
    assert len(during) >= 5
    assert max(gaps) < 0.5


async def test_a_lora_adapter_is_loaded_on_its_base(backend, tiny_model_dir, lora_dir):
    base = StudentModel("plain@v1", str(tiny_model_dir))
    tuned = StudentModel("tuned@v2", str(tiny_model_dir), adapter_path=str(lora_dir))
    messages = chat("where is my card?")

    plain = await backend.generate(StudentRequest(base, messages, max_tokens=6))
    adapted = await backend.generate(StudentRequest(tuned, messages, max_tokens=6))

    assert set(backend.loaded()) == {base, tuned}  # two versions served side by side
    assert adapted.logprobs != pytest.approx(plain.logprobs, abs=1e-3)
    ids = prompt_ids(tiny_model_dir, messages)
    expected = forward_logprobs(tiny_model_dir, ids, adapted.token_ids, adapter=lora_dir)
    assert adapted.logprobs == pytest.approx(expected, abs=1e-4)


async def test_a_missing_model_is_a_student_error(backend, tmp_path):
    missing = StudentModel("gone@v1", str(tmp_path / "no-such-model"))
    bad_adapter = StudentModel("gone@v2", str(tmp_path), adapter_path=str(tmp_path / "nope"))

    with pytest.raises(StudentError, match="no-such-model"):
        await backend.load(missing)
    with pytest.raises(StudentError):
        await backend.generate(StudentRequest(missing, chat("hi")))
    with pytest.raises(StudentError, match="nope"):
        await backend.load(bad_adapter)
    with pytest.raises(StudentError, match="could not load"):
        await backend.load(StudentModel("empty@v1", str(tmp_path)))  # a directory, no weights
    assert backend.loaded() == []


async def test_load_and_unload_are_idempotent_and_unloaded_models_are_refused(backend, taught_dir):
    model = StudentModel("count@v1", str(taught_dir))

    await asyncio.gather(backend.load(model), backend.load(model))
    assert backend.loaded() == [model]
    await backend.unload(model)
    await backend.unload(model)
    await backend.unload(StudentModel("never@v9", "/nowhere"))

    assert backend.loaded() == []
    with pytest.raises(StudentError, match="no longer loaded"):
        await backend.generate(StudentRequest(model, chat("ping")))
    await backend.load(model)
    assert (await backend.generate(StudentRequest(model, chat("ping")))).text == "pong"


async def test_a_request_the_model_cannot_take_fails_alone(taught_dir):
    engine = LocalBackend(device="cpu", max_batch_size=8, batch_window_ms=100)
    model = StudentModel("count@v1", str(taught_dir))
    empty = StudentRequest(model, prompt="")
    try:
        await engine.load(model)
        results = await asyncio.gather(
            engine.generate(empty),
            engine.generate(StudentRequest(model, chat("ping"))),
            return_exceptions=True,
        )
    finally:
        await engine.close()

    assert isinstance(results[0], StudentError) and "empty" in str(results[0])
    assert results[1].text == "pong"
    assert engine.stats.batches == 1


async def test_a_prompt_longer_than_the_context_is_answered_from_its_end(taught_dir):
    """It was refused ("the student's context is 256"): a long-text task could never be
    served, nor pass the validity gate. It keeps its end, as training does."""
    engine = LocalBackend(device="cpu", max_batch_size=8, batch_window_ms=0)
    model = StudentModel("count@v1", str(taught_dir))
    try:
        await engine.load(model)
        request = StudentRequest(model, chat("count " * 300 + "ping"), max_tokens=16)
        answer = await engine.generate(request)
    finally:
        await engine.close()

    # The context is 256: the prompt's last 240 tokens, leaving room for the 16 asked for.
    assert answer.prompt_tokens == 240 and 1 <= answer.completion_tokens <= 16


async def test_closing_fails_waiting_requests_instead_of_leaving_them_hanging(tiny_model_dir):
    engine = LocalBackend(device="cpu", max_batch_size=2, batch_window_ms=0)
    model = StudentModel("untrained@v1", str(tiny_model_dir))
    await engine.load(model)
    requests = [StudentRequest(model, chat(f"card {i}"), max_tokens=200) for i in range(4)]
    waiting = [asyncio.create_task(engine.generate(r)) for r in requests]
    while engine.stats.batches == 0:
        await asyncio.sleep(0.005)

    await engine.close()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 2)

    assert all(isinstance(r, StudentError) for r in results)  # in flight and still queued
    with pytest.raises(StudentError, match="closed"):
        await engine.generate(requests[0])


async def test_sampling_follows_the_seed(backend, tiny_model_dir):
    model = StudentModel("untrained@v1", str(tiny_model_dir))

    def sampled(seed: int) -> StudentRequest:
        return StudentRequest(model, chat("hi"), max_tokens=8, temperature=1.0, seed=seed)

    first, again, other = await asyncio.gather(
        backend.generate(sampled(7)), backend.generate(sampled(7)), backend.generate(sampled(8))
    )
    greedy = await backend.generate(StudentRequest(model, chat("hi"), max_tokens=8))

    assert first.token_ids == again.token_ids
    assert other.token_ids != first.token_ids
    assert first.token_ids != greedy.token_ids
    assert all(lp <= 0 for lp in first.logprobs)


def test_importing_the_backend_loads_no_ml_library():
    code = (
        "import sys, understudy.student.local, understudy.student.generation, "
        "understudy.student.tiny;"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_the_in_process_student_generates_with_its_threads(tiny_model_dir):
    import torch

    engine = LocalBackend(device="cpu", threads=1)
    model = StudentModel("untrained@v1", str(tiny_model_dir))
    try:
        await engine.load(model)
        await engine.generate(StudentRequest(model, chat("card"), max_tokens=2))
        loop = asyncio.get_running_loop()
        # The thread count is the generating thread's own (OpenMP's is per thread).
        assert await loop.run_in_executor(engine._thread, torch.get_num_threads) == 1
    finally:
        await engine.close()
