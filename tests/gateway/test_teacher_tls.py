"""The teacher client's TLS: verified against the CA bundle, read once for all its pools."""

from __future__ import annotations

import asyncio
import ssl

from understudy.gateway.config import TeacherConfig
from understudy.gateway.teacher.client import TeacherClient


def test_the_pools_share_one_verifying_tls_context(monkeypatch):
    # Found: each of the client's 16 connection pools made a TLS context of its own, reading
    # the whole CA bundle each time: half a second of every gateway start.
    made: list[ssl.SSLContext] = []
    create = ssl.create_default_context

    def counted(*args, **kwargs) -> ssl.SSLContext:
        made.append(create(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    client = TeacherClient(TeacherConfig(url="https://api.openai.com/v1"))
    try:
        assert len(made) == 1
        [tls] = made
        assert tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname
        assert tls.cert_store_stats()["x509_ca"] > 0
    finally:
        asyncio.run(client.close())
