"""A student trained on the logged history (the Banking77 train queries with their gold
labels) is certified on the short stream's first 250 teacher answers and serves much of the
rest at the target (the data and the steps of a run: ``tests/distiller/certification.py``)."""

from __future__ import annotations

import pytest

from tests.distiller.certification import MISS, TARGET, certify_and_serve, history

pytestmark = pytest.mark.slow  # trains a student on 9,002 answers


def test_a_student_trained_on_the_history_serves_much_of_the_stream_at_the_target(tmp_path):
    # The short stream's first run: the history trains, 250 teacher answers certify.
    [(served, agreement)] = certify_and_serve(tmp_path, 250, 250, 1, history())
    assert served > 0.3 * (3080 - 250)
    assert agreement >= TARGET - MISS, f"served {served} unseen queries at {agreement:.3f}"
