"""Time of the secret (and PII) scrubber on adversarial text, by size: linear or not.

    python bench/scrub.py [--sizes 20000,40000,80000,160000,320000] [--pii]

Each input is built to make a backtracking pattern scan to the end of the text from every
place it could start: repeated ``-----BEGIN PRIVATE KEY-----`` with no end, ``-eyJ`` runs
without dots, digits separated by spaces, dotted words without ``@``, and ordinary prose for
comparison. Prints seconds per input and size (with the ratio to the previous size: about 2
when the time is linear, 4 when it is quadratic) and writes ``bench/results/scrub.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from understudy.distiller.scrub import PII_PATTERNS, Scrubber

RESULTS = Path(__file__).resolve().parent / "results"

INPUTS: dict[str, Callable[[int], str]] = {
    "pem_begin_repeated": lambda n: ("-----BEGIN PRIVATE KEY-----\n" * (n // 28 + 1))[:n],
    "pem_begin_long_body": lambda n: "-----BEGIN RSA PRIVATE KEY-----\n" + "A" * n,
    "jwt_dashes": lambda n: ("-eyJ" * (n // 4 + 1))[:n],
    "spaced_digits": lambda n: ("1 " * (n // 2 + 1))[:n] + "x",
    "dotted_words": lambda n: ("a." * (n // 2 + 1))[:n],
    "prose": lambda n: ("The quick brown fox pays with card 4111 1111 1111 1111. " * n)[:n],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,40000,80000,160000,320000")
    parser.add_argument("--pii", action="store_true", help="all PII patterns on too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    scrubber = Scrubber.build(pii=list(PII_PATTERNS) if args.pii else [])
    results: dict[str, list[dict[str, float]]] = {}
    for name, make in INPUTS.items():
        rows = results[name] = []
        for size in sizes:
            text = make(size)
            started = time.perf_counter()
            scrubber.scrub(text)
            rows.append({"chars": len(text), "seconds": time.perf_counter() - started})
    print(f"{'input':<22}" + "".join(f"{s:>16,}" for s in sizes))
    for name, rows in results.items():
        cells, before = [], None
        for row in rows:
            ratio = f" (x{row['seconds'] / before:.1f})" if before else ""
            cells.append(f"{row['seconds']:.4f}s{ratio}".rjust(16))
            before = max(row["seconds"], 1e-9)
        print(f"{name:<22}" + "".join(cells))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "scrub.json"
    out.write_text(json.dumps({"pii": args.pii, "sizes": sizes, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
