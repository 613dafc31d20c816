"""Realistic logged traffic for ``bench/scale.py``: a gateway's mix of tasks, endpoints and
outcomes built from banking77's queries; demo-shaped rows; long chat transcripts."""

from __future__ import annotations

import importlib
import json
import pydoc
import random
import time
from collections.abc import Iterator
from typing import Any

from bench._banking77 import SYSTEM, label_names, read_csv
from understudy.storage.records import RequestRecord

DAY = 86400.0
TASK = "banking77"
TASKS = {  # task: share of the traffic
    TASK: 0.40,
    "support": 0.20,
    "summarize": 0.10,
    "extract": 0.10,
}
AUTO_TASKS = 40
"""Fingerprinted tasks (``auto-...``) sharing what is left."""


class Traffic:
    """Logged rows shaped like a gateway's, from banking77's queries and intents."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        rows = read_csv("train.csv")
        names = label_names()
        self.queries = [r["text"] for r in rows]
        self.intents = [names[r["label"]] for r in rows]
        self.n = 0

    def rows(self, count: int, start: float, span: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """``count`` requests evenly over ``[start, start + span)``, with their attempt rows."""
        step = span / max(count, 1)
        for i in range(count):
            yield from self._one(start + i * step + self.rng.random() * step)

    def _one(self, at: float) -> Iterator[tuple[str, dict[str, Any]]]:
        rng = self.rng
        self.n += 1
        rid = f"req_{self.n:010d}_{rng.getrandbits(32):08x}"
        task = self._task()
        kind = rng.random()
        if kind < 0.06:
            yield "requests", self._passthrough(rid, at, task)
            return
        served_by = rng.choices(["teacher", "student", "shadow"], [0.62, 0.33, 0.05])[0]
        status = rng.choices(["ok", "error", "incomplete"], [0.97, 0.02, 0.01])[0]
        endpoint = "responses" if kind < 0.12 else "chat.completions"
        request, answer = self._bodies(task)
        record = RequestRecord(
            id=rid,
            created_at=at,
            endpoint=endpoint,
            task=task,
            task_source="header",
            requested_model="gpt-4o-mini",
            teacher_model="gpt-4o-mini-2024-07-18" if served_by != "student" else None,
            served_by=served_by,
            status=status,
            http_status=200 if status == "ok" else 502,
            error=None if status == "ok" else "the teacher answered 502",
            request_json=json.dumps(self._request(endpoint, request)),
            response_json=self._response(endpoint, answer, at) if status == "ok" else None,
            latency_ms=rng.lognormvariate(6.0, 0.6) if served_by != "student" else 35.0,
            prompt_tokens=len(json.dumps(request)) // 4,
            completion_tokens=len(answer) // 4 + 1,
            api_key_id=f"key_{rng.randrange(5)}",
            route_reason=f"shadow of req_{self.n - 1:010d}" if served_by == "shadow" else None,
            confidence=rng.random() if served_by == "student" else None,
            student_version=f"{task}@v3" if served_by == "student" else None,
            teacher_cost_usd=0.0004 if served_by != "student" else 0.0,
            student_cost_usd=0.00002 if served_by == "student" else 0.0,
            avoided_cost_usd=0.0004 if served_by == "student" else 0.0,
            saved_usd=0.00038 if served_by == "student" else 0.0,
            response_id=f"resp_{rid[4:]}" if endpoint == "responses" else None,
            stored=endpoint == "responses" or None,
        )
        record.total_tokens = (record.prompt_tokens or 0) + (record.completion_tokens or 0)
        yield "requests", record.as_row()
        if served_by == "student":
            yield (
                "student_attempts",
                {
                    "request_id": rid,
                    "created_at": at,
                    "task": task,
                    "student_version": f"{task}@v3",
                    "kind": "served",
                    "text": answer,
                    "confidence": record.confidence,
                    "decision": "serve",
                    "latency_ms": 35.0,
                },
            )

    def _task(self) -> str:
        r = self.rng.random()
        for task, share in TASKS.items():
            if r < share:
                return task
            r -= share
        return f"auto-{self.rng.randrange(AUTO_TASKS):012x}"

    def _query(self) -> tuple[str, str]:
        i = self.rng.randrange(len(self.queries))
        return self.queries[i], self.intents[i]

    def _bodies(self, task: str) -> tuple[list[dict[str, str]], str]:
        """The chat messages of one request and the answer."""
        query, intent = self._query()
        if task == "support":
            turns = [{"role": "system", "content": "You are the bank's support assistant."}]
            for _ in range(self.rng.randint(1, 3)):
                earlier, earlier_intent = self._query()
                turns += [
                    {"role": "user", "content": earlier},
                    {"role": "assistant", "content": f"I can help with {earlier_intent}."},
                ]
            turns.append({"role": "user", "content": query})
            return turns, f"Sorry to hear that. About {intent}: here is what to do next."
        if task == "summarize":
            text = " ".join(self._query()[0] for _ in range(self.rng.randint(4, 10)))
            summary = " ".join(self._query()[0] for _ in range(2))
            return [{"role": "user", "content": f"Summarise: {text}"}], summary
        if task == "extract":
            answer = json.dumps({"intent": intent, "amount": self.rng.randrange(1, 500)})
            return [{"role": "system", "content": "Reply in JSON."}, _user(query)], answer
        return [{"role": "system", "content": SYSTEM}, _user(query)], intent

    def _request(self, endpoint: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        if endpoint == "responses":
            system = [m["content"] for m in messages if m["role"] == "system"]
            user = [m for m in messages if m["role"] != "system"]
            return {"model": "gpt-4o-mini", "instructions": " ".join(system), "input": user}
        return {"model": "gpt-4o-mini", "messages": messages, "temperature": 0, "max_tokens": 256}

    def _response(self, endpoint: str, answer: str, at: float) -> str:
        usage = {"prompt_tokens": 60, "completion_tokens": len(answer) // 4 + 1}
        if endpoint == "responses":
            item = {"type": "output_text", "text": answer, "annotations": []}
            return json.dumps(
                {
                    "id": f"resp_{self.rng.getrandbits(96):024x}",
                    "object": "response",
                    "created_at": int(at),
                    "status": "completed",
                    "model": "gpt-4o-mini-2024-07-18",
                    "output": [{"type": "message", "role": "assistant", "content": [item]}],
                    "usage": usage,
                }
            )
        return json.dumps(
            {
                "id": f"chatcmpl-{self.rng.getrandbits(96):024x}",
                "object": "chat.completion",
                "created": int(at),
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
                "system_fingerprint": "fp_44709d6fcb",
            }
        )

    def _passthrough(self, rid: str, at: float, task: str) -> dict[str, Any]:
        return RequestRecord(
            id=rid,
            created_at=at,
            endpoint="embeddings",
            task=task,
            task_source="header",
            requested_model="text-embedding-3-small",
            served_by="passthrough",
            status="ok",
            request_json="",
            http_method="POST",
            path_label="/v1/embeddings",
            bytes_in=180,
            bytes_out=33000,
            latency_ms=120.0,
            prompt_tokens=12,
            total_tokens=12,
            api_key_id=f"key_{self.rng.randrange(5)}",
        ).as_row()


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


DOC_MODULES = [
    *("json", "os.path", "random", "shutil", "statistics", "threading", "collections"),
    *("itertools", "functools", "pathlib", "subprocess", "asyncio", "logging", "argparse"),
    *("csv", "datetime", "decimal", "fractions", "heapq", "bisect", "string", "textwrap", "re"),
    *("sqlite3", "zipfile", "tarfile", "gzip", "hashlib", "hmac", "secrets", "uuid"),
    *("urllib.parse", "http.client", "email.message", "socket", "selectors", "ssl", "typing"),
    *("dataclasses", "enum", "contextlib", "abc", "copy", "pprint", "inspect", "traceback"),
    *("unittest", "doctest", "difflib", "calendar", "locale", "gettext", "shlex", "glob"),
    *("fnmatch", "tempfile", "io", "codecs", "struct", "array", "queue", "sched"),
    *("concurrent.futures", "multiprocessing"),
]


def documentation() -> str:
    """About 2 MB of English prose and code: the standard library's documentation."""
    return "\n".join(
        pydoc.plain(pydoc.render_doc(importlib.import_module(name), renderer=pydoc.plaintext))
        for name in DOC_MODULES
    )


