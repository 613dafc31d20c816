"""The same migrations build and upgrade a SQLite and a PostgreSQL database: a log written at
0007 (before the rollups and compressed bodies) and migrated to the newest schema reads the
same figures on either engine."""

from __future__ import annotations

from tests.storage.test_rollups import HOUR, T0, database_at, old_cost_totals, same, workload
from understudy.storage import migrations, reports
from understudy.storage.database import Store, open_database
from understudy.storage.queries import get_request


def test_an_old_log_is_migrated_to_the_newest_schema(address):
    with database_at(address, "0007_security") as db:
        assert migrations.applied(db)[-1] == "0007_security"
        rows, attempts = workload(600, seed=5)
        db["requests"].insert_all(rows)
        db["student_attempts"].insert_all(attempts)
        window = (T0 - 16 * HOUR, T0 + 24 * HOUR)
        before = old_cost_totals(db, *window)

    ran = Store(address).migrate()
    names = [name for name, _ in migrations.MIGRATIONS]
    assert ran == names[names.index("0007_security") + 1 :]
    db = open_database(address, migrate_schema=False)
    try:
        same(reports.cost_totals(db, *window), before)
        assert before["requests"] > 300
        assert get_request(db, rows[3]["id"])["request_json"] == rows[3]["request_json"]
    finally:
        db.conn.close()
