import pytest

from understudy.gateway.errors import InvalidRequestError
from understudy.gateway.serving.tasks import fingerprint_task, resolve_task


def chat(system=None, user="hi", model="gpt-4o"):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    return {"model": model, "messages": messages}


def test_header_wins_over_route_and_fingerprint():
    body = chat("You are a support bot")
    assert resolve_task("billing", "gpt-4o", {"gpt-4o": "routed"}, body, "chat.completions") == (
        "billing",
        "header",
    )
    assert resolve_task(None, "gpt-4o", {"gpt-4o": "routed"}, body, "chat.completions") == (
        "routed",
        "route",
    )
    task, source = resolve_task(None, "gpt-4o", {}, body, "chat.completions")
    assert source == "fingerprint" and task.startswith("auto-you-are-a-support")


def test_invalid_header_is_refused():
    with pytest.raises(InvalidRequestError) as info:
        resolve_task("bad task/../x", None, {}, chat(), "chat.completions")
    assert info.value.param == "X-Understudy-Task"


def test_fingerprint_ignores_user_text_and_numbers_in_the_template():
    a = fingerprint_task(
        chat("Classify the intent. Today is 2026-11-22.", "card lost"), "chat.completions"
    )
    b = fingerprint_task(
        chat("Classify the intent. Today is 2026-11-23.", "refund?"), "chat.completions"
    )
    c = fingerprint_task(chat("Summarise the ticket.", "card lost"), "chat.completions")
    assert a == b != c


def test_fingerprint_without_system_prompt_uses_model_and_tools():
    a = fingerprint_task(chat(model="m1"), "chat.completions")
    b = fingerprint_task(chat(model="m2"), "chat.completions")
    tools = {**chat(model="m1"), "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert len({a, b, fingerprint_task(tools, "chat.completions")}) == 3


def test_fingerprint_of_completion_prompt_uses_first_line():
    a = fingerprint_task({"prompt": "Translate to French:\nhello"}, "completions")
    b = fingerprint_task({"prompt": "Translate to French:\ngoodbye"}, "completions")
    assert a == b and a.startswith("auto-translate-to-french")


def test_a_responses_request_is_fingerprinted_by_its_instructions_and_system_items():
    from understudy.gateway.serving.tasks import fingerprint_task

    chat = {
        "messages": [
            {"role": "system", "content": "Sort tickets."},
            {"role": "user", "content": "a"},
        ]
    }
    by_instructions = {"instructions": "Sort tickets.", "input": "b"}
    by_items = {
        "input": [{"role": "system", "content": "Sort tickets."}, {"role": "user", "content": "c"}]
    }
    task = fingerprint_task(chat, "chat.completions")
    assert task.startswith("auto-sort-tickets")
    assert fingerprint_task(by_instructions, "responses") == task
    assert fingerprint_task(by_items, "responses") == task
