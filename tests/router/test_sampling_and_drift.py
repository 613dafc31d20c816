import random

import pytest

from understudy.router import AgreementMonitor, ShadowSampler


@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_realised_shadow_rate_is_close_to_the_rate(rate):
    sampler = ShadowSampler(rate, seed=7)
    hits = sum(sampler.should_shadow() for _ in range(20_000))
    assert abs(hits / 20_000 - rate) < 0.012  # > 5 standard deviations


def test_same_seed_same_choices():
    a, b, c = ShadowSampler(0.5, seed=1), ShadowSampler(0.5, seed=1), ShadowSampler(0.5, seed=2)
    first = [a.should_shadow() for _ in range(200)]
    assert first == [b.should_shadow() for _ in range(200)]
    assert first != [c.should_shadow() for _ in range(200)]


def test_rate_zero_and_one():
    assert not any(ShadowSampler(0.0).should_shadow() for _ in range(1000))
    assert all(ShadowSampler(1.0).should_shadow() for _ in range(1000))


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_out_of_range_is_rejected(rate):
    with pytest.raises(ValueError, match="rate"):
        ShadowSampler(rate)


def test_monitor_waits_for_min_samples():
    monitor = AgreementMonitor(0.97, 0.03, window=200, min_samples=30)
    assert monitor.agreement is None and not monitor.tripped
    for _ in range(29):
        monitor.record(False)
    assert monitor.agreement == 0.0 and monitor.samples == 29
    assert not monitor.tripped
    monitor.record(False)
    assert monitor.tripped


def test_monitor_trips_below_target_minus_margin_only():
    monitor = AgreementMonitor(0.97, 0.03, window=100, min_samples=30, confidence=0.5)
    for i in range(100):
        monitor.record(i < 94)  # 94 of 100: exactly at 0.97 - 0.03
    assert monitor.agreement == pytest.approx(0.94)
    assert not monitor.tripped
    monitor.record(False)  # the window slides: an agreement drops out, a failure comes in
    assert monitor.samples == 100
    assert monitor.agreement == pytest.approx(0.93)
    assert monitor.tripped


def test_monitor_needs_confidence_that_agreement_is_below_the_floor():
    monitor = AgreementMonitor(0.97, 0.03, window=100, min_samples=30)
    for i in range(100):
        monitor.record(i < 93)  # 0.93, a point under the floor: within the noise of 100
    assert monitor.upper_bound == pytest.approx(0.962, abs=1e-3)
    assert not monitor.tripped
    for _ in range(8):
        monitor.record(False)  # 85 of the last 100: clearly below
    assert monitor.agreement == pytest.approx(0.85) and monitor.tripped


def test_a_student_at_its_target_is_not_sent_back_by_noise_but_a_real_drop_is():
    rng = random.Random(7)
    steady = AgreementMonitor(0.8, 0.03, window=200, min_samples=30)
    point = AgreementMonitor(0.8, 0.03, window=200, min_samples=30, confidence=0.5)
    steady_trips = point_trips = 0
    for _ in range(3000):  # a student that agrees 82% of the time, 3,000 shadow checks
        agreed = rng.random() < 0.82
        steady.record(agreed)
        point.record(agreed)
        steady_trips += steady.tripped
        point_trips += point.tripped
    assert steady_trips == 0
    assert point_trips > 0  # the plain share dips under 0.77 by chance

    dropped = AgreementMonitor(0.8, 0.03, window=200, min_samples=30)
    checks = 0
    while not dropped.tripped:  # the teacher changed: the student now agrees 50% of the time
        dropped.record(rng.random() < 0.5)
        checks += 1
    assert checks <= 60


def test_monitor_recovers_as_bad_samples_leave_the_window():
    monitor = AgreementMonitor(0.9, 0.0, window=10, min_samples=5)
    for _ in range(10):
        monitor.record(False)
    assert monitor.tripped
    for _ in range(9):
        monitor.record(True)
    assert monitor.agreement == pytest.approx(0.9) and not monitor.tripped
    assert monitor.samples == 10


def test_monitor_reset_forgets_everything():
    monitor = AgreementMonitor(0.9, 0.05, window=10, min_samples=2)
    monitor.record(False)
    monitor.record(False)
    assert monitor.tripped
    monitor.reset()
    assert monitor.agreement is None and monitor.samples == 0 and not monitor.tripped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 0.0, 10, 5), "quality_target"),
        ((0.9, -0.1, 10, 5), "margin"),
        ((0.9, 0.0, 0, 1), "window"),
        ((0.9, 0.0, 10, 11), "min_samples"),
        ((0.9, 0.0, 10, 0), "min_samples"),
        ((0.9, 0.0, 10, 5, 0.4), "confidence"),
        ((0.9, 0.0, 10, 5, 1.0), "confidence"),
    ],
)
def test_monitor_rejects_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        AgreementMonitor(*args)
