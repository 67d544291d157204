"""Atomic writes: a failed or interrupted step never leaves a half-written artifact and
never destroys the previous good one."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def file_hash(path: Path | str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def files_digest(paths: Iterable[Path | str]) -> str:
    """One short id for the content of several files, each under its own name (order-free):
    what a step was computed from, so a later run can tell a stale result from a good one."""
    entries = sorted(f"{Path(p).name}\0{file_hash(p)}" for p in paths)
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_npy(path: Path | str, array: np.ndarray) -> Path:
    """Save an array in the standard ``.npy`` format (no pickles), atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def load_npy(path: Path | str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


@contextlib.contextmanager
def atomic_dir(dest: Path | str, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it in only when the block succeeds.

    On error the temporary folder is removed and ``dest`` is untouched. With
    ``overwrite=False`` an existing non-empty ``dest`` is refused before anything is written.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest}: exists and is not a directory")
    if not overwrite and dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: already exists and is not empty (use overwrite to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    if dest.exists():
        os.replace(dest, backup)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if backup.exists():
            os.replace(backup, dest)
        raise
    shutil.rmtree(backup, ignore_errors=True)
