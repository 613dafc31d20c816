"""A lean HTTP/1.1 keep-alive load generator: pre-encoded requests over raw asyncio streams,
measuring latency to the last byte and time to the first body byte."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Sample:
    latency: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    errors: int = 0
    ok_ids: list[str] = field(default_factory=list)


def build_request(
    base_url: str,
    body: bytes,
    api_key: str = "sk-bench-0123456789abcdef0123456789abcdef",
    endpoint: str = "/chat/completions",
) -> tuple[str, int, bytes]:
    url = urlsplit(base_url)
    path = url.path.rstrip("/") + endpoint
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {url.hostname}:{url.port}\r\n"
        f"content-type: application/json\r\nauthorization: Bearer {api_key}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    return url.hostname or "127.0.0.1", url.port or 80, head + body


async def _read_response(
    reader: asyncio.StreamReader, started: float, sample: Sample, keep_ids: bool
) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    first = None
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
        first = time.perf_counter()
    else:  # chunked
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if first is None and size:
                first = time.perf_counter()
            if size == 0:
                break
            del data
    end = time.perf_counter()
    if status != 200:
        sample.errors += 1
        return
    sample.latency.append(end - started)
    sample.ttfb.append((first or end) - started)
    if keep_ids and b"x-request-id" in headers:
        sample.ok_ids.append(headers[b"x-request-id"].decode())


async def run_load(
    base_url: str,
    body: bytes,
    concurrency: int,
    *,
    duration: float = 5.0,
    total: int | None = None,
    keep_ids: bool = False,
    warmup: float = 0.5,
    endpoint: str = "/chat/completions",
) -> tuple[Sample, float]:
    """Closed-loop load: ``concurrency`` connections, each sending one request at a time to
    ``endpoint``. Returns the samples (after warm-up) and the measured wall time."""
    host, port, request = build_request(base_url, body, endpoint=endpoint)
    sample = Sample()
    sent = 0
    t0 = time.perf_counter()
    measure_from = t0 + (warmup if total is None else 0.0)
    deadline = measure_from + duration

    async def worker() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                if total is not None:
                    if sent >= total:
                        return
                    sent += 1
                elif time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                writer.write(request)
                target = sample if started >= measure_from else Sample()
                await _read_response(reader, started, target, keep_ids)
        except (ConnectionError, asyncio.IncompleteReadError):
            sample.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - (measure_from if total is None else t0)
    return sample, wall
