"""Rate limits shared in the database: a refused client is refused locally until the wait the
database named (no lease asked per refused request), and idle buckets are pruned."""

from __future__ import annotations

from understudy.gateway.api.limits import TokenBuckets, open_limits
from understudy.gateway.api.shared_limits import PRUNE_S, SharedTokenBuckets
from understudy.gateway.config import GatewayConfig, LimitConfig
from understudy.storage.database import Store


def buckets(store: Store, now: list[float]) -> SharedTokenBuckets:
    local = TokenBuckets(per_minute=60, burst=2)  # one a second, two at once
    return SharedTokenBuckets(local, store, lease_s=0.5, clock=lambda: now[0])


def test_a_refused_client_waits_without_asking_the_database_again(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    now = [1000.0]
    one, two = buckets(store, now), buckets(store, now)
    assert one.take("k") == 0.0 and two.take("k") == 0.0  # the burst of two, one each
    wait = one.take("k")
    assert 0.9 < wait <= 1.0 and one.leases_taken == 2
    now[0] += 0.5
    assert 0.4 < one.take("k") <= 0.5  # refused here: the database was not asked
    assert one.leases_taken == 2
    now[0] += 0.6
    assert one.take("k") == 0.0 and one.leases_taken == 3  # a token again: leased
    assert two.take("k") > 0  # the other process finds the bucket spent


def test_idle_buckets_are_pruned_as_leases_are_written(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    now = [1000.0]
    shared = buckets(store, now)
    for i in range(20):
        assert shared.take(f"client-{i}") == 0.0
    now[0] += PRUNE_S + 1  # every bucket full again long since
    assert shared.take("late") == 0.0
    with store.read() as db:
        left = [r[0] for r in db.execute("select client from rate_buckets").fetchall()]
    assert left == ["late"]


def test_rate_limits_are_shared_by_default_on_postgresql_only(tmp_path):
    def buckets_of(address: str, lease_s: float | None) -> object:
        settings = GatewayConfig(limits=LimitConfig(requests_per_minute=60, rate_lease_s=lease_s))
        limits = open_limits(settings, Store(address))
        assert limits is not None
        return limits.buckets

    postgres = "postgresql://u:p@db.invalid:5432/u"  # not reached: leases are taken on demand
    shared = buckets_of(postgres, None)
    assert isinstance(shared, SharedTokenBuckets) and shared.lease_s == 0.5
    assert isinstance(buckets_of(postgres, 0.0), TokenBuckets)  # per process when asked
    assert isinstance(buckets_of(str(tmp_path / "u.db"), None), TokenBuckets)
    assert isinstance(buckets_of(str(tmp_path / "u.db"), 0.2), SharedTokenBuckets)
