"""The ``vllm`` student against a stand-in vLLM server over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.student.fake_vllm import BASE_MODEL, FakeVLLM, token_id
from understudy.student.base import StudentError, StudentModel, StudentRequest
from understudy.student.vllm import VLLMBackend

TABLE = {
    "Where is my card?": "card_arrival",
    "Say hello:": " Hello there, friend.",
    "Unsure?": {"text": "maybe so", "logprobs": [-1.5, -2.25]},
}
LOAD = "/v1/load_lora_adapter"
UNLOAD = "/v1/unload_lora_adapter"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def adapter_dir(root: Path, name: str, rank: int = 8) -> str:
    path = root / name
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return str(path)


def chat(model: StudentModel, text: str, **kw) -> StudentRequest:
    return StudentRequest(model=model, messages=[{"role": "user", "content": text}], **kw)


@pytest.fixture
def fake() -> Iterator[FakeVLLM]:
    server = FakeVLLM(TABLE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def backend(fake: FakeVLLM) -> AsyncIterator[VLLMBackend]:
    client = VLLMBackend(fake.base_url, timeout_s=5.0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def v3(tmp_path: Path) -> StudentModel:
    return StudentModel("support-intent@v3", BASE_MODEL, adapter_dir(tmp_path, "v3"))


# -- load / unload ------------------------------------------------------------------------


async def test_load_adds_the_adapter_under_its_versioned_name(fake, backend, v3):
    await backend.load(v3)
    assert fake.adapters == {"support-intent@v3": v3.adapter_path}
    assert fake.paths(LOAD) == [{"lora_name": "support-intent@v3", "lora_path": v3.adapter_path}]


async def test_load_is_idempotent(fake, backend, v3):
    await backend.load(v3)
    await backend.load(v3)
    assert len(fake.paths(LOAD)) == 1


async def test_an_adapter_the_server_already_holds_at_the_same_path_counts_as_loaded(
    fake, backend, v3
):
    fake.adapters[v3.name] = v3.adapter_path  # loaded by an earlier gateway process
    await backend.load(v3)
    answer = await backend.generate(chat(v3, "Where is my card?"))
    assert answer.text == "card_arrival"


async def test_an_adapter_the_server_holds_at_another_path_is_refused(fake, backend, v3, tmp_path):
    other = adapter_dir(tmp_path, "elsewhere")
    fake.adapters[v3.name] = other
    with pytest.raises(StudentError, match="never pointed at other weights"):
        await backend.load(v3)
    assert fake.adapters == {v3.name: other}


async def test_a_name_is_never_pointed_at_another_path(fake, backend, v3, tmp_path):
    moved = StudentModel(v3.name, v3.base, adapter_dir(tmp_path, "v3-retrained"))
    await backend.load(v3)
    with pytest.raises(StudentError, match="bound to"):
        await backend.load(moved)
    await backend.unload(v3)
    with pytest.raises(StudentError, match="bound to"):
        await backend.load(moved)
    assert [body["lora_path"] for body in fake.paths(LOAD)] == [v3.adapter_path]
    await backend.load(v3)  # a rollback reloads the same weights under the same name
    assert fake.adapters == {v3.name: v3.adapter_path}


async def test_unload_removes_the_adapter_and_unknown_names_are_fine(fake, backend, v3):
    await backend.load(v3)
    await backend.unload(v3)
    assert fake.adapters == {}
    await backend.unload(v3)  # the server answers 404: not an error for us
    assert len(fake.paths(UNLOAD)) == 2
    with pytest.raises(StudentError, match="`support-intent@v3` does not exist"):
        await backend.generate(chat(v3, "Where is my card?"))
    assert len(fake.paths(LOAD)) == 1  # an adapter we unloaded is not loaded behind our back


async def test_load_reports_a_missing_adapter_directory(fake, backend, tmp_path):
    model = StudentModel("ghost@v1", BASE_MODEL, str(tmp_path / "nothing-here"))
    with pytest.raises(StudentError, match=r"404.*No adapter found"):
        await backend.load(model)
    assert fake.adapters == {}


async def test_load_reports_a_rank_above_the_server_limit(fake, backend, tmp_path):
    model = StudentModel("wide@v1", BASE_MODEL, adapter_dir(tmp_path, "wide", rank=64))
    with pytest.raises(StudentError, match="max_lora_rank 16"):
        await backend.load(model)


async def test_load_names_the_env_var_when_runtime_lora_is_off(v3):
    with FakeVLLMRunning(runtime_lora=False) as server:
        backend = VLLMBackend(server.base_url)
        try:
            with pytest.raises(StudentError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
                await backend.load(v3)
        finally:
            await backend.close()


async def test_loading_a_base_model_checks_the_server_serves_it(fake, backend):
    await backend.load(StudentModel("base@v1", BASE_MODEL))
    with pytest.raises(StudentError, match="does not serve 'other/model'"):
        await backend.load(StudentModel("other@v1", "other/model"))
    assert fake.paths(LOAD) == []


# -- swap ---------------------------------------------------------------------------------


async def test_swap_loads_new_then_switches_then_unloads_old(fake, backend, v3, tmp_path):
    v4 = StudentModel("support-intent@v4", BASE_MODEL, adapter_dir(tmp_path, "v4"))
    await backend.load(v3)
    seen: list[set[str]] = []

    async def switch() -> None:
        seen.append(set(fake.adapters))

    await backend.swap(v3, v4, switch)
    assert seen == [{v3.name, v4.name}]
    assert set(fake.adapters) == {v4.name}


async def test_a_failed_switch_keeps_the_old_adapter(fake, backend, v3, tmp_path):
    v4 = StudentModel("support-intent@v4", BASE_MODEL, adapter_dir(tmp_path, "v4"))
    await backend.load(v3)

    def switch() -> None:
        raise RuntimeError("registry write failed")

    with pytest.raises(RuntimeError, match="registry write failed"):
        await backend.swap(v3, v4, switch)
    assert set(fake.adapters) == {v3.name}


# -- generate -----------------------------------------------------------------------------


async def test_chat_sends_vllms_parameters_and_names_the_adapter(fake, backend, v3):
    await backend.load(v3)
    request = chat(v3, "Where is my card?", max_tokens=7, top_p=0.9, seed=11, stop=["\n"])
    request.top_logprobs = 3
    await backend.generate(request)
    body = fake.paths(CHAT)[-1]
    assert body["model"] == "support-intent@v3"
    assert body["messages"] == [{"role": "user", "content": "Where is my card?"}]
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (7, 0.0, 0.9)
    assert (body["seed"], body["stop"]) == (11, ["\n"])
    assert fake.sent[-1]["model"] == "support-intent@v3"


async def test_chat_answer_carries_vllms_tokens_logprobs_and_alternatives(fake, backend, v3):
    await backend.load(v3)
    answer = await backend.generate(chat(v3, "Say hello:", top_logprobs=2))
    assert answer.text == " Hello there, friend."
    assert answer.tokens == [" Hello", " there,", " friend."]
    assert answer.logprobs == pytest.approx([-0.01, -0.02, -0.03])
    assert answer.token_ids == [token_id(t) for t in answer.tokens]
    assert [[(a.token, a.logprob) for a in step] for step in answer.top_logprobs] == [
        [(" Hello", pytest.approx(-0.01)), (" Hello#1", pytest.approx(-1.01))],
        [(" there,", pytest.approx(-0.02)), (" there,#1", pytest.approx(-1.02))],
        [(" friend.", pytest.approx(-0.03)), (" friend.#1", pytest.approx(-1.03))],
    ]
    sent = fake.sent[-1]
    assert answer.finish_reason == "stop"
    assert answer.prompt_tokens == sent["usage"]["prompt_tokens"] > 0
    assert answer.completion_tokens == 3
    assert answer.latency_ms > 0


async def test_table_logprobs_come_through_unchanged(fake, backend, v3):
    await backend.load(v3)
    answer = await backend.generate(chat(v3, "Unsure?"))
    assert answer.logprobs == [-1.5, -2.25]
    assert len(answer.top_logprobs) == 2
    assert all(len(step) == 5 for step in answer.top_logprobs)


async def test_completions_read_the_dict_shaped_logprobs(fake, backend, v3):
    await backend.load(v3)
    request = StudentRequest(model=v3, prompt="Say hello:", top_logprobs=2, max_tokens=2)
    answer = await backend.generate(request)
    body = fake.paths(COMPLETIONS)[-1]
    assert (body["model"], body["prompt"], body["logprobs"]) == (v3.name, "Say hello:", 2)
    assert "top_logprobs" not in body
    raw = fake.sent[-1]["choices"][0]["logprobs"]
    assert answer.text == " Hello there,"
    assert answer.tokens == raw["tokens"] == [" Hello", " there,"]
    assert answer.logprobs == raw["token_logprobs"]
    assert raw["top_logprobs"][0] == {" Hello": -0.01, " Hello#1": -1.01}
    assert [{a.token: a.logprob for a in step} for step in answer.top_logprobs] == raw[
        "top_logprobs"
    ]
    assert answer.finish_reason == "length"
    assert answer.completion_tokens == 2


async def test_a_sampled_token_outside_the_top_k_is_not_an_alternative(fake, backend, v3):
    fake.sample_outside_top_k = True
    await backend.load(v3)
    request = StudentRequest(model=v3, prompt="Say hello:", top_logprobs=2, temperature=0.7)
    answer = await backend.generate(request)
    raw = fake.sent[-1]["choices"][0]["logprobs"]["top_logprobs"][0]
    assert list(raw) == [" Hello", " Hello#1", " Hello#2"]  # vLLM: sampled first, then k
    assert [a.token for a in answer.top_logprobs[0]] == [" Hello#1", " Hello#2"]
    assert answer.logprobs[0] < answer.top_logprobs[0][-1].logprob

    answer = await backend.generate(chat(v3, "Say hello:", top_logprobs=2, temperature=0.7))
    raw_chat = fake.sent[-1]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert [e["token"] for e in raw_chat] == [" Hello", " Hello#1"]  # vLLM: first k entries
    assert [a.token for a in answer.top_logprobs[0]] == [" Hello#1", " Hello"]


async def test_stop_strings_end_the_answer(fake, backend, v3):
    await backend.load(v3)
    answer = await backend.generate(chat(v3, "Say hello:", stop=[","]))
    assert answer.text == " Hello there"
    assert answer.finish_reason == "stop"
    assert "".join(answer.tokens) == answer.text


async def test_a_student_without_adapter_names_the_served_base(fake):
    backend = VLLMBackend(fake.url, served_base=BASE_MODEL)  # no /v1: both spellings work
    try:
        answer = await backend.generate(chat(StudentModel("base@v1", "/models/qwen"), "hi"))
    finally:
        await backend.close()
    assert fake.paths(CHAT)[-1]["model"] == BASE_MODEL
    assert answer.text == "echo: hi"


async def test_token_ids_from_token_id_spelled_tokens_on_older_servers(v3):
    with FakeVLLMRunning(return_tokens_as_token_ids=True, supports_return_token_ids=False) as srv:
        srv.adapters[v3.name] = v3.adapter_path
        backend = VLLMBackend(srv.base_url)
        try:
            answer = await backend.generate(chat(v3, "Say hello:"))
        finally:
            await backend.close()
    assert answer.token_ids == [token_id(p) for p in [" Hello", " there,", " friend."]]
    assert answer.tokens == [f"token_id:{i}" for i in answer.token_ids]


async def test_token_ids_are_empty_when_the_server_cannot_give_them(v3):
    with FakeVLLMRunning(supports_return_token_ids=False) as srv:
        srv.adapters[v3.name] = v3.adapter_path
        backend = VLLMBackend(srv.base_url)
        try:
            answer = await backend.generate(chat(v3, "Say hello:"))
        finally:
            await backend.close()
    assert answer.token_ids == []
    assert answer.tokens == [" Hello", " there,", " friend."]


async def test_an_adapter_lost_in_a_server_restart_is_loaded_again(fake, backend, v3):
    await backend.load(v3)
    fake.restart_engine()
    answer = await backend.generate(chat(v3, "Where is my card?"))
    assert answer.text == "card_arrival"
    assert len(fake.paths(LOAD)) == 2
    assert fake.adapters == {v3.name: v3.adapter_path}
    fake.restart_engine()
    fake.load_delay_s = 0.2  # the other requests find the adapter missing while it reloads
    answers = await asyncio.gather(
        *(backend.generate(chat(v3, "Where is my card?")) for _ in range(4))
    )
    assert [a.text for a in answers] == ["card_arrival"] * 4


# -- faults -------------------------------------------------------------------------------


async def test_unknown_model_is_a_student_error(fake, backend):
    with pytest.raises(StudentError, match=r"404.*`nobody/model` does not exist"):
        await backend.generate(chat(StudentModel("x@v1", "nobody/model"), "hi"))


async def test_an_adapter_that_cannot_be_loaded_again_is_a_student_error(fake, backend, v3):
    await backend.load(v3)
    fake.restart_engine()
    Path(v3.adapter_path, "adapter_config.json").unlink()
    with pytest.raises(StudentError, match="No adapter found"):
        await backend.generate(chat(v3, "hi"))


async def test_server_errors_are_student_errors(fake, backend):
    fake.fail_next = [500]
    with pytest.raises(StudentError, match=r"500.*Internal server error"):
        await backend.generate(chat(StudentModel("b", BASE_MODEL), "hi"))
    fake.fail_next = ["drop"]
    with pytest.raises(StudentError, match=r"connection to vLLM.*failed"):
        await backend.generate(chat(StudentModel("b", BASE_MODEL), "hi"))


async def test_too_many_top_logprobs_is_a_student_error(fake, backend):
    with pytest.raises(StudentError, match="greater than max allowed: 20"):
        await backend.generate(chat(StudentModel("b", BASE_MODEL), "hi", top_logprobs=21))


async def test_a_slow_server_times_out(fake):
    fake.delay_s = 2.0
    backend = VLLMBackend(fake.base_url, timeout_s=0.2)
    try:
        with pytest.raises(StudentError, match=r"timed out after 0.2s"):
            await backend.generate(chat(StudentModel("b", BASE_MODEL), "hi"))
    finally:
        await backend.close()


async def test_a_server_that_is_down_is_a_student_error(v3):
    backend = VLLMBackend(f"http://127.0.0.1:{free_port()}/v1", timeout_s=1.0)
    try:
        with pytest.raises(StudentError, match=r"connection to vLLM.*failed"):
            await backend.generate(chat(StudentModel("b", BASE_MODEL), "hi"))
        with pytest.raises(StudentError, match=r"connection to vLLM.*failed"):
            await backend.load(v3)
    finally:
        await backend.close()


async def test_api_key_is_sent_and_a_wrong_one_is_reported(v3):
    with FakeVLLMRunning(api_key="vk-secret") as server:
        good = VLLMBackend(server.base_url, api_key="vk-secret")
        bad = VLLMBackend(server.base_url, api_key="wrong")
        try:
            await good.load(v3)
            assert (await good.generate(chat(v3, "Where is my card?"))).text == "card_arrival"
            with pytest.raises(StudentError, match=r"401.*Unauthorized"):
                await bad.generate(chat(v3, "Where is my card?"))
        finally:
            await good.close()
            await bad.close()


async def test_a_request_needs_messages_or_a_prompt(backend):
    with pytest.raises(ValueError, match="exactly one"):
        await backend.generate(StudentRequest(model=StudentModel("b", BASE_MODEL)))


async def test_close_is_idempotent(backend):
    await backend.close()
    await backend.close()


# -- helpers ------------------------------------------------------------------------------


class FakeVLLMRunning:
    """A :class:`FakeVLLM` with non-default options, for one ``with`` block."""

    def __init__(self, **options) -> None:
        self.server = FakeVLLM(TABLE, **options)

    def __enter__(self) -> FakeVLLM:
        self.server.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
