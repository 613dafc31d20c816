import json

import pytest

from tests.distiller.conftest import (
    SYSTEM,
    chat_response,
    log_attempt,
    log_exchange,
    log_feedback,
)
from understudy.distiller.config import DatasetConfig
from understudy.distiller.dataset import (
    Dataset,
    Example,
    build_dataset,
    infer_kind,
    live_teachers,
    split_by_time,
    widened,
)
from understudy.distiller.scrub import PII_PATTERNS, Scrubber

CONFIG = DatasetConfig(eval_fraction=0.2, eval_min=1, min_examples=1)
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


def distinct(i: int) -> str:
    """A message that shares few words with any other index."""
    return f"{WORDS[i % 12]} {WORDS[(i * 5 + 3) % 12]} number {i} {'x' * (i % 7)} {i * 7919}"


LONG = (
    "I topped up my account with my card two days ago and the money still has not arrived, "
    "the app says the top-up is pending and I need it for rent today"
)


def by_prompt(dataset):
    return {ex.messages[-1]["content"]: ex for ex in dataset.train + dataset.eval}


def test_teacher_and_shadow_answers_become_examples_and_bad_ones_are_counted(db):
    ok = log_exchange(db, "t", "where is my card", "card_arrival", at=1)
    log_exchange(db, "t", "shadowed question", "card_arrival", at=2, served_by="shadow")
    log_exchange(db, "t", "errored", None, at=3, status="error")
    log_exchange(db, "t", "stream broke off", "card_arr", at=4, status="cut")
    log_exchange(db, "t", "client left", "card", at=5, status="incomplete")
    log_exchange(db, "t", "long one", "card_arrival and then", at=6, finish_reason="length")
    log_exchange(db, "t", "empty one", "   ", at=7)
    tool = chat_response(None, tool_calls=[{"id": "c", "type": "function", "function": {}}])
    log_exchange(db, "t", "weather?", None, at=8, response_json=tool)
    log_exchange(db, "t", "student answered", "x", at=9, served_by="student")
    log_exchange(db, "other", "another task", "card_arrival", at=10)

    dataset = build_dataset(db, "t", CONFIG)

    assert set(by_prompt(dataset)) == {"where is my card", "shadowed question"}
    assert by_prompt(dataset)["where is my card"].id == ok
    assert by_prompt(dataset)["where is my card"].messages[0]["role"] == "system"
    stats = dataset.stats
    assert stats["dropped_status_error"] == 1
    assert stats["dropped_status_cut"] == 1
    assert stats["dropped_status_incomplete"] == 1
    assert stats["dropped_truncated"] == 1
    assert stats["dropped_empty"] == 1
    assert stats["dropped_tool_call"] == 1
    assert stats["sources"] == {"teacher": 1, "shadow": 1}


def test_exact_and_near_duplicate_prompts_keep_the_newest_copy(db):
    log_exchange(db, "t", "How do I reset my passcode?", "passcode_forgotten", at=1)
    log_exchange(db, "t", "how do i reset my passcode", "forgot_passcode", at=2)  # exact
    log_exchange(db, "t", LONG, "pending_top_up", at=3)
    log_exchange(db, "t", LONG + " please", "top_up_failed", at=4)  # near
    for i in range(6):
        log_exchange(db, "t", distinct(i), "label", at=10 + i)

    dataset = build_dataset(db, "t", CONFIG)

    prompts = by_prompt(dataset)
    assert prompts["how do i reset my passcode"].answer == "forgot_passcode"
    assert prompts[LONG + " please"].answer == "top_up_failed"
    assert "How do I reset my passcode?" not in prompts
    assert LONG not in prompts
    assert dataset.stats["dropped_exact_duplicate"] == 1
    assert dataset.stats["dropped_near_duplicate"] == 1
    assert dataset.stats["examples"] == 8


def test_the_newest_slice_is_held_out_and_never_trains(db):
    for i in range(50):
        log_exchange(db, "t", distinct(i), f"label_{i % 3}", at=1000 - i)  # logged out of order

    dataset = build_dataset(db, "t", DatasetConfig(eval_fraction=0.2, eval_min=1))

    assert len(dataset.eval) == 10 and len(dataset.train) == 40
    newest_train = max(ex.created_at for ex in dataset.train)
    assert all(ex.created_at > newest_train for ex in dataset.eval)
    assert not {ex.id for ex in dataset.eval} & {ex.id for ex in dataset.training_rows()}
    assert dataset.stats["window"]["eval_from"] > dataset.stats["window"]["train_to"]


