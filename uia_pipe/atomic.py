"""Atomic writes: a temporary file (or folder) in the destination's directory,
renamed into place on success, so an interrupted run never leaves a
half-written artifact; the next write of the same output removes what a killed
one left behind. The standard library only: `io` writes every artifact
through these, and `data` stages raw files with them without importing `io`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, left unchanged."""
    try:
        # Linux reports it; reading it elsewhere means setting it for a moment.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        # The strictest mask while we look: a file another thread creates meanwhile
        # is at worst private, never world-writable.
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _temporary_name(path: Path) -> re.Pattern[str]:
    """The names `_claim` gives temporaries of `path`: tempfile's 8 random
    characters between ".<name>." and ".tmp"."""
    return re.compile(re.escape(f".{path.name}.") + "[a-z0-9_]{8}" + re.escape(".tmp"))


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries of `path` that killed writes left beside it; a
    temporary that a live writer holds locked, and every other file, stays."""
    pattern = _temporary_name(path)
    for entry in os.scandir(path.parent):
        if not pattern.fullmatch(entry.name):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            # A killed writer's lock died with it; a live one (another process
            # filling a shared cache) still holds its lock, and we must not take
            # its file away. Where locks are unsupported, nothing is removed.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _claim(path: Path, directory: bool) -> tuple[int, Path]:
    """A new temporary file (or folder) beside `path` and an open descriptor
    that holds a lock on it until closed: (fd, temporary path)."""
    prefix, parent = f".{path.name}.", path.parent
    while True:
        if directory:
            tmp = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks on this filesystem: written unprotected, as ever
        if os.fstat(fd).st_nlink:
            return fd, Path(tmp)
        # Another writer's clean-up removed it in the instant before our lock.
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`,
    with mode 0o666 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp_path = _claim(path, directory=False)
    try:
        yield tmp_path
        # mkstemp makes the file private; an output is an ordinary file.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces
    `path`, with mode 0o777 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = _claim(path, directory=True)
    try:
        yield tmp
        # mkdtemp makes the folder private; an output is an ordinary folder.
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)
