import subprocess
import sys

from understudy.router import bench_decision_time


def test_import_pulls_in_no_ml_libraries():
    code = (
        "import sys, understudy.router; "
        "print(sorted(m for m in ('numpy', 'sklearn', 'scipy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_decision_benchmark_reports_per_call_times():
    result = bench_decision_time(n_fit=400, n_calls=2000)
    print(result)  # timings are reported, not asserted: they depend on the machine
    assert result["policy_method"] == "logistic_isotonic"
    for key in ("decide_us", "extract_and_decide_label_us", "extract_and_decide_json_schema_us"):
        assert result[key] > 0
