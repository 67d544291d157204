"""A resumable step: a folder computed from declared inputs is reused while they are unchanged.

A step writes its folder, then ``inputs.json``: what it was computed from (its settings and
the content ids of its data). :func:`current` gives the step's stored result only when the
folder is complete and its inputs are exactly the ones asked for; anything else (a stopped
step, a changed setting or upstream result) reads as "run it again". :func:`run_step` is the
one cache -> run -> stamp path: every step of ``smh-ml reproduce`` and each class of
``smh-ml gan`` (:mod:`smh_ml.workflows.gans`) run through it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smh_ml.io import atomic_write_text

INPUTS = "inputs.json"


def _read(path: Path) -> Any | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def stamped(folder: Path | str, inputs: dict) -> bool:
    """Whether ``folder`` was computed from exactly ``inputs`` (see :func:`stamp`)."""
    return _read(Path(folder) / INPUTS) == _jsonable(inputs)


def current(folder: Path | str, inputs: dict, name: str = "report.json") -> dict | None:
    """The step's result in ``folder/name`` if it was computed from exactly ``inputs``."""
    result = _read(Path(folder) / name)
    return result if result is not None and stamped(folder, inputs) else None


def stamp(folder: Path | str, inputs: dict) -> None:
    """Record ``inputs`` as what ``folder`` was computed from; call it after the step's files."""
    atomic_write_text(Path(folder) / INPUTS, json.dumps(inputs, indent=1) + "\n")


@dataclass(frozen=True)
class StepRun:
    """A step's result and how it came about."""

    result: dict
    seconds: float | None
    """Wall seconds it ran for now; None when an earlier run's result was reused."""

    @property
    def reused(self) -> bool:
        return self.seconds is None


def run_step(folder: Path | str, inputs: dict, compute: Callable[[], Any], name: str = "report.json",
             rerun_if: Callable[[dict], bool] | None = None) -> StepRun:
    """The one cache -> run -> stamp path: the result in ``folder/name`` when ``folder`` was
    computed from exactly ``inputs`` (and ``rerun_if(result)`` does not ask for more), else
    ``compute()`` (which writes ``folder``), the stamp, and the result it wrote."""
    result = current(folder, inputs, name)
    if result is not None and not (rerun_if and rerun_if(result)):
        return StepRun(result, None)
    start = time.perf_counter()
    compute()
    seconds = time.perf_counter() - start
    written = _read(Path(folder) / name)
    if written is None:
        raise FileNotFoundError(f"{Path(folder) / name}: the step finished without writing its result")
    stamp(folder, inputs)
    return StepRun(written, seconds)
