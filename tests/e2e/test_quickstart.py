"""The README's quickstart works as written. Its client code, taken from the README and run as a
program against a real gateway in front of the stand-in teacher, gets the teacher's answer with
any ``api_key`` on an open gateway, and the teacher sees the gateway's own key; without an
``api_key`` the ``openai`` SDK refuses to start (README: Troubleshooting); once gateway keys are
configured, only those keys get an answer.

The README's first client line was ``OpenAI(base_url="http://127.0.0.1:8000/v1")``, which raises
``Missing credentials`` unless ``OPENAI_API_KEY`` happens to be set.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TEACHER_KEY, gateway_env
from tests.gateway_process import GatewayProcess
from tests.teacher_stub import StubTeacher

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8000/v1"
README_KEY = 'api_key="anything"'


def quickstart_client() -> str:
    """The Python block of the README's quickstart, as a reader would paste it."""
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart") :]
    block = re.search(r"^( *)```python\n(.*?)^\1```", quickstart, re.DOTALL | re.MULTILINE)
    assert block, "no Python block in the README's quickstart"
    indent = block.group(1)
    code = "".join(line.removeprefix(indent) for line in block.group(2).splitlines(True))
    assert README_URL in code and README_KEY in code
    return code


def run_client(code: str, base_url: str) -> subprocess.CompletedProcess[str]:
    """The client as its own program, with no OpenAI variables to lean on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "UNDERSTUDY_"))}
    return subprocess.run(
        [sys.executable, "-c", code.replace(README_URL, base_url)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def chat_calls(teacher: StubTeacher) -> list[dict[str, Any]]:
    return [r for r in teacher.requests if r["path"].endswith("/chat/completions")]


def test_the_quickstart_client_gets_the_teachers_answer_with_any_key(
    gateway: GatewayProcess, teacher: StubTeacher
) -> None:
    done = run_client(quickstart_client(), gateway.base_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok: Hi"  # the stand-in teacher's answer to "Hi"
    (call,) = chat_calls(teacher)
    assert call["headers"]["authorization"] == f"Bearer {TEACHER_KEY}"


def test_without_an_api_key_the_sdk_refuses_before_any_request(
    gateway: GatewayProcess, teacher: StubTeacher
) -> None:
    code = quickstart_client().replace(f", {README_KEY}", "")
    assert "api_key" not in code
    done = run_client(code, gateway.base_url)
    assert done.returncode != 0
    assert "Missing credentials" in done.stderr
    assert chat_calls(teacher) == []


@pytest.fixture(scope="module")
def keyed_gateway(
    stub: StubTeacher, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("keyed") / "data"
    env = gateway_env(UNDERSTUDY_API_KEYS="team-a-key,team-b-key")
    with GatewayProcess(stub.base_url, data, env=env) as gw:
        yield gw


def test_with_gateway_keys_only_a_configured_key_gets_an_answer(
    keyed_gateway: GatewayProcess, teacher: StubTeacher
) -> None:
    refused = run_client(quickstart_client(), keyed_gateway.base_url)
    assert refused.returncode != 0
    assert "AuthenticationError" in refused.stderr and "401" in refused.stderr
    assert chat_calls(teacher) == []

    code = quickstart_client().replace(README_KEY, 'api_key="team-b-key"')
    done = run_client(code, keyed_gateway.base_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok: Hi"
    (call,) = chat_calls(teacher)
    assert call["headers"]["authorization"] == f"Bearer {TEACHER_KEY}"