def test_split_sizes_respect_min_and_max():
    examples = [Example(str(i), float(i), "a") for i in range(100)]
    assert [len(p) for p in split_by_time(examples, DatasetConfig(eval_min=30))] == [70, 30]
    assert [len(p) for p in split_by_time(examples, DatasetConfig(eval_max=5))] == [95, 5]
    assert [len(p) for p in split_by_time(examples[:10], DatasetConfig(eval_min=20))] == [5, 5]


def test_only_examples_drawn_regardless_of_the_router_are_held_out_and_weighted(db):
    # After a promotion the newest teacher answers are mostly deferrals (the hard requests):
    # held out, they judged the next student on a biased sample. Audits, answers logged while
    # no student routed the task and shadow checks (weighted by the inverse of their chance to
    # be drawn) are the yardstick.
    for i in range(40):
        log_exchange(db, "t", distinct(i), "before", at=i)  # no student yet
    for i in range(40, 60):
        deferred = log_exchange(
            db, "t", distinct(i), "hard", at=i, route_reason="deferred: below_threshold"
        )
        log_attempt(db, deferred, "t", "x", "failure", agreed=False)
    for i in range(60, 260):  # 200 requests the student served, 10 of them shadow-checked
        log_exchange(db, "t", distinct(i), "x", at=i, served_by="student")
    for i in range(260, 270):
        log_exchange(
            db, "t", distinct(i), "easy", at=i, served_by="shadow", route_reason="shadow of r"
        )
    reasons = ["audit: the student would serve (confident)"] * 4 + [
        "audit: the student would defer (below_threshold)"
    ] * 2
    audits = [
        log_exchange(db, "t", distinct(i), "audit", at=i, route_reason=reasons[i - 270])
        for i in range(270, 276)
    ]

    dataset = build_dataset(db, "t", DatasetConfig(eval_fraction=0.2, eval_min=20))

    assert len(dataset.eval) == 20
    assert {ex.answer for ex in dataset.eval} == {"before", "easy", "audit"}
    assert set(audits) <= {ex.id for ex in dataset.eval}
    assert {ex.answer for ex in dataset.train} == {"before", "hard"}
    assert dataset.stats["uniform"] == 56
    # 6 audits of 226 routed requests (a), 10 shadow checks of 200 served ones (s): a served
    # request is drawn with chance a + (1 - a) s, a deferred one with chance a.
    a, s = 6 / 226, 10 / 200
    weights = {ex.answer: set() for ex in dataset.eval}
    for ex in dataset.eval:
        weights[ex.answer].add(round(ex.sample_weight, 6))
    served = round(a / (a + (1 - a) * s), 6)
    assert weights == {"before": {1.0}, "easy": {served}, "audit": {served, 1.0}}
    assert served < 0.4


def test_a_student_is_judged_against_the_live_teacher_not_an_earlier_one(db):
    # A teacher model that changed, or a log imported from elsewhere: the newest 10% of the
    # answers drawn regardless of the router reached back into the earlier teacher's, and
    # certified the student against a teacher the traffic no longer gets (9,002 gold-labelled
    # answers, then 250 live ones: served answers agreed 0.71-0.74 with the live teacher at a
    # 0.8 target). They train; only the live teacher's answers judge.
    for i in range(180):
        log_exchange(db, "t", distinct(i), "old", at=i, teacher_model="gpt-4-0613")
    live = [
        log_exchange(db, "t", distinct(i), "new", at=i, teacher_model="gpt-4o-2024-08-06")
        for i in range(180, 200)
    ]
    log_exchange(db, "t", distinct(200), "x", at=200, served_by="student")  # names no teacher

    dataset = build_dataset(db, "t", DatasetConfig(eval_fraction=0.2, eval_min=20))

    assert {ex.id for ex in dataset.eval} == set(live)
    assert {ex.answer for ex in dataset.train} == {"old"} and len(dataset.train) == 180
    assert dataset.stats["teacher"] == "gpt-4o-2024-08-06"
    assert dataset.stats["uniform_other_teachers"] == 180