def transcripts(conversations: int, turns: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Long chat transcripts: each turn's request carries the whole conversation so far; each
    answer is a passage (400-2,000 characters) of the standard library's documentation, taken
    further into it as the conversations go on, so that later answers are text the log's
    dictionary (trained on the first bodies) has not seen."""
    rng = random.Random(7)
    corpus = documentation()
    queries = [r["text"] for r in read_csv("train.csv")]
    at = time.time() - DAY
    n = 0
    for c in range(conversations):
        messages = [{"role": "system", "content": "You are a helpful Python assistant."}]
        region = int(len(corpus) * c / conversations)
        for t in range(turns):
            messages.append(
                _user(f"{rng.choice(queries)} How would I do that in Python? ({c}.{t})")
            )
            begin = corpus.find("\n", region + rng.randrange(len(corpus) // conversations)) + 1
            answer = corpus[begin : begin + rng.randint(400, 2000)]
            n += 1
            yield (
                "requests",
                RequestRecord(
                    id=f"req_t{n:08d}",
                    created_at=at + n,
                    endpoint="chat.completions",
                    task="assistant",
                    task_source="header",
                    requested_model="gpt-4o",
                    served_by="teacher",
                    status="ok",
                    request_json=json.dumps({"model": "gpt-4o", "messages": messages}),
                    response_json=json.dumps(
                        {
                            "id": f"chatcmpl-{rng.getrandbits(96):024x}",
                            "object": "chat.completion",
                            "model": "gpt-4o-2024-08-06",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": answer},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {"prompt_tokens": 900, "completion_tokens": 400},
                        }
                    ),
                ).as_row(),
            )
            messages.append({"role": "assistant", "content": answer})


def demo_traffic(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """The demo's traffic: banking77 queries answered with their intent, as the demo logs."""
    traffic = Traffic(seed=3)
    at = time.time() - DAY
    for i in range(n):
        query, intent = traffic._query()
        yield (
            "requests",
            RequestRecord(
                id=f"req_d{i:08d}",
                created_at=at + i,
                endpoint="chat.completions",
                task=TASK,
                task_source="header",
                requested_model="gpt-4",
                teacher_model="gpt-4-0613",
                served_by="teacher",
                status="ok",
                http_status=200,
                request_json=json.dumps(
                    {
                        "model": "gpt-4",
                        "messages": [{"role": "system", "content": SYSTEM}, _user(query)],
                        "max_tokens": 16,
                        "temperature": 0,
                    },
                    separators=(",", ":"),
                ),
                response_json=traffic._response("chat.completions", intent, at + i),
                latency_ms=3.4,
                prompt_tokens=65,
                completion_tokens=8,
                total_tokens=73,
                teacher_cost_usd=0.0002,
            ).as_row(),
        )
