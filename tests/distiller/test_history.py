import io

from understudy.distiller.figures import distinct
from understudy.distiller.history import render_history, render_result


def test_history_shows_the_bound_the_threshold_was_certified_with():
    run = {
        "id": "r1",
        "started_at": 0.0,
        "finished_at": 5.0,
        "status": "succeeded",
        "promoted": 1,
        "candidate_id": "t@v1",
        "gates": [],
        "metrics": {
            "quality_target": 0.8,
            "confidence_levels": 40,
            "eval_examples": 250,
            "certified_lower_bound": 0.8123,
            "calibration_examples": 250,
        },
    }
    out = io.StringIO()
    render_history([run], out)
    assert "certified: agreement >= 0.812 (lower bound) on what it serves, 250" in out.getvalue()
    run["metrics"] |= {
        "certified_served": 61,
        "certified_bound": "clopper_pearson",
        "certified_confidence": 0.95,
    }
    out = io.StringIO()
    render_history([run], out)
    assert "250 held-out examples drawn uniformly from traffic; 61 of them served, " in (
        out.getvalue()
    )
    assert "clopper-pearson bound at 95%" in out.getvalue()


def _rejected_run(gates):
    return {
        "id": "r2",
        "started_at": 0.0,
        "finished_at": 5.0,
        "status": "succeeded",  # judged, as stored
        "promoted": 0,
        "gates": gates,
        "reason": "non_inferiority -0.020 < -0.020",  # as an older run stored it
    }


def test_a_rejected_run_is_never_called_succeeded_and_its_figures_read_as_they_came_out():
    """'non_inferiority -0.020 < -0.020' was -0.0203 against -0.020 rounded to 3 decimals."""
    gate = {
        "name": "non_inferiority",
        "value": -0.0203,
        "threshold": -0.02,
        "passed": False,
        "detail": "served traffic: ...",
    }
    out = io.StringIO()
    render_history([_rejected_run([gate])], out)
    text = out.getvalue()
    assert "succeeded" not in text and " rejected " in text
    assert "-0.0203  >= -0.0200  FAIL" in text
    assert "why: non_inferiority: coverage, candidate - champion -0.0203 < -0.0200" in text
    assert "-0.020 < -0.020" not in text


def test_a_failed_gate_whose_value_meets_its_threshold_says_why_it_failed():
    """'candidate - champion = +0.025' next to FAIL read as a contradiction."""
    gate = {
        "name": "non_inferiority",
        "value": 0.025,
        "threshold": -0.02,
        "passed": False,
        "detail": "served traffic: candidate serves 0.525 at agreement 0.610, champion 0.500 "
        "at 0.700 of the same examples",
    }
    out = io.StringIO()
    render_result(
        {"run_id": "r3", "task": "t", "status": "succeeded", "promoted": False, "gates": [gate]},
        out,
    )
    first, *rest = out.getvalue().splitlines()
    assert first == "run r3 of task t: rejected: non_inferiority failed (below)"
    (line,) = [line for line in rest if line.strip().startswith("non_inferiority")]
    assert "+0.025  >= -0.020  FAIL" in line
    assert "coverage holds (+0.025 >= -0.020), but its agreement on what it serves" in line
    assert "champion 0.500 at 0.700" in line


def test_outcome_words_for_every_stored_run():
    from understudy.storage.registry import run_outcome

    assert run_outcome("succeeded", 1) == "promoted"
    assert run_outcome("succeeded", 0) == "rejected"
    assert [run_outcome(s, 0) for s in ("skipped", "failed", "running")] == [
        "skipped",
        "failed",
        "running",
    ]


def test_distinct_figures_use_the_fewest_decimals_that_tell_them_apart():
    assert distinct(-0.0203, -0.02) == ("-0.0203", "-0.0200")
    assert distinct(0.91, 0.7) == ("0.910", "0.700")
    assert distinct(1.0, 1.0) == ("1.000", "1.000")
    assert distinct(0.8000001, 0.8) == ("0.800000", "0.800000")  # 6 decimals at most
    assert distinct(0.025, -0.02, signed=True) == ("+0.025", "-0.020")
    assert distinct(None, 0.5) == ("-", "0.500")


def test_the_stored_reason_of_a_failed_gate_has_no_rounding_artefact():
    from understudy.distiller.gates import GateResult, failed_reason

    gate = GateResult("non_inferiority", -0.0203, -0.02, False, "served traffic: ...")
    assert failed_reason([gate]) == "non_inferiority -0.0203 < -0.0200"
