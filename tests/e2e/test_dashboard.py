"""The dashboard, rendered by a real headless Chromium against a real gateway process over a
week of seeded history, plus ``understudy report`` on the same database."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import gateway_env
from tests.e2e.seed_costs import ROUTED, SHADOWED, Seeded, seed
from tests.gateway_process import ROOT, GatewayProcess
from understudy.gateway.accounting import fmt

ADMIN_KEY = "adm-dashboard-KEY-4e1f"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Seeded]:
    data = tmp_path_factory.mktemp("dash") / "data"
    return data, seed(data / "understudy.db")


@pytest.fixture(scope="module")
def dash(seeded: tuple[Path, Seeded]) -> Iterator[GatewayProcess]:
    env = gateway_env(UNDERSTUDY_ADMIN_KEY=ADMIN_KEY, UNDERSTUDY_STUDENT_BACKEND="none")
    # The teacher is never called: the page reads the database.
    with GatewayProcess("http://127.0.0.1:9/v1", seeded[0], env=env) as gw:
        yield gw


def _chromium(url: str, out_dir: Path) -> tuple[str, str, Path]:
    """Load ``url`` in headless Chromium: (the DOM, Chromium's log, the screenshot)."""
    shot = out_dir / "dashboard.png"
    profile = out_dir / "profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        "--dump-dom",
        "--window-size=1400,1800",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=out_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr, shot


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_renders_in_chromium_with_the_key_numbers(dash, seeded, tmp_path):
    _, facts = seeded
    dom, log, shot = _chromium(f"{dash.url}/dashboard?key={ADMIN_KEY}", tmp_path)
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no script errors, no CSP refusals
    assert shot.stat().st_size > 50_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    tile = re.search(r'id="tile-saved".*?class="value[^"]*">([^<]+)<', dom, re.S)
    assert tile is not None and tile.group(1) == fmt.usd(facts.saved_usd)
    coverage = re.search(r'id="tile-coverage".*?class="value[^"]*">([^<]+)<', dom, re.S)
    assert coverage is not None and coverage.group(1) == fmt.pct(facts.student / facts.requests)
    assert f"{facts.student:,} of {facts.requests:,} requests served by the student" in text
    assert "Projected monthly savings" in text and "Live agreement" in text
    assert f"{ROUTED}@v3" in text and f"Roll back to {ROUTED}@v2" in text
    assert "rejected" in text and "failed" in text and "promoted" in text  # distill runs
    assert "✓ agreement 0.981" in text  # gate results of the champion's run
    assert SHADOWED in text and "shadow" in text
    assert dom.count("<svg") >= 4  # charts are inline SVG
    assert "http" not in re.sub(r"(xmlns|href)=\S+", "", dom.split("<body")[1]).replace(
        "http-equiv", ""
    )  # nothing is loaded from anywhere else


def test_the_key_is_required_and_never_shown(dash):
    page = httpx.get(f"{dash.url}/dashboard")
    assert page.status_code == 401 and 'name="key"' in page.text  # the sign-in form
    wrong = httpx.get(f"{dash.url}/dashboard", params={"key": "nope"})
    assert wrong.status_code == 401
    bearer = httpx.get(f"{dash.url}/dashboard", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert bearer.status_code == 200 and ADMIN_KEY not in bearer.text
    assert "script-src 'nonce-" in bearer.headers["content-security-policy"]
    assert bearer.headers["content-type"] == "text/html; charset=utf-8"  # one charset
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    with httpx.Client(base_url=dash.url) as client:
        login = client.post("/dashboard/login", data={"key": ADMIN_KEY})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and ADMIN_KEY not in cookie
        assert client.get("/dashboard").status_code == 200


def test_rollback_button_endpoint(dash, seeded):
    url = f"/dashboard/rollback/{ROUTED}"
    with httpx.Client(base_url=dash.url) as client:
        assert client.post(url, headers={"x-understudy-dashboard": "1"}).status_code == 401
        client.get("/dashboard", params={"key": ADMIN_KEY})  # the cookie, as a browser would
        assert client.post(url).status_code == 403  # a cross-site form cannot add the header
        done = client.post(url, headers={"x-understudy-dashboard": "1"})
        assert done.status_code == 200, done.text
        assert done.json()["champion"] == f"{ROUTED}@v2"
        page = client.get("/dashboard").text
    assert f"rolled back {ROUTED}@v3 → {ROUTED}@v2" in page


def test_report_prints_the_same_numbers(dash, seeded):
    data, facts = seeded
    run = [sys.executable, "-m", "understudy.cli", "report", "--data-dir", str(data)]
    out = subprocess.run([*run, "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["saved_usd"] == pytest.approx(facts.saved_usd)
    assert (report["requests"], report["student"]) == (facts.requests, facts.student)
    tasks = {t["task"]: t for t in report["tasks"]}
    assert tasks[ROUTED]["champion"] and tasks[SHADOWED]["mode"] == "shadow"
    assert {d["key"] for d in report["by_day"]} and len(report["by_key"]) == 2
    table = subprocess.run([*run, "--since", "7d"], capture_output=True, text=True, cwd=ROOT)
    assert fmt.usd(facts.saved_usd) in table.stdout and ROUTED in table.stdout
    csv_out = subprocess.run([*run, "--format", "csv"], capture_output=True, text=True, cwd=ROOT)
    lines = csv_out.stdout.splitlines()
    assert lines[0].startswith("group,key,requests")
    assert lines[1].startswith(f"total,all,{facts.requests},{facts.student},")
    bad = subprocess.run([*run, "--since", "soon"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "invalid duration" in bad.stderr
