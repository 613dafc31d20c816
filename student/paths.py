"""Model and adapter paths are confined to the data directory.

The registry tells serving what to load: a base model and, for LoRA students, an adapter path;
a fully fine-tuned student has a model path instead. Before anything is loaded:

* an adapter or model path must resolve (symlinks followed) to a place inside the data
  directory; anything else is refused, whatever wrote it;
* a base model is either a hub id (``name`` or ``org/name``: letters, digits, ``.``, ``_``,
  ``-``, no ``..``) or a path, and a path obeys the rule above. Anything that starts like a path
  (``/``, ``.``, ``~``), has more than one ``/``, or names something that exists on disk is a
  path.

:class:`ConfinedBackend` applies the check to every model a student backend is asked to load.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from understudy.student.base import StudentAnswer, StudentBackend, StudentModel, StudentRequest

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class PathNotAllowedError(ValueError):
    """A model or adapter path outside the data directory (or not a valid model id)."""


def confine(path: str | Path, root: str | Path) -> Path:
    """``path`` resolved, if it lies inside ``root``; else :class:`PathNotAllowedError`."""
    text = str(path)
    if not text or "\x00" in text:
        raise PathNotAllowedError("an empty or malformed path")
    resolved = Path(text).expanduser().resolve()
    base = Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise PathNotAllowedError(f"{text!r} is outside the data directory {str(base)!r}")
    return resolved


def is_hub_id(ref: str) -> bool:
    """True for a model hub id such as ``gpt2`` or ``Qwen/Qwen3-0.6B``."""
    return bool(_HUB_ID.match(ref)) and ".." not in ref


def check_model_ref(ref: str, root: str | Path) -> str:
    """A base model reference that may be loaded: a hub id, or a path inside ``root``.

    A hub-id-shaped name that exists on disk is a path (loaders prefer the local directory).
    """
    if is_hub_id(ref) and not Path(ref).exists():
        return ref
    return str(confine(ref, root))


def check_student(model: StudentModel, root: str | Path) -> None:
    """Raise :class:`PathNotAllowedError` unless every path ``model`` names is allowed."""
    check_model_ref(model.base, root)
    if model.adapter_path is not None:
        confine(model.adapter_path, root)


class ConfinedBackend(StudentBackend):
    """A student backend that refuses to load a model whose paths leave the data directory."""

    def __init__(self, inner: StudentBackend, root: str | Path) -> None:
        self.inner = inner
        self.root = Path(root)
        self.name = inner.name
        self._checked: set[StudentModel] = set()

    def _check(self, model: StudentModel) -> None:
        if model not in self._checked:
            check_student(model, self.root)
            self._checked.add(model)

    async def load(self, model: StudentModel) -> None:
        self._check(model)
        await self.inner.load(model)

    async def generate(self, request: StudentRequest) -> StudentAnswer:
        self._check(request.model)
        return await self.inner.generate(request)

    async def unload(self, model: StudentModel) -> None:
        self._checked.discard(model)
        await self.inner.unload(model)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def confined_factory(
    factory: Callable[[], StudentBackend] | None, root: str | Path
) -> Callable[[], StudentBackend] | None:
    """``factory`` whose backends refuse paths outside ``root`` (None stays None)."""
    if factory is None:
        return None

    def make() -> StudentBackend:
        assert factory is not None
        return ConfinedBackend(factory(), root)

    return make
