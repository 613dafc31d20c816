"""Traffic through the gateway with the official ``openai`` SDK, the way a client sends it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from understudy.demo.banking77 import SYSTEM_PROMPT, Query
from understudy.demo.config import TASK

CLIENT_MODEL = "gpt-4"
"""The model the demo's client asks for."""


@dataclass(frozen=True)
class Answered:
    """One request: what was asked, what came back and who answered."""

    query: Query
    answer: str
    served_by: str
    """``student`` or ``teacher`` (``x-understudy-served-by``)."""
    student_version: str | None
    latency_ms: float

    @property
    def agrees(self) -> bool:
        """The answer is the teacher's answer."""
        return self.answer == self.query.teacher

    @property
    def correct(self) -> bool:
        """The answer is the gold intent."""
        return self.answer == self.query.gold


def messages(query: Query) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": query.text},
    ]


class Client:
    """Sends demo queries to the gateway, ``concurrency`` at a time."""

    def __init__(self, base_url: str, concurrency: int = 8) -> None:
        from openai import OpenAI

        self.openai = OpenAI(
            base_url=base_url,
            api_key="demo-client",  # the demo gateway is open; the SDK wants a key anyway
            default_headers={"X-Understudy-Task": TASK},
            timeout=60.0,
        )
        self.concurrency = concurrency

    def ask(self, query: Query) -> Answered:
        started = time.perf_counter()
        raw = self.openai.chat.completions.with_raw_response.create(
            model=CLIENT_MODEL, messages=messages(query), max_tokens=16, temperature=0
        )
        completion = raw.parse()
        text = (completion.choices[0].message.content or "").strip()
        return Answered(
            query=query,
            answer=text,
            served_by=raw.headers.get("x-understudy-served-by", "teacher"),
            student_version=raw.headers.get("x-understudy-student-version"),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def send(
        self, queries: Sequence[Query], on_answer: Callable[[Answered], None] | None = None
    ) -> list[Answered]:
        """Ask every query (in order of submission); ``on_answer`` sees each as it lands."""
        out: list[Answered] = []
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="demo-client") as pool:
            for answered in pool.map(self.ask, queries):
                out.append(answered)
                if on_answer is not None:
                    on_answer(answered)
        return out

    def close(self) -> None:
        self.openai.close()
