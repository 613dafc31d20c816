"""Task identity: which task a request belongs to.

In order: the ``X-Understudy-Task`` header; a configured route for the requested ``model``;
a fingerprint of the prompt's fixed part (the system/developer messages of a chat, a Responses
request's ``instructions`` and system/developer input items, or the first line of a completion
prompt), so a drop-in user gets per-task logs without changing code.
Numbers in the fixed part are masked so templated prompts ("Today is 2026-11-22") keep one task.
At most ``max_auto_tasks`` fingerprints become tasks (:class:`AutoTasks`); the prompts of further
ones are logged under :data:`OVERFLOW_TASK`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from understudy.gateway.errors import InvalidRequestError
from understudy.storage.records import valid_task_name

TASK_HEADER = "x-understudy-task"
OVERFLOW_TASK = "auto-overflow"
"""Where requests of fingerprints beyond ``max_auto_tasks`` are logged."""
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+")


def resolve_task(
    header: str | None,
    model: str | None,
    routes: Mapping[str, str],
    body: Mapping[str, Any],
    endpoint: str,
) -> tuple[str, str]:
    """Return ``(task, source)`` where source is ``header``, ``route`` or ``fingerprint``."""
    if header is not None:
        header = header.strip()
        if not valid_task_name(header):
            raise InvalidRequestError(
                "X-Understudy-Task must be 1-64 characters of letters, digits, '.', '_' or '-'",
                param="X-Understudy-Task",
            )
        return header, "header"
    if model is not None and model in routes:
        return routes[model], "route"
    return fingerprint_task(body, endpoint), "fingerprint"


def fingerprint_task(body: Mapping[str, Any], endpoint: str) -> str:
    """A stable, readable task name from the prompt's fixed part, e.g. ``auto-you-are-a-3f2a1c``."""
    fixed = _fixed_part(body, endpoint)
    normal = _SPACE.sub(" ", _DIGITS.sub("#", fixed)).strip().lower()
    if not normal:
        # No system prompt: the model name and the tool set still separate features.
        offered = body.get("tools")
        tools = offered if isinstance(offered, list) else []
        names = sorted(
            str((t.get("function") or t).get("name", "")) for t in tools if isinstance(t, dict)
        )
        normal = f"model:{body.get('model')}|tools:{','.join(names)}"
    digest = hashlib.sha256(normal.encode()).hexdigest()[:6]
    words = _WORD.findall(normal.split("|", 1)[0] if normal.startswith("model:") else normal)
    slug = "-".join(words[:4])[:40].strip("-")
    return f"auto-{slug}-{digest}" if slug else f"auto-{digest}"


def _fixed_part(body: Mapping[str, Any], endpoint: str) -> str:
    if endpoint == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]
        return prompt.split("\n", 1)[0] if isinstance(prompt, str) else ""
    parts: list[str] = []
    messages = body.get("messages") or []
    if endpoint == "responses":
        instructions = body.get("instructions")
        parts += [instructions] if isinstance(instructions, str) and instructions else []
        given = body.get("input")
        messages = given if isinstance(given, list) else []
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") in ("system", "developer"):
            parts.append(_text(message.get("content")))
    return "\n".join(parts)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


class AutoTasks:
    """The tasks named by fingerprint, at most ``limit`` of them: a new fingerprint past the
    limit is :data:`OVERFLOW_TASK` (and counted), so prompts that differ each time (a name in
    the system prompt) cannot make tasks, metrics and dashboard rows without end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.known: set[str] = set()
        self.overflowed = 0

    def seed(self, names: Iterable[str]) -> None:
        """Tasks already in the log (at start-up): they count towards the limit."""
        for name in names:
            if len(self.known) >= self.limit:
                break
            self.known.add(name)

    def admit(self, task: str) -> str:
        """``task`` if known or room is left, else :data:`OVERFLOW_TASK`."""
        if task in self.known:
            return task
        if len(self.known) < self.limit:
            self.known.add(task)
            return task
        self.overflowed += 1
        return OVERFLOW_TASK
