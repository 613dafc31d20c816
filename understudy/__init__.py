"""Understudy: a drop-in OpenAI-compatible gateway that distils the teacher into a student.

The parts install under this one name: :mod:`understudy.gateway` (the HTTP app),
:mod:`understudy.router` (the routing decision), :mod:`understudy.student` (model engines),
:mod:`understudy.storage` (the database), :mod:`understudy.distiller` (training and
promotion). This package itself is the composition root: the command line, the assembled
settings, the demo. Importing it loads nothing.
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("understudy")
        except PackageNotFoundError:  # pragma: no cover - a source tree that was not installed
            return "0+unknown"
    raise AttributeError(f"module 'understudy' has no attribute {name!r}")
