import json

import pytest

from understudy.gateway.teacher.contract import TeacherContractError
from understudy.gateway.teacher.sse import (
    EventSplitter,
    EventTooLarge,
    StreamAssembler,
    event_data,
)


def _event(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_splitter_handles_events_split_across_reads():
    splitter = EventSplitter()
    stream = _event({"a": 1}) + _event({"b": 2}) + b"data: [DONE]\n\n"
    out = []
    for i in range(0, len(stream), 7):
        out += splitter.feed(stream[i : i + 7])
    assert [event_data(e) for e in out] == [b'{"a": 1}', b'{"b": 2}', b"[DONE]"]
    assert splitter.pending == b""


def test_splitter_accepts_crlf():
    splitter = EventSplitter()
    assert splitter.feed(b"data: x\r\n\r\ndata: y") == [b"data: x\n\n"]
    assert splitter.pending == b"data: y"


def test_splitter_joins_a_crlf_split_between_reads():
    splitter = EventSplitter()
    stream = b"data: x\r\n\r\ndata: y\r\n\r\n: keep-alive\r\n\r\n"
    out = []
    for i in range(len(stream)):
        out += splitter.feed(stream[i : i + 1])
    assert out == [b"data: x\n\n", b"data: y\n\n", b": keep-alive\n\n"]
    assert splitter.pending == b""


def test_an_event_without_an_end_is_refused_past_the_cap():
    """A teacher streaming megabytes with no blank line once held the event loop for seconds
    (the buffer was copied and rescanned on every read)."""
    splitter = EventSplitter(max_event_bytes=1024 * 1024)
    piece = b"data: " + b"x" * 65536
    with pytest.raises(EventTooLarge):
        for _ in range(64):
            splitter.feed(piece)
    assert len(splitter.pending) <= 1024 * 1024 + len(piece)


def test_the_default_cap_is_a_mebibyte_and_a_large_event_under_it_passes():
    splitter = EventSplitter()
    big = b"data: " + b"y" * 900_000
    assert splitter.feed(big[:400_000]) == []
    assert splitter.feed(big[400_000:] + b"\n\n") == [big + b"\n\n"]
    with pytest.raises(EventTooLarge):
        splitter.feed(b"z" * (1024 * 1024 + 1))


def test_chat_chunks_assemble_into_a_completion_with_tool_calls_and_logprobs():
    asm = StreamAssembler("chat.completions")
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m-2024"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "Hel"},
                    "logprobs": {"content": [{"token": "Hel", "logprob": -0.1}]},
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "lo"},
                    "logprobs": {"content": [{"token": "lo", "logprob": -0.2}]},
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 1,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    },
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 1,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 1,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
                }
            ],
        },
        {
            **base,
            "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"},
                {"index": 1, "delta": {}, "finish_reason": "tool_calls"},
            ],
        },
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        },
    ]
    for c in chunks:
        asm.add(json.dumps(c).encode())
    asm.add(b"[DONE]")
    out = asm.result()
    assert asm.done and out["object"] == "chat.completion" and out["model"] == "m-2024"
    first, second = out["choices"]
    assert first["message"]["content"] == "Hello" and first["finish_reason"] == "stop"
    assert [t["token"] for t in first["logprobs"]["content"]] == ["Hel", "lo"]
    call = second["message"]["tool_calls"][0]
    assert call["id"] == "call_1" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert second["finish_reason"] == "tool_calls"
    assert out["usage"]["total_tokens"] == 7


def test_completions_chunks_assemble():
    asm = StreamAssembler("completions")
    for text in ("a", "b", "c"):
        asm.add(
            json.dumps(
                {
                    "id": "x",
                    "object": "text_completion",
                    "model": "m",
                    "choices": [{"index": 0, "text": text}],
                }
            ).encode()
        )
    asm.add(b"[DONE]")
    assert asm.result()["choices"][0]["text"] == "abc"


def test_error_chunk_and_garbage():
    asm = StreamAssembler("chat.completions")
    asm.add(b'{"error": {"message": "boom"}}')
    assert asm.error == {"message": "boom"} and not asm.done
    # HTML inside the stream was relayed as it came: it breaks the contract now.
    with pytest.raises(TeacherContractError, match="not JSON"):
        asm.add(b"<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(TeacherContractError, match=r"usage\.prompt_tokens"):
        asm.add(b'{"choices": [], "usage": {"prompt_tokens": "12"}}')


def test_responses_events_assemble_from_the_terminal_event_and_a_cut_keeps_finished_items():
    from understudy.gateway.teacher.sse import assembler_for

    asm = assembler_for("responses")
    item = {"id": "msg_1", "type": "message", "content": [{"type": "output_text", "text": "hi"}]}
    opening = {"id": "resp_1", "status": "in_progress", "output": []}
    events = [
        {"type": "response.created", "sequence_number": 0, "response": opening},
        {"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi"},
        {
            "type": "response.output_item.done",
            "sequence_number": 2,
            "output_index": 0,
            "item": item,
        },
    ]
    for event in events:
        asm.add(json.dumps(event).encode())
    assert not asm.done and asm.sequence_number == 2
    assert asm.result() == {**opening, "output": [item]}  # what a cut stream logs

    usage = {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6}
    final = {"id": "resp_1", "status": "completed", "output": [item], "usage": usage}
    asm.add(json.dumps({"type": "response.completed", "response": final}).encode())
    assert asm.done and asm.error is None and asm.result() == final and asm.usage == usage


def test_a_failed_response_or_an_error_event_is_an_error():
    from understudy.gateway.teacher.sse import assembler_for

    failed = assembler_for("responses")
    error = {"code": "server_error", "message": "boom"}
    failed.add(json.dumps({"type": "response.failed", "response": {"error": error}}).encode())
    assert failed.done and failed.error == error
    errored = assembler_for("responses")
    errored.add(b'{"type": "error", "message": "bad", "code": "x", "param": null}')
    assert errored.done and errored.error == {"message": "bad", "code": "x", "param": None}