def test_teacher_models_that_answer_side_by_side_all_judge(db):
    # Clients asking for two models under one task: both are the traffic's teachers. Judging
    # with the newest answer's model alone certified the student against half of the traffic,
    # a different half from one run to the next.
    answers = {}
    for i in range(200):
        model = "gpt-4o" if i % 3 else "gpt-4o-mini"
        answers[log_exchange(db, "t", distinct(i), "x", at=i, teacher_model=model)] = model

    dataset = build_dataset(db, "t", DatasetConfig(eval_fraction=0.2, eval_min=20))

    held = [answers[ex.id] for ex in dataset.eval]
    assert len(held) == 40 and held.count("gpt-4o-mini") == 13
    assert dataset.stats["live_teachers"] == ["gpt-4o", "gpt-4o-mini"]
    assert dataset.stats["uniform_other_teachers"] == 0


def test_a_canary_model_then_all_traffic_leaves_the_replaced_model_out():
    def era(model: str, start: int, n: int) -> list[Example]:
        return [
            Example(f"{model}{start + i}", float(start + i), "x", teacher=model) for i in range(n)
        ]

    # a canary: one answer in ten from the new model, then all of them
    old = era("old", 0, 300)
    canary = [
        Example(f"c{i}", 300.0 + i, "x", teacher="new" if i % 10 == 0 else "old")
        for i in range(200)
    ]
    assert live_teachers(old + canary) == {"old", "new"}
    rollout = era("new", 500, 5)
    assert live_teachers(old + canary + rollout) == {"new"}
    # a model that answered everything is replaced at the next answer of another
    assert live_teachers(era("old", 0, 400) + era("new", 400, 1)) == {"new"}
    # a rare model is live until its silence would be unlikely at its share (1 in 20: ~135)
    rare = [
        Example(f"r{i}", float(i), "x", teacher="rare" if i % 20 == 0 else "main")
        for i in range(981)
    ]
    assert live_teachers(rare + era("main", 981, 100)) == {"main", "rare"}
    assert live_teachers(rare + era("main", 981, 140)) == {"main"}
    assert live_teachers([Example("a", 0.0, "x")]) == frozenset()


def test_a_log_that_names_no_teacher_model_is_held_out_as_before(db):
    for i in range(50):
        log_exchange(db, "t", distinct(i), f"label_{i % 3}", at=i)

    dataset = build_dataset(db, "t", DatasetConfig(eval_fraction=0.2, eval_min=1))

    assert len(dataset.eval) == 10 and dataset.stats["teacher"] is None


def test_a_wider_held_out_set_takes_only_the_live_teachers_answers():
    old = [Example(f"o{i}", float(i), "a", teacher="gpt-4-0613") for i in range(100)]
    new = [Example(f"n{i}", 100.0 + i, "b", teacher="gpt-4o") for i in range(30)]
    dataset = Dataset("t", "label", old + new[:20], new[20:])

    train, held_out = widened(dataset, 60)

    assert [ex.id for ex in held_out] == [ex.id for ex in new]
    assert train == old


def test_failure_cases_are_up_weighted_in_training(db):
    deferred = log_exchange(db, "t", distinct(1), "lost_card", at=1)
    log_attempt(db, deferred, "t", "card_arrival", "failure", agreed=False)
    served = log_exchange(db, "t", distinct(2), "card_arrival", at=2, served_by="student")
    log_exchange(
        db,
        "t",
        distinct(2),
        "lost_card",
        at=2.1,
        served_by="shadow",
        route_reason=f"shadow of {served}",
    )
    log_attempt(db, served, "t", "card_arrival", "shadow", agreed=False)
    agreed_shadow = log_exchange(db, "t", distinct(3), "top_up", at=3, served_by="shadow")
    log_attempt(db, agreed_shadow, "t", "top_up", "shadow", agreed=True)
    for i in range(4, 12):
        log_exchange(db, "t", distinct(i), "other", at=i)

    dataset = build_dataset(db, "t", DatasetConfig(eval_fraction=0.1, eval_min=1, failure_weight=3))

    prompts = by_prompt(dataset)
    assert prompts[distinct(1)].failure and prompts[distinct(2)].failure
    assert not prompts[distinct(3)].failure
    rows = [ex.messages[-1]["content"] for ex in dataset.training_rows()]
    assert rows.count(distinct(1)) == 3 and rows.count(distinct(2)) == 3
    assert rows.count(distinct(3)) == 1
    assert dataset.stats["failures_in_train"] == 2
    assert dataset.stats["train_rows"] == dataset.stats["train"] + 4


