"""Atomic writes: a failed or interrupted step never leaves a half-written artifact and
never destroys the previous good one."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[^.]+(?:\.tmp)?$")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftover_prefix(name: str, kind: str) -> str:
    """Temporary names carry the writer's pid, so a later run can tell an orphan (its writer
    was killed) from a write in progress."""
    return f".{name}.{kind}-{os.getpid()}-"


def sweep_leftovers(dest: Path | str) -> list[Path]:
    """Remove the temporary files and folders that writers of ``dest`` left behind when they
    were killed (SIGKILL skips every clean-up); those of live writers are kept."""
    dest = Path(dest)
    removed = []
    if not dest.parent.is_dir():
        return removed
    for entry in dest.parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if not match or match["name"] != dest.name or pid_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_file(prefix: str, suffix: str, dir: Path | str) -> tuple[int, str]:
    """``tempfile.mkstemp`` with the mode a plain ``open()`` gives (0666 less the umask), not
    mkstemp's 0600: renamed into place, the file must be as readable as any other the
    process writes, so a storage folder shared by a group (umask 002) stays readable to it."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=dir)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, name


def temp_dir(prefix: str, suffix: str = "", dir: Path | str | None = None) -> Path:
    """``tempfile.mkdtemp`` with the mode a plain ``mkdir()`` gives (0777 less the umask), not
    0700, for the same reason as :func:`temp_file`."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=dir))
    os.chmod(path, 0o777 & ~_umask())
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    fd, tmp = temp_file(_leftover_prefix(path.name, "tmp"), ".tmp", path.parent)
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
def scratch_dir(beside: Path | str) -> Iterator[Path]:
    """A temporary working folder next to ``beside`` (inside the project's storage, not the
    system's temp folder), removed on exit and swept by the next caller if its process was
    killed."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(beside)
    tmp = temp_dir(_leftover_prefix(beside.name, "tmp"), ".tmp", beside.parent)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path | str, b: Path | str) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``), so neither
    name is ever absent. False where the system or file system cannot (then nothing moved)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def replace_dir(tmp: Path, dest: Path) -> None:
    """Put the folder ``tmp`` at ``dest``. An existing ``dest`` is swapped out atomically and
    then removed; only where the swap is unsupported is there a moment between two renames
    in which ``dest`` is absent (the old folder is then put back if the second one fails)."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    if exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return
    backup = dest.with_name(f"{_leftover_prefix(dest.name, 'old')}{uuid.uuid4().hex[:8]}")
    os.replace(dest, backup)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(backup, dest)
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(dest: Path | str, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it in only when the block succeeds.

    On error the temporary folder is removed and ``dest`` is untouched; the leftovers of a
    killed writer are swept first. With ``overwrite=False`` an existing non-empty ``dest``
    is refused before anything is written.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest}: exists and is not a directory")
    if not overwrite and dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: already exists and is not empty (use overwrite to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(dest)
    tmp = temp_dir(_leftover_prefix(dest.name, "tmp"), ".tmp", dest.parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dest)
