"""The classical student: TF-IDF word and character n-grams with logistic regression.

For label-shaped tasks (answers drawn from a small set of strings) a linear model trained in
seconds on a few hundred teacher answers is a better classifier than a small language model
trained from scratch, and it answers in well under a millisecond. Its answer is the most
likely label, given as one "token" whose log-probability is the label's, with the next most
likely labels as the alternatives: the router's features (sequence log-probability, first-token
margin) are its class probabilities.

A model is a directory holding ``classical.json`` (settings, labels, vocabularies) and
``weights.npz`` (IDF weights, coefficients; read without pickle). A cross-fitted student
(:class:`FoldedClassical`) is a directory whose ``classical.json`` names its folds, with one
such model per fold in ``fold-0``, ``fold-1``...: each was trained without the held-out answers
of its fold, and a text is answered by the model of its fold (:func:`fold_of`). scikit-learn
and numpy are imported when a model is trained or loaded, never at import time.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MARKER = "classical.json"
"""The file that makes a model directory a classical student."""
WEIGHTS = "weights.npz"
TOP_K = 5
FOLD_DIR = "fold-{}"
"""A cross-fitted student's model of one fold, inside its directory."""


@dataclass
class ClassicalSettings:
    """The classical student (``[distiller.classical]``): a candidate of every run whose task is
    label-shaped, trained in seconds in the run's own process."""

    max_labels: int = 500
    """Most distinct answers a label-shaped task may have for a classical candidate."""
    word_ngrams: int = 2
    """Word n-grams from 1 to this many words."""
    char_min: int = 2
    """Shortest character n-gram (taken within word boundaries)."""
    char_max: int = 5
    """Longest character n-gram."""
    min_df: int = 1
    """Least training texts an n-gram must occur in to be a feature."""
    c: float = 10.0
    """Inverse regularisation strength of the logistic regression."""
    max_iter: int = 300
    """Most solver iterations."""
    label_examples: int = 1
    """Times each label's own words (``card_arrival`` as ``card arrival``) train as one more
    example of it: from a few hundred answers, a label's name is often the best evidence of
    what it means (0: off)."""
    folds: int = 5
    """Cross-fitting: the run's held-out answers are split in this many folds by a hash of
    their text, and one model per fold trains on the training answers and the other folds'
    held-out answers. Each held-out answer is then judged by a model that never saw it, so
    every one of them still certifies the threshold, and all but a fold of them also train:
    on a new task's first few hundred answers that is what lets a student be certified at
    all. A request is answered by the model of its text's fold. 1: one model on the training
    answers alone."""
    held_out_min: int = 1000
    """Fewest held-out answers a cross-fitted candidate is judged and certified on: when the
    run's held-out slice (``distiller.dataset.eval_*``, sized for the language model, which
    does not train on it) is smaller, the newest uniform training answers join it, up to half
    the log. Cross-fitted, they still train it (each in the folds that do not judge it), and
    the threshold's bound is taken on more answers. 0: the run's held-out slice."""
    fold_max_train: int = 5000
    """With more training answers than this, one model trains on them and the run's own
    held-out slice (``distiller.dataset.eval_*``) only certifies it: the held-out answers add
    little to so many, and ``folds`` fits would take that many times as long (on 2 cores, 67 s
    for a run at this bound against 33 s for one model). Below it, the candidate is
    cross-fitted and certified on ``held_out_min`` answers: on a log of a few thousand, the
    run's own slice is a few hundred, and a bound taken on them certifies far less."""


def label_words(label: str) -> str:
    """A label as the words it is made of: ``_``, ``-``, ``.``, ``/`` and ``:`` become spaces,
    and camelCase is split (``cardArrival`` -> ``card Arrival``)."""
    spaced = re.sub(r"[_\-./:]+", " ", label)
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", spaced).strip()


def is_classical(path: str | Path) -> bool:
    """Whether ``path`` is a classical student's directory."""
    return (Path(path) / MARKER).is_file()


def fold_of(text: str, folds: int) -> int:
    """The fold of ``text`` among ``folds``: a stable hash of it (the same in every process,
    run and version), so a held-out answer and a later request with the same text are
    answered by the same fold's model."""
    return zlib.crc32(text.encode("utf-8")) % folds if folds > 1 else 0


def prompt_text(messages: Sequence[Mapping[str, Any]] | None, prompt: str | None) -> str:
    """The text the classical student reads: the non-system messages (the part that varies),
    or the completions prompt."""
    if messages is None:
        return prompt or ""
    parts = [
        str(m.get("content") or "")
        for m in messages
        if m.get("role") not in ("system", "developer")
    ]
    return "\n".join(parts)


