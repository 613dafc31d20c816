"""Container health check: the gateway answers ``/health``; the distiller's process is alive."""

import os
import sys
import urllib.request

if os.environ.get("ROLE", "gateway") != "gateway":
    sys.exit(0)  # the distiller worker serves no HTTP; Docker restarts it if it exits
port = os.environ.get("UNDERSTUDY_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
