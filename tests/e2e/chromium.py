"""A real headless Chromium driven over the DevTools protocol: load a page at a given viewport
width (a phone's emulated as one, viewport meta and all), read its DOM, measure its layout
with a script of the test's own, and take a screenshot."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

LAYOUT_PROBE = """(() => {
  const doc = document.documentElement;
  const out = [];
  for (const el of document.querySelectorAll(
      'header, .hero, .tile, .strip, .panel, .card, table, svg.chart')) {
    const r = el.getBoundingClientRect();
    if (r.width && (r.left < -0.5 || r.right > innerWidth + 0.5)) {
      out.push(`${el.tagName.toLowerCase()}.${el.className.baseVal ?? el.className}` +
               `#${el.id} spans ${r.left.toFixed(1)}..${r.right.toFixed(1)}`);
    }
  }
  return {innerWidth, scrollWidth: doc.scrollWidth, outside: out,
          header: document.querySelector('header').getBoundingClientRect().height,
          lineHeight: parseFloat(getComputedStyle(document.querySelector('header h1')).lineHeight)};
})()"""
"""Whether anything runs off the side: the document's scroll width, and every block that
reaches past the viewport."""


@dataclass
class Loaded:
    dom: str
    layout: dict[str, Any]
    screenshot: Path
    errors: list[str] = field(default_factory=list)
    """Console errors and refusals (CSP, failed loads) the page caused."""


def load(url: str, out_dir: Path, *, width: int, height: int = 1800) -> Loaded:
    """Open ``url`` at ``width`` CSS pixels, wait for its load event, measure it and save a
    full-page screenshot as ``out_dir/dashboard-{width}.png``."""
    assert CHROMIUM is not None
    profile = out_dir / f"profile-{width}"
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a previous run's port
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = _devtools_port(profile / "DevToolsActivePort", proc)
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        target = next(p for p in pages if p["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            return _load(_Session(ws), url, out_dir, width, height)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _load(cdp: _Session, url: str, out_dir: Path, width: int, height: int) -> Loaded:
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=width < 600,
    )
    for domain in ("Page", "Runtime", "Log"):
        cdp.call(f"{domain}.enable")
    cdp.call("Page.navigate", url=url)
    cdp.wait_for("Page.loadEventFired")
    layout = cdp.evaluate(LAYOUT_PROBE)
    dom = cdp.evaluate("document.documentElement.outerHTML")
    shot = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    path = out_dir / f"dashboard-{width}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return Loaded(dom=dom, layout=layout, screenshot=path, errors=cdp.errors)


class _Session:
    """Commands and their answers over one DevTools connection; events are kept as they
    pass (console errors collected)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.seen: list[str] = []
        self.errors: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = self._next()
            if message.get("id") == ident:
                assert "error" not in message, message
                return message.get("result") or {}

    def wait_for(self, event: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while event not in self.seen:
            assert time.monotonic() < deadline, f"no {event} within {timeout_s:g} s"
            self._next(timeout_s)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]

    def _next(self, timeout_s: float = 60.0) -> dict[str, Any]:
        message = json.loads(self.ws.recv(timeout_s))
        method = message.get("method")
        if method:
            self.seen.append(method)
            params = message.get("params") or {}
            if method == "Log.entryAdded" and params["entry"]["level"] == "error":
                self.errors.append(params["entry"]["text"])
            elif method == "Runtime.exceptionThrown":
                self.errors.append(str(params["exceptionDetails"].get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                self.errors.append(json.dumps(params.get("args")))
        return message


def _devtools_port(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "chromium exited at start"
        if path.exists():
            first = path.read_text().split("\n", 1)[0].strip()
            if first.isdigit():
                return int(first)
        time.sleep(0.05)
    raise AssertionError(f"chromium did not open its DevTools port within {timeout_s:g} s")
