"""Replacing secrets and configured PII in training text.

Every pattern runs in time linear in the text, whatever the text: no unbounded repetition may
scan past where its match could end (a PEM body stops at the next ``-----``), repetitions that
may fail late are bounded, and a token's pattern starts only where its alphabet starts. A
prompt written to stall the distiller (thousands of ``-----BEGIN PRIVATE KEY-----`` and no
end) costs what any prompt of its size costs; ``bench/scrub.py`` measures it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SECRET_PATTERNS: dict[str, str] = {
    "private_key": (
        r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----(?:[^-]|-(?!----))*?"
        r"-----END [A-Z ]{0,40}PRIVATE KEY-----"
    ),
    "openai_key": r"\bsk-[A-Za-z0-9_\-]{16,}",
    "aws_key": r"\bAKIA[0-9A-Z]{16}\b",
    "github_token": r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "google_key": r"\bAIza[0-9A-Za-z_\-]{35}\b",
    "jwt": r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "bearer": r"(?i)\bbearer\s+[A-Za-z0-9._\-~+/]{16,}=*",
}

PII_PATTERNS: dict[str, str] = {
    "email": r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
    "card": r"\b(?:\d[ -]?){12,18}\d\b",
    "ip": r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    "phone": r"(?<![\w+])\+?\d[\d ()./-]{6,30}\d(?!\w)",
}


@dataclass
class Scrubber:
    """Compiled replacement rules; :meth:`scrub` returns the text and how many were replaced."""

    rules: list[tuple[str, re.Pattern[str]]]

    @classmethod
    def build(
        cls,
        *,
        secrets: bool = True,
        pii: Sequence[str] = (),
        extra: Mapping[str, str] | None = None,
    ) -> Scrubber:
        unknown = [name for name in pii if name not in PII_PATTERNS]
        if unknown:
            raise ValueError(
                f"unknown PII pattern {unknown[0]!r}; known: {', '.join(PII_PATTERNS)}"
            )
        rules: list[tuple[str, re.Pattern[str]]] = []
        if secrets:
            rules += [("SECRET", re.compile(p)) for p in SECRET_PATTERNS.values()]
        rules += [(n.upper(), re.compile(p)) for n, p in PII_PATTERNS.items() if n in pii]
        rules += [(name.upper(), re.compile(p)) for name, p in (extra or {}).items()]
        return cls(rules)

    def scrub(self, text: str) -> tuple[str, int]:
        total = 0
        for name, pattern in self.rules:
            if name == "CARD":  # only digit runs that pass the Luhn check
                hits = [m for m in pattern.finditer(text) if _luhn(m.group(0))]
                for m in reversed(hits):
                    text = text[: m.start()] + "[CARD]" + text[m.end() :]
                total += len(hits)
            else:
                text, n = pattern.subn(f"[{name}]", text)
                total += n
        return text, total

    def __bool__(self) -> bool:
        return bool(self.rules)


def _luhn(number: str) -> bool:
    total = 0
    for i, d in enumerate(reversed([int(c) for c in number if c.isdigit()])):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0