class ClassicalModel:
    """A fitted TF-IDF + logistic regression classifier over the task's labels."""

    def __init__(self, vectorizers: list[Any], coef: Any, intercept: Any, labels: list[str]):
        self.vectorizers = vectorizers
        self.coef = coef
        """(labels, features) coefficients."""
        self.intercept = intercept
        self.labels = labels

    # -- training --------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        answers: Sequence[str],
        settings: ClassicalSettings | None = None,
        *,
        seed: int = 0,
    ) -> ClassicalModel:
        """Fit on ``texts`` labelled with ``answers`` (at least two distinct labels)."""
        import numpy as np
        from scipy.sparse import hstack
        from sklearn.linear_model import LogisticRegression

        settings = settings or ClassicalSettings()
        labels = sorted(set(answers))
        if len(labels) < 2:
            raise ValueError("the classical student needs at least two distinct answers")
        vectorizers = [_vectorizer(kind, settings) for kind in ("word", "char")]
        matrix = hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
        index = {label: i for i, label in enumerate(labels)}
        y = np.array([index[a] for a in answers])
        clf = LogisticRegression(C=settings.c, max_iter=settings.max_iter, random_state=seed)
        clf.fit(matrix, y)
        coef, intercept = clf.coef_, clf.intercept_
        if len(labels) == 2:  # binary: one row for the second label; make it two
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(vectorizers, np.asarray(coef), np.asarray(intercept), labels)

    # -- answering -------------------------------------------------------------------------

    def probabilities(self, texts: Sequence[str]) -> list[list[float]]:
        """P(label) of each text, in :attr:`labels` order."""
        import numpy as np
        from scipy.sparse import hstack

        matrix = hstack([v.transform(list(texts)) for v in self.vectorizers]).tocsr()
        logits = np.asarray(matrix @ self.coef.T) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).tolist()

    def predict(self, texts: Sequence[str], top_k: int = TOP_K) -> list[list[tuple[str, float]]]:
        """The ``top_k`` most likely labels of each text with their log-probabilities."""
        out = []
        for probs in self.probabilities(texts):
            ranked = sorted(range(len(probs)), key=lambda i: -probs[i])[:top_k]
            out.append([(self.labels[i], math.log(max(probs[i], 1e-300))) for i in ranked])
        return out

    # -- files -----------------------------------------------------------------------------

    def save(self, path: str | Path, settings: ClassicalSettings) -> Path:
        import numpy as np

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "engine": "classical",
            "settings": asdict(settings),
            "labels": self.labels,
            "vocabularies": [
                {k: int(v) for k, v in vec.vocabulary_.items()} for vec in self.vectorizers
            ],
        }
        arrays = {f"idf{i}": vec.idf_ for i, vec in enumerate(self.vectorizers)}
        np.savez(path / WEIGHTS, coef=self.coef, intercept=self.intercept, **arrays)
        (path / MARKER).write_text(json.dumps(meta), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ClassicalModel:
        """Read a saved model (no pickle: JSON and plain arrays)."""
        import numpy as np

        path = Path(path)
        meta = json.loads((path / MARKER).read_text(encoding="utf-8"))
        raw = meta["settings"]
        settings = ClassicalSettings(**raw)
        with np.load(path / WEIGHTS, allow_pickle=False) as arrays:
            vectorizers = []
            for i, (kind, vocabulary) in enumerate(
                zip(("word", "char"), meta["vocabularies"], strict=True)
            ):
                vec = _vectorizer(kind, settings, vocabulary)
                vec.idf_ = arrays[f"idf{i}"]
                vectorizers.append(vec)
            return cls(vectorizers, arrays["coef"], arrays["intercept"], list(meta["labels"]))


def _vectorizer(kind: str, settings: ClassicalSettings, vocabulary: Any = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    if kind == "word":
        return TfidfVectorizer(
            ngram_range=(1, settings.word_ngrams),
            min_df=settings.min_df,
            sublinear_tf=True,
            lowercase=True,
            vocabulary=vocabulary,
        )
    return TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(settings.char_min, settings.char_max),
        min_df=settings.min_df,
        sublinear_tf=True,
        lowercase=True,
        vocabulary=vocabulary,
    )


class FoldedClassical:
    """A cross-fitted classical student: one :class:`ClassicalModel` per fold, each trained
    without the held-out answers of its fold; a text is answered by its fold's model."""

    def __init__(self, models: Sequence[ClassicalModel]):
        if len(models) < 2:
            raise ValueError("a cross-fitted student needs at least two folds")
        self.models = list(models)
        self.labels = sorted({label for m in self.models for label in m.labels})
        """Every fold's labels (a fold may lack a rare one)."""

    def predict(self, texts: Sequence[str], top_k: int = TOP_K) -> list[list[tuple[str, float]]]:
        """As :meth:`ClassicalModel.predict`, each text by the model of its fold."""
        out: list[list[tuple[str, float]]] = [[] for _ in texts]
        folds: dict[int, list[int]] = {}
        for i, text in enumerate(texts):
            folds.setdefault(fold_of(text, len(self.models)), []).append(i)
        for fold, positions in folds.items():
            ranked = self.models[fold].predict([texts[i] for i in positions], top_k)
            for i, answer in zip(positions, ranked, strict=True):
                out[i] = answer
        return out

    def save(self, path: str | Path, settings: ClassicalSettings) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for fold, model in enumerate(self.models):
            model.save(path / FOLD_DIR.format(fold), settings)
        meta = {"engine": "classical", "settings": asdict(settings), "folds": len(self.models)}
        (path / MARKER).write_text(json.dumps(meta), encoding="utf-8")
        return path


Classifier = ClassicalModel | FoldedClassical


def load_classical(path: str | Path) -> Classifier:
    """The classical student saved in ``path``: one model, or one per fold."""
    path = Path(path)
    meta = json.loads((path / MARKER).read_text(encoding="utf-8"))
    folds = int(meta.get("folds") or 0)
    if folds:
        models = [ClassicalModel.load(path / FOLD_DIR.format(k)) for k in range(folds)]
        return FoldedClassical(models)
    return ClassicalModel.load(path)
