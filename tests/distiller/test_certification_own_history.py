"""The teacher's own history certifies a cross-fitted student for more of the short stream
(the data and the steps of a run: ``tests/distiller/certification.py``)."""

from __future__ import annotations

import pytest

from tests.distiller.certification import MISS, TARGET, examples, routed, stream
from understudy.distiller.calibrate import calibrate
from understudy.distiller.classical import classical_split, read_label_agreement, train_classical
from understudy.distiller.config import GateConfig
from understudy.distiller.dataset import Dataset
from understudy.distiller.evaluate import evaluate_student
from understudy.distiller.generate import StudentRunner
from understudy.student.classical import ClassicalSettings

pytestmark = pytest.mark.slow  # trains five students on a few thousand answers


def test_the_teachers_own_history_certifies_a_cross_fitted_student_for_more_of_the_stream(
    tmp_path,
):
    # The short stream with the teacher's own history (GPT-4's other-prompt answers to the
    # 2,080 test queries outside the stream, then 250 live answers held out): one model on
    # the history, certified on the 250, served 329 of the 750 unseen queries. Certified on
    # the newest 1,000 (cross-fitted: each judged by the fold model that never saw it, and
    # still training the four others), it serves 490, at 0.861 agreement.
    teacher = "gpt4-label_nonrep"
    queries = stream(0, teacher)
    live, logged = queries[:1000], queries[1000:]
    seen = examples([*logged, *live[:250]])
    dataset = Dataset("banking77", "label", seen[:-250], seen[-250:])

    train, held = classical_split(dataset, ClassicalSettings())
    assert len(held) == 1000
    train_classical(train, ClassicalSettings(), tmp_path / "student", held_out=held)
    runner = StudentRunner(str(tmp_path / "student"))
    config = GateConfig(quality_target=TARGET)
    candidate = evaluate_student(runner, held, [], kind="label", config=config)
    judged = evaluate_student(runner, examples(live[250:]), [], kind="label", config=config)
    rates = read_label_agreement(tmp_path / "student")
    router = calibrate(candidate, "label", config, ranked_by_probability=True, label_rates=rates)
    served = routed(router.router, judged)
    assert len(served) >= 400, f"served {len(served)} of 750"
    assert sum(served) / len(served) >= TARGET - MISS
