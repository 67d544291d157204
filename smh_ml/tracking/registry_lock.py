"""A mutex held in the model registry itself, for a store that several machines share.

The promotion compare-and-set (read the champion, decide, move the alias) must run alone. On a
local sqlite store a file lock beside the database does that; an http or database store may
be used by Dagster instances and ``smh-ml train`` calls on other machines, which share no
file system and perhaps no Dagster instance. What they share is the registry, and a
registered model's name is unique in every MLflow store (a primary key in its database), so
creating ``<model>--promotion-lock`` succeeds for exactly one caller: that caller holds the
lock until it deletes the name. The holder is tagged (host, process, time), so a lock left by
a process that died is broken: at once when the holder was a process of this machine that is
gone, else once it is older than ``stale_seconds``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from smh_ml.io import pid_alive

LOCK_SUFFIX = "--promotion-lock"
HOLDER_TAG = "smh.lock_holder"
SINCE_TAG = "smh.lock_since"
STALE_SECONDS = 1800.0
"""A promotion holds the lock for seconds (minutes when the champion is re-tested on new test
captures); a lock older than this was left by a holder that did not finish."""


def lock_name(model_name: str) -> str:
    return f"{model_name}{LOCK_SUFFIX}"


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_stale(tags: dict[str, str], stale_seconds: float, now: float) -> bool:
    host, _, rest = tags.get(HOLDER_TAG, "").partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        return True
    try:
        return now - float(tags.get(SINCE_TAG, "0")) > stale_seconds
    except ValueError:
        return True


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


@contextmanager
def registry_lock(client, model_name: str, wait_seconds: float = 3600.0, poll_seconds: float = 0.5,
                  stale_seconds: float = STALE_SECONDS) -> Iterator[str]:
    """Hold the registry mutex of ``model_name`` on ``client``'s store while the block runs;
    yields the holder's token. Waits for a live holder up to ``wait_seconds``, then raises
    TimeoutError naming the lock (nothing has been changed)."""
    from mlflow.exceptions import MlflowException

    name, token = lock_name(model_name), _holder()
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            client.create_registered_model(
                name, tags={HOLDER_TAG: token, SINCE_TAG: f"{time.time():.3f}"},
                description=f"Held while a promotion of {model_name!r} decides; deleted when it is done.")
            break
        except MlflowException as exc:
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            tags = dict(client.get_registered_model(name).tags)
        except MlflowException as exc:  # released meanwhile: try again at once
            if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise
            continue
        if _is_stale(tags, stale_seconds, time.time()):
            _release(client, name, tags.get(HOLDER_TAG, ""))
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"registered model {name!r}: the promotion lock is held by {tags.get(HOLDER_TAG)} "
                               f"since {tags.get(SINCE_TAG)}; if that process is gone, delete {name!r}")
        time.sleep(poll_seconds)
    try:
        yield token
    finally:
        _release(client, name, token)


def _release(client, name: str, holder: str) -> None:
    """Delete the lock if ``holder`` still holds it (a lock broken as stale and taken by another
    caller is that caller's)."""
    from mlflow.exceptions import MlflowException

    try:
        if dict(client.get_registered_model(name).tags).get(HOLDER_TAG) == holder:
            client.delete_registered_model(name)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
