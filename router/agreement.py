"""Does the student's answer agree with the teacher's? One metric per kind of task.

* ``label``: equal after :func:`normalise_label`;
* ``json``: both parse and the parsed values are equal (key order and ``1`` vs ``1.0`` do not
  matter); a teacher answer that is not JSON falls back to the ``label`` comparison;
* ``text``: the chrF score of the student's answer against the teacher's is at least
  ``chrf_threshold``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter

from understudy.router.json_schema import json_equal

KINDS = ("label", "json", "text")
CHRF_THRESHOLD = 0.8
"""Default chrF (0..1) at which free text counts as agreeing."""

_SPACES = re.compile(r"\s+")


def normalise_label(text: str) -> str:
    """Stripped, casefolded, whitespace runs collapsed to one space, trailing punctuation
    removed: ``"  Card  Lost!! "`` -> ``"card lost"``."""
    label = _SPACES.sub(" ", text.strip().casefold())
    end = len(label)
    while end and (unicodedata.category(label[end - 1]).startswith("P") or label[end - 1] == " "):
        end -= 1
    return label[:end]


def answers_agree(
    student_text: str, teacher_text: str, kind: str, *, chrf_threshold: float = CHRF_THRESHOLD
) -> bool:
    """Whether the two answers agree under the metric for ``kind`` (see the module doc)."""
    if kind == "label":
        return normalise_label(student_text) == normalise_label(teacher_text)
    if kind == "json":
        try:
            teacher = json.loads(teacher_text)
        except ValueError:
            return normalise_label(student_text) == normalise_label(teacher_text)
        try:
            student = json.loads(student_text)
        except ValueError:
            return False
        return json_equal(student, teacher)
    if kind == "text":
        return chrf(student_text, teacher_text) >= chrf_threshold
    raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")


def chrf(hypothesis: str, reference: str, order: int = 6, beta: float = 2.0) -> float:
    """chrF in [0, 1]: the character n-gram F-beta score (n = 1..``order``, whitespace
    removed, recall weighted ``beta`` times precision), averaged over the orders both strings
    are long enough for. Two strings with no characters at all score 1; one alone, 0."""
    hyp = _SPACES.sub("", hypothesis)
    ref = _SPACES.sub("", reference)
    if not hyp or not ref:
        return 1.0 if hyp == ref else 0.0
    b2 = beta * beta
    total, orders = 0.0, 0
    for n in range(1, order + 1):
        hyp_grams, ref_grams = _ngrams(hyp, n), _ngrams(ref, n)
        if not hyp_grams or not ref_grams:
            break
        matches = sum((hyp_grams & ref_grams).values())
        precision = matches / hyp_grams.total()
        recall = matches / ref_grams.total()
        if matches:
            total += (1 + b2) * precision * recall / (b2 * precision + recall)
        orders += 1
    return total / orders


def _ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))
