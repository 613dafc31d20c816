import pytest

from understudy.storage.database import open_database
from understudy.storage.registry import (
    DRIFT_REASON,
    RegistryError,
    champion,
    events,
    get_model,
    list_models,
    promote,
    register_model,
    rollback,
    set_mode,
    task_state,
)


@pytest.fixture
def db(address):
    database = open_database(address)
    yield database
    database.conn.close()


def test_versions_are_immutable_and_numbered_per_task(db):
    a = register_model(db, "intent", base="tiny", model_path="/m/v1", metrics={"agreement": 0.9})
    b = register_model(db, "intent", base="tiny", model_path="/m/v2")
    c = register_model(db, "other", base="tiny")
    assert (a.id, b.id, c.id) == ("intent@v1", "intent@v2", "other@v1")
    assert get_model(db, "intent@v1").metrics == {"agreement": 0.9}
    assert [m.version for m in list_models(db, "intent")] == [1, 2]
    with pytest.raises(RegistryError):
        get_model(db, "intent@v9")


def test_promote_and_rollback_switch_the_champion(db):
    assert champion(db, "intent") is None
    v1 = register_model(db, "intent", base="tiny")
    v2 = register_model(db, "intent", base="tiny")
    with pytest.raises(RegistryError):
        rollback(db, "intent")  # nothing to roll back to
    promote(db, v1.id)
    state = promote(db, v2.id)
    assert (state.champion_id, state.previous_id) == (v2.id, v1.id)
    assert get_model(db, v1.id).status == "retired"
    state = rollback(db, "intent")
    assert (state.champion_id, state.previous_id) == (v1.id, None)
    assert champion(db, "intent").id == v1.id and get_model(db, v2.id).status == "rolled_back"
    assert [e["kind"] for e in events(db, "intent")] == ["rollback", "promoted", "promoted"]


def test_a_repeated_rollback_goes_further_back_never_forward_again(db):
    v1, v2, v3 = (register_model(db, "intent", base="tiny") for _ in range(3))
    for v in (v1, v2, v3):
        promote(db, v.id)
    state = rollback(db, "intent")
    assert (state.champion_id, state.previous_id) == (v2.id, v1.id)
    state = rollback(db, "intent")
    assert (state.champion_id, state.previous_id) == (v1.id, None)
    with pytest.raises(RegistryError, match="no earlier champion"):
        rollback(db, "intent")  # it used to toggle back to what was rolled back
    assert champion(db, "intent").id == v1.id
    assert get_model(db, v2.id).status == get_model(db, v3.id).status == "rolled_back"


def test_a_named_rollback_takes_only_an_earlier_former_champion(db):
    v1, v2, v3 = (register_model(db, "intent", base="tiny") for _ in range(3))
    promote(db, v1.id)
    promote(db, v3.id)  # v2 was never promoted (the gates refused it)
    with pytest.raises(RegistryError, match="never promoted"):
        rollback(db, "intent", to=v2.id)
    with pytest.raises(RegistryError, match="not an earlier version"):
        rollback(db, "intent", to=v3.id)
    other = register_model(db, "other", base="tiny")
    with pytest.raises(RegistryError, match="not an earlier version"):
        rollback(db, "intent", to=other.id)
    state = rollback(db, "intent", to=v1.id)
    assert (state.champion_id, state.previous_id) == (v1.id, None)


def test_modes_and_drift_fallback_until_next_promotion(db):
    v1 = register_model(db, "intent", base="tiny")
    promote(db, v1.id)
    assert task_state(db, "intent").mode == "routed"
    with pytest.raises(RegistryError):
        set_mode(db, "intent", "sometimes")
    set_mode(db, "intent", "teacher-only", reason=f"{DRIFT_REASON}: agreement 0.80 < 0.94")
    assert task_state(db, "intent").mode == "teacher-only"
    promote(db, register_model(db, "intent", base="tiny").id)
    assert task_state(db, "intent").mode == "routed"
    set_mode(db, "intent", "teacher-only", reason="operator")
    promote(db, register_model(db, "intent", base="tiny").id)
    assert task_state(db, "intent").mode == "teacher-only"  # an operator's choice stays
