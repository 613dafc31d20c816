"""The student pool loads a new champion once, whoever asks it to look at the registry."""

from __future__ import annotations

import asyncio

from understudy.gateway.serving.pool import StudentPool, backend_factory
from understudy.settings import load_settings
from understudy.storage.database import Store
from understudy.storage.distill_queries import SERVING_EVENT
from understudy.storage.registry import events, promote, register_model

TASK = "intent"


async def test_a_watchers_refresh_and_an_admin_refresh_at_once_load_the_champion_once(
    tiny_model_dir, tmp_path
):
    # Found: a promotion reached the watcher while the admin API's routing switch asked for a
    # refresh too. Both read the old state, both loaded the champion and switched in a router,
    # and the second replaced the first after it had begun serving: its audit and shadow draws
    # started over, so the same seed served different requests from one run to the next.
    env = {
        "UNDERSTUDY_DATA_DIR": str(tmp_path / "data"),
        "UNDERSTUDY_STUDENT_BACKEND": "local",
        "UNDERSTUDY_STUDENT_DEVICE": "cpu",
    }
    settings = load_settings(env=env)
    store = Store(settings.db_path)
    store.migrate()
    with store.write() as db:
        model = register_model(db, TASK, base=str(tiny_model_dir), model_path=str(tiny_model_dir))
        promote(db, model.id)
    pool = StudentPool(settings, backend_factory(settings))
    try:
        await asyncio.gather(pool.refresh(), pool.refresh_now())
        slot = pool.slot(TASK)
        assert slot is not None and slot.version.id == model.id
        router = slot.router

        await pool.refresh()  # nothing changed: the same router serves on

        assert pool.slot(TASK).router is router
        with store.read() as db:
            served = [e for e in events(db, TASK) if e["kind"] == SERVING_EVENT]
        assert len(served) == 1
    finally:
        await pool.close()
