"""Exact and near-duplicate detection for prompts (MinHash with banding, verified exactly)."""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Sequence

_WORD = re.compile(r"\w+")
_HASHES = 32
_BANDS = 8  # 8 bands of 4 rows: pairs at Jaccard 0.9 collide with probability > 0.999
_PRIME = (1 << 61) - 1


def normalise(text: str) -> str:
    """Case-folded words joined by single spaces: punctuation and spacing do not count."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def shingles(text: str) -> set[str]:
    """Words and word pairs of the normalised text."""
    words = normalise(text).split()
    return set(words) | {f"{a} {b}" for a, b in itertools.pairwise(words)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _coefficients() -> list[tuple[int, int]]:
    out = []
    for i in range(_HASHES):
        digest = hashlib.blake2b(f"minhash-{i}".encode(), digest_size=16).digest()
        out.append((int.from_bytes(digest[:8]) % _PRIME or 1, int.from_bytes(digest[8:]) % _PRIME))
    return out


_COEFFS = _coefficients()


def _signature(items: set[str]) -> tuple[int, ...]:
    if not items:
        return (0,) * _HASHES
    hashed = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest()) for s in items]
    return tuple(min((a * h + b) % _PRIME for h in hashed) for a, b in _COEFFS)


def near_duplicates(texts: Sequence[str], threshold: float) -> list[int | None]:
    """For each text, the index of an earlier kept text it nearly duplicates (None: kept).

    Texts are considered in order; a text whose shingle Jaccard similarity with a kept one is
    at least ``threshold`` is marked as its duplicate. ``threshold >= 1`` turns this off.
    """
    if threshold >= 1:
        return [None] * len(texts)
    rows = _HASHES // _BANDS
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    sets: dict[int, set[str]] = {}
    out: list[int | None] = []
    for i, text in enumerate(texts):
        items = shingles(text)
        signature = _signature(items)
        keys = [(b, signature[b * rows : (b + 1) * rows]) for b in range(_BANDS)]
        candidates = sorted({j for key in keys for j in buckets.get(key, ())})
        match = next((j for j in candidates if jaccard(items, sets[j]) >= threshold), None)
        out.append(match)
        if match is None:
            sets[i] = items
            for key in keys:
                buckets.setdefault(key, []).append(i)
    return out