def test_feedback_corrects_or_drops_examples(db):
    corrected = log_exchange(db, "t", distinct(1), "card_arrival", at=1)
    log_feedback(db, corrected, correction="lost_or_stolen_card")
    disliked = log_exchange(db, "t", distinct(2), "top_up", at=2)
    log_feedback(db, disliked, score=-1)
    liked = log_exchange(db, "t", distinct(3), "balance", at=3)
    log_feedback(db, liked, score=1)
    student = log_exchange(db, "t", distinct(4), "wrong_label", at=4, served_by="student")
    log_feedback(db, student, score=-1, correction="right_label")
    changed = log_exchange(db, "t", distinct(5), "a", at=5)
    log_feedback(db, changed, score=-1)
    log_feedback(db, changed, correction="b")  # the latest feedback wins

    prompts = by_prompt(build_dataset(db, "t", CONFIG))

    assert prompts[distinct(1)].answer == "lost_or_stolen_card"
    assert prompts[distinct(1)].source == "correction"
    assert distinct(2) not in prompts
    assert prompts[distinct(3)].answer == "balance"
    assert distinct(4) not in prompts  # negative score drops, even with a correction
    assert prompts[distinct(5)].answer == "b"


def test_a_client_correction_never_enters_the_held_out_slice_a_reviewed_one_may(db):
    """Any key could relabel a task's held-out data through /v1/feedback, and the gates
    certified the student against it."""
    ids = [log_exchange(db, "t", distinct(i), "label", at=i) for i in range(10)]
    log_feedback(db, ids[9], correction="planted")  # the newest: held out by time
    log_feedback(db, ids[8], correction="checked", reviewed=True)
    log_feedback(db, ids[1], correction="early")

    dataset = build_dataset(db, "t", CONFIG)

    held_out = {ex.answer for ex in dataset.eval}
    trained = {ex.answer for ex in dataset.train}
    assert "planted" not in held_out and "planted" in trained
    assert "checked" in held_out and "early" in trained
    assert dataset.stats["corrections"] == 3 and dataset.stats["corrections_reviewed"] == 1
    assert dataset.stats["corrections_kept_out_of_eval"] == 1
    assert by_prompt(dataset)[distinct(8)].source == "reviewed"


def test_a_correction_on_a_student_answer_becomes_an_example(db):
    student = log_exchange(db, "t", distinct(1), "wrong_label", at=1, served_by="student")
    log_feedback(db, student, correction="right_label")
    log_exchange(db, "t", distinct(2), "x", at=2)

    prompts = by_prompt(build_dataset(db, "t", CONFIG))

    assert prompts[distinct(1)].answer == "right_label"


def test_secrets_and_configured_pii_are_scrubbed(db):
    log_exchange(db, "t", "my key is sk-abcdefghijklmnopqrstuv, mail bob@example.com", "ok", at=1)
    log_exchange(db, "t", distinct(2), "call +44 20 7946 0958", at=2)

    plain = by_prompt(build_dataset(db, "t", CONFIG))
    assert "[SECRET]" in next(p for p in plain if "key" in p)
    assert "bob@example.com" in next(p for p in plain if "key" in p)

    config = DatasetConfig(eval_fraction=0.2, eval_min=1, scrub_pii=["email", "phone"])
    scrubbed = build_dataset(db, "t", config)
    prompts = by_prompt(scrubbed)
    assert "my key is [SECRET], mail [EMAIL]" in prompts
    assert prompts[distinct(2)].answer == "call [PHONE]"
    assert scrubbed.stats["scrubbed"] == 3


def test_json_tasks_drop_answers_that_do_not_parse(db):
    fmt = {"type": "json_object"}
    log_exchange(db, "t", distinct(1), '{"intent": "a"}', at=1, response_format=fmt)
    log_exchange(db, "t", distinct(2), '{"intent": ', at=2, response_format=fmt)
    log_exchange(db, "t", distinct(3), '{"intent": "b"}', at=3, response_format=fmt)

    dataset = build_dataset(db, "t", CONFIG)

    assert dataset.kind == "json"
    assert dataset.stats["dropped_invalid_json"] == 1
    assert {ex.answer for ex in dataset.train + dataset.eval} == {
        '{"intent": "a"}',
        '{"intent": "b"}',
    }


