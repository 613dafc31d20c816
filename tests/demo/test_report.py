"""What the demo and the replay benchmark print of a distillation run."""

from __future__ import annotations

from understudy.demo.report import run_lines


def test_a_run_line_gives_the_chosen_candidates_own_training_and_held_out_counts():
    # Found: a cross-fitted classical student judged on 375 held-out answers (and trained on
    # them too, each outside its own fold) was printed as "trained on 600 examples ... held out
    # 75": the run's slice for the language model, not what certified the promoted student.
    outcome = {
        "promoted": True,
        "candidate_id": "banking77@v1",
        "dataset": {"train": 600, "eval": 75},
        "metrics": {
            "engine": "classical",
            "eval_examples": 375,
            "train": {"examples": 675, "seconds": 3.2, "examples_per_s": 211.0},
        },
    }

    line = run_lines(outcome)[1]

    assert line.startswith("classical candidate trained on 675 examples in 3 s")
    assert line.endswith("held out 375")
