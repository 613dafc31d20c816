"""Row shapes written to the log. Plain dataclasses: the writer stores ``as_row()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RequestRecord:
    """One request as the gateway saw it. Bodies are JSON text; no secret is ever stored."""

    id: str
    created_at: float
    endpoint: str
    task: str
    task_source: str
    requested_model: str | None
    served_by: str
    status: str
    request_json: str
    response_json: str | None = None
    teacher_model: str | None = None
    http_status: int | None = None
    error: str | None = None
    stream: bool = False
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    api_key_id: str | None = None
    route_reason: str | None = None
    confidence: float | None = None
    student_version: str | None = None
    # Cost accounting (USD, see gateway/costs.py): what the teacher charged, what the student's
    # work cost, the teacher cost a student answer avoided, and the net saving of this row.
    teacher_cost_usd: float | None = None
    student_cost_usd: float | None = None
    avoided_cost_usd: float | None = None
    saved_usd: float | None = None
    cost_estimated: int | None = None
    """1 when ``avoided_cost_usd`` is an estimate: a student answer valued before its task's
    teacher/student token ratio was learned."""
    # Pass-through calls (``served_by = "passthrough"``, ``endpoint`` the family): the method,
    # the path with ids replaced (``/v1/files/{id}/content``) and the body bytes each way.
    http_method: str | None = None
    path_label: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    # The Responses API: the id answered with, whether it may be retrieved and chained
    # (``store``), and when ``DELETE /v1/responses/{id}`` removed it.
    response_id: str | None = None
    stored: bool | None = None
    deleted_at: float | None = None

    TABLE = "requests"

    def as_row(self) -> dict[str, Any]:
        row = dict(self.__dict__)  # every field is a scalar: no deep copy needed
        row["stream"] = int(self.stream)
        row["stored"] = None if self.stored is None else int(self.stored)
        return row


# Request statuses.
STATUS_OK = "ok"  # answered in full
STATUS_ERROR = "error"  # the client received an error (teacher 4xx/5xx, timeout)
STATUS_INCOMPLETE = "incomplete"  # the client went away before the answer ended
STATUS_CUT = "cut"  # the teacher's stream broke off; the client got an error event

SERVED_PASSTHROUGH = "passthrough"  # ``served_by`` of a relayed call: never a training example


def valid_task_name(name: str) -> bool:
    """Task names are 1-64 characters of letters, digits, ``.``, ``_`` and ``-``."""
    return (
        0 < len(name) <= 64
        and all(c.isalnum() or c in "._-" for c in name)
        and name.isascii()
        and name.strip(".") != ""  # "." and ".." would name directories in paths
    )
