"""What the serving layer answers with: a whole body or a stream of events, plus headers.

The api layer turns these into HTTP responses; serving never sees the web framework.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


@dataclass
class BodyReply:
    status_code: int
    headers: dict[str, str]
    content: bytes


@dataclass
class StreamReply:
    headers: dict[str, str]
    events: AsyncGenerator[bytes, None]


Reply = BodyReply | StreamReply
