"""The student engine's settings (``[student]``): which backend, and how it serves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StudentConfig:
    """The student engine that answers confident requests."""

    backend: str = "local"
    """``local`` (transformers in this process), ``vllm`` (a vLLM server over HTTP) or ``none``."""
    vllm_url: str = "http://127.0.0.1:8001/v1"
    """Base URL of the vLLM OpenAI server (``vllm serve BASE --enable-lora``)."""
    vllm_api_key: str | None = None
    """Key for the vLLM server, if it was started with ``--api-key``."""
    device: str = "auto"
    """Local backend device: ``auto`` (a GPU when present), ``cpu`` or ``cuda``."""
    threads: int = 0
    """Local backend: torch threads of the in-process student. 0: the cores available to the
    gateway less one (for its event loop), at least 1."""
    max_batch_size: int = 16
    """Local backend: most requests generated together in one batch."""
    batch_window_ms: float = 5.0
    """Local backend: how long the first request of a batch waits for others."""
    max_tokens: int = 256
    """Longest student answer, whatever the request asks."""
    timeout_s: float = 30.0
    """Longest a student generation may take before the request goes to the teacher."""
    tools: bool = False
    """Whether students answer requests carrying ``tools`` (off: those go to the teacher)."""
    degraded_mode: str = "serve"
    """Teacher failed, student answered: ``serve`` it (marked degraded) or ``fail``."""
    reload_interval_s: float = 2.0
    """How often serving checks the registry for a new champion, a rollback or a mode change."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``student.*`` setting with an impossible value."""
        if self.backend not in ("local", "vllm", "none"):
            raise ValueError("student.backend must be one of local, vllm, none")
        if self.degraded_mode not in ("serve", "fail"):
            raise ValueError("student.degraded_mode must be serve or fail")
        if self.threads < 0:
            raise ValueError("student.threads must be >= 0 (0: auto)")
