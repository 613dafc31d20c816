import io

from understudy.distiller.history import render_history


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
