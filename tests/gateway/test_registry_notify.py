"""On PostgreSQL a registry change reaches a gateway's student pool at once (LISTEN/NOTIFY),
not at its next poll: with ``student.reload_interval_s`` at a minute, a mode change and a
promotion written by another process are applied within seconds."""

from __future__ import annotations

import asyncio
import time

from understudy.gateway.serving.pool import StudentPool, backend_factory
from understudy.settings import load_settings
from understudy.storage.database import Store
from understudy.storage.registry import promote, register_model, set_mode

TASK = "intent"


async def _until(predicate, timeout: float = 10.0) -> float:
    """Seconds until ``predicate()`` held (fails after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "the pool did not see the change"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_a_registry_change_reaches_the_pool_at_once(postgres_url, tiny_model_dir, tmp_path):
    store = Store(postgres_url)
    store.migrate()
    with store.write() as db:
        first = register_model(db, TASK, base=str(tiny_model_dir), model_path=str(tiny_model_dir))
        promote(db, first.id)
    env = {
        "UNDERSTUDY_DATA_DIR": str(tmp_path / "data"),
        "UNDERSTUDY_STORAGE_URL": postgres_url,
        "UNDERSTUDY_STUDENT_BACKEND": "local",
        "UNDERSTUDY_STUDENT_DEVICE": "cpu",
        "UNDERSTUDY_STUDENT_RELOAD_INTERVAL_S": "60",
    }
    settings = load_settings(env=env)
    pool = StudentPool(settings, backend_factory(settings))
    await pool.start()
    try:
        slot = pool.slot(TASK)
        assert slot is not None and slot.version.id == first.id and slot.mode == "routed"
        assert pool._listener is not None and pool._listener.listening.wait(5)

        with store.write() as db:  # another process: the CLI, the dashboard of another replica
            set_mode(db, TASK, "shadow", reason="operator")
        assert await _until(lambda: pool.slot(TASK).mode == "shadow") < 5

        with store.write() as db:  # a promotion by a distiller worker
            second = register_model(
                db, TASK, base=str(tiny_model_dir), model_path=str(tiny_model_dir)
            )
            promote(db, second.id)
        assert await _until(lambda: pool.slot(TASK).version.id == second.id) < 10
    finally:
        await pool.close()