def test_kind_is_inferred_from_the_answers(db):
    for i in range(20):
        log_exchange(db, "labels", distinct(i), ["card_arrival", "top_up"][i % 2], at=i)
        log_exchange(db, "prose", distinct(i), f"Here is a long answer number {i} in words.", at=i)
        log_exchange(db, "json", distinct(i), json.dumps({"n": i}), at=i)
    assert build_dataset(db, "labels", CONFIG).kind == "label"
    assert build_dataset(db, "prose", CONFIG).kind == "text"
    assert build_dataset(db, "json", CONFIG).kind == "json"
    assert infer_kind([]) == "text"


def log_response(db, task, at, request, response_id, text, **response):
    """Write one Responses API row as the gateway logs it."""
    body = {
        "id": response_id,
        "object": "response",
        "status": "completed",
        "output": [
            {
                "id": f"msg_{response_id}",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        **response,
    }
    request_id = log_exchange(
        db, task, "", None, at=at, response_json=json.dumps(body), system=None
    )
    with db.conn:
        db["requests"].update(
            request_id,
            {
                "endpoint": "responses",
                "request_json": json.dumps({"model": "gpt-4o-mini", **request}),
                "response_id": response_id,
                "stored": 1,
            },
        )
    return request_id


def test_responses_exchanges_are_examples_like_chat_ones_and_chains_are_expanded(db):
    log_exchange(db, "mixed", "card arrived?", "delivery", at=1)
    log_response(db, "mixed", 2, {"instructions": SYSTEM, "input": "pin change"}, "resp_a", "pin")
    log_response(
        db,
        "mixed",
        3,
        {
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "and atm?"}]}],
            "previous_response_id": "resp_a",
            "instructions": SYSTEM,
        },
        "resp_b",
        "atm",
    )
    log_response(
        db, "mixed", 4, {"input": "cut", "instructions": SYSTEM}, "resp_c", "x", status="incomplete"
    )
    log_response(
        db, "mixed", 5, {"input": "lost?", "previous_response_id": "resp_gone"}, "resp_d", "lost"
    )
    config = DatasetConfig(eval_fraction=0.0, eval_min=0, near_duplicate_threshold=1.0)
    dataset = build_dataset(db, "mixed", config)
    examples = dataset.train + dataset.eval
    assert [ex.messages for ex in examples] == [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "card arrived?"}],
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "pin change"}],
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "pin change"},
            {"role": "assistant", "content": "pin"},
            {"role": "user", "content": "and atm?"},
        ],
    ]
    assert [ex.answer for ex in examples] == ["delivery", "pin", "atm"]
    assert dataset.stats["dropped_truncated"] == 1  # resp_c
    assert dataset.stats["dropped_unsupported_prompt"] == 1  # resp_d: its chain is not logged


PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F1B\n\n"
    "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naqPZ8w==\n"
    "-----END RSA PRIVATE KEY-----"
)


def test_a_private_key_is_scrubbed_alone_not_the_text_before_a_stray_begin_line():
    scrubber = Scrubber.build()
    text = f"Keys start with -----BEGIN PRIVATE KEY----- and here is mine: {PEM} thanks"
    scrubbed, n = scrubber.scrub(text)
    assert n == 1
    assert (
        scrubbed == "Keys start with -----BEGIN PRIVATE KEY----- and here is mine: [SECRET] thanks"
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "-----BEGIN PRIVATE KEY-----\n" * 4000,
        "-----BEGIN RSA PRIVATE KEY-----\n" + "A" * 100_000,
        "-eyJ" * 20_000,
        "a." * 40_000,
    ],
)
def test_hostile_text_is_left_alone_and_a_real_secret_after_it_is_still_found(hostile):
    """Text built to make a backtracking pattern rescan the rest of the prompt from every
    start (its time per size is bench/scrub.py's); what it must still do is scrub right."""
    scrubber = Scrubber.build(pii=list(PII_PATTERNS))
    assert scrubber.scrub(hostile)[1] == 0
    scrubbed, n = scrubber.scrub(hostile + "\n" + PEM + " mail ops@example.com")
    assert scrubbed.startswith(hostile) and scrubbed.endswith("\n[SECRET] mail [EMAIL]")
    assert n == 2
