from understudy.demo.config import DemoOptions
from understudy.demo.run import run_interval


def intervals(options: DemoOptions, promoted_after: int, runs: int = 4) -> list[int]:
    """Teacher calls before each of ``runs`` runs when the run numbered ``promoted_after``
    (1-based; 0: none) promotes a student."""
    return [
        run_interval(options, n, promoted=bool(promoted_after) and n >= promoted_after)
        for n in range(runs)
    ]


def test_runs_come_sooner_until_a_student_is_promoted():
    options = DemoOptions(warmup=100, every=250, first_every=100)
    assert intervals(options, promoted_after=2) == [100, 100, 250, 250]
    assert intervals(options, promoted_after=0) == [100, 100, 100, 100]


def test_without_first_every_the_interval_is_every_after_the_warmup():
    options = DemoOptions(warmup=120, every=250)
    assert intervals(options, promoted_after=0) == [120, 250, 250, 250]
    assert intervals(DemoOptions(warmup=0, every=250), promoted_after=1) == [250] * 4
