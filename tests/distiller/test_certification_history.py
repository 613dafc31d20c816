"""A student trained on the logged history (the Banking77 train queries with their gold
labels) is certified on the short stream's first 250 teacher answers and serves much of the
rest at the target (the data and the steps of a run: ``tests/distiller/certification.py``).

The live teacher is GPT-4 or one that disagrees with the history more: GPT-3.5 (0.75 against
gold) or GPT-4 with another prompt (0.74). The student learns the history, so where the live
teacher answers otherwise is what the first run must find out from its 250 live answers. In the
short-stream replay on the gold history the first run certified nothing for either of those two
(17.5% and 13.4% saved over 1,000 queries, all by later runs): the label rates that ranked the
answers were measured on the history, where every label agrees with itself, so the labels the
live teacher gives otherwise ranked as high as any and no threshold certified.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distiller.certification import (
    MISS,
    TARGET,
    certify_and_serve,
    history,
    train_history,
)

pytestmark = pytest.mark.slow  # trains a student on 9,002 answers

SEED = 1


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The short stream's first run: the history trains, 250 teacher answers certify."""
    return train_history(tmp_path_factory.mktemp("history") / "student", 250, SEED)


@pytest.mark.parametrize("teacher", ["gpt-label", "gpt35-label_rep", "gpt4-label_nonrep"])
def test_a_student_trained_on_the_history_serves_much_of_the_stream_at_the_target(
    tmp_path, student, teacher
):
    [(served, agreement)] = certify_and_serve(
        tmp_path, 250, 250, SEED, history(), teacher=teacher, trained=student
    )
    assert served > 0.3 * (3080 - 250), f"served {served} unseen queries"
    assert agreement >= TARGET - MISS, f"served {served} unseen queries at {agreement:.3f}"
