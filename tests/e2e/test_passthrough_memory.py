"""A 200 MB upload through the gateway: relayed as it arrives, so the gateway process's
resident memory stays flat (it grows by less than 30 MB)."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import openai

from tests.e2e.conftest import gateway_env
from tests.gateway_process import GatewayProcess
from tests.teacher_stub import StubTeacher

UPLOAD_BYTES = 200 * 1024 * 1024
RSS_GROWTH_BOUND = 30 * 1024 * 1024


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


class PeakRss:
    """Samples a process's resident memory every few milliseconds until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_upload(path: Path) -> str:
    """200 MB of varied bytes on disk; returns their sha256."""
    digest = hashlib.sha256()
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB
    with path.open("wb") as f:
        for i in range(UPLOAD_BYTES // len(block)):
            chunk = i.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def test_a_200_mb_upload_keeps_the_gateway_memory_flat(
    stub: StubTeacher, teacher: StubTeacher, tmp_path: Path
) -> None:
    upload = tmp_path / "big.jsonl"
    sha = write_upload(upload)
    with GatewayProcess(stub.base_url, tmp_path / "data", env=gateway_env()) as gw:
        assert gw.proc is not None
        client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0, timeout=300)
        # Warm up: the first relay's imports and buffers are not the upload's.
        client.files.create(file=("warm.jsonl", io.BytesIO(b"w" * (4 << 20))), purpose="batch")
        baseline = rss(gw.proc.pid)
        with PeakRss(gw.proc.pid) as peak, upload.open("rb") as f:
            created = client.files.create(file=("big.jsonl", f), purpose="batch")
        growth = peak.peak - baseline
        assert created.bytes == UPLOAD_BYTES
        assert teacher.passthrough.uploads[created.id].sha256 == sha
        row = gw.wait_rows("path_label like '/v1/files%'", count=2)[-1]
        assert row["bytes_in"] > UPLOAD_BYTES
        assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB"
        mib = 2**20
        print(f"gateway RSS: baseline {baseline / mib:.1f} MiB, growth {growth / mib:.1f} MiB")
