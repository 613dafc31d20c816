import json

from understudy.distiller.augment import augment
from understudy.distiller.config import AugmentConfig
from understudy.distiller.dataset import Example

SYSTEM = {"role": "system", "content": "Answer with the intent."}


def example(i, text, answer):
    return Example(str(i), i, answer, messages=[SYSTEM, {"role": "user", "content": text}])


SEEDS = [
    example(0, "where is my new card", "card_arrival"),
    example(1, "my card has not arrived yet", "card_arrival"),
    example(2, "how do I top up", "top_up"),
]


class StubTeacher:
    """Writes inputs from a script and labels by keyword, counting calls."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.calls = []

    def __call__(self, messages):
        self.calls.append(messages)
        if messages[0]["content"].startswith("You write new inputs"):
            return json.dumps(self.batches.pop(0)) if self.batches else "[]"
        text = messages[-1]["content"]
        return "card_arrival" if "card" in text else "top_up" if "top" in text else "pizza"


def test_synthetic_examples_are_validated_deduplicated_and_marked():
    teacher = StubTeacher(
        [["when does my card come", "where is my new card", "top up with cash?", "order pizza"]]
    )
    config = AugmentConfig(enabled=True, below=10, target=5, max_teacher_calls=10)

    new, stats = augment(SEEDS, teacher, config, kind="label")

    assert [ex.messages[-1]["content"] for ex in new] == [
        "when does my card come",
        "top up with cash?",
    ]
    assert [ex.answer for ex in new] == ["card_arrival", "top_up"]
    assert all(ex.source == "synthetic" and ex.messages[0] == SYSTEM for ex in new)
    assert stats["rejected_duplicate"] == 1  # already logged
    assert stats["rejected_invalid"] == 1  # a label the task never used
    assert "Answer with the intent." in teacher.calls[0][1]["content"]


def test_teacher_calls_never_exceed_the_budget():
    teacher = StubTeacher([[f"card question {i}" for i in range(50)]] * 10)
    config = AugmentConfig(enabled=True, below=1000, target=1000, max_teacher_calls=7)

    new, stats = augment(SEEDS, teacher, config, kind="label")

    assert len(teacher.calls) == stats["teacher_calls"] == 7
    assert len(new) == 6


def test_nothing_happens_when_off_or_when_there_are_enough_examples():
    teacher = StubTeacher([["x"]])
    assert augment(SEEDS, teacher, AugmentConfig(), kind="label")[0] == []
    assert augment(SEEDS, teacher, AugmentConfig(enabled=True, below=3), kind="label")[0] == []
    assert teacher.calls == []
