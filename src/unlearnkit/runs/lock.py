"""The run lock: one command at a time writes a run directory (`locked_run`, flock on `<run>/.lock`)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from .layout import LOCK_NAME
from .rundir import RunDir

_HELD: dict[str, list] = {}   # real path of a locked run dir -> [fd, depth]: the lock is re-entrant per process


class RunLockedError(RuntimeError):
    """Another command holds the run directory."""


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _holder(lock: Path) -> str:
    for _ in range(10):   # the holder writes its pid right after taking the lock
        try:
            text = lock.read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        if text:
            return text
        time.sleep(0.05)
    return "pid unknown"


def _acquire(path: Path) -> int:
    """flock(LOCK_EX | LOCK_NB) on `path/.lock`; retried when the file was replaced between open and lock."""
    lock = path / LOCK_NAME
    for _ in range(5):
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"run directory {path} is in use by another command ({_holder(lock)}); two commands writing one "
                f"run directory would mix their checkpoints and logs: wait for that one to finish (or stop it), "
                f"or pass another run=") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            return fd
        os.close(fd)   # a failed command removed its empty run dir (and the lock file) meanwhile: start over
    raise RunLockedError(f"run directory {path}: could not take {lock} (it kept being replaced)")


@contextlib.contextmanager
def locked_run(path: str | Path) -> Iterator[RunDir]:
    """Create `path` if needed and hold it exclusively (flock on `path/.lock`, pid inside) for the whole block.

    A second holder — another process, or another command — gets `RunLockedError` naming the holder's pid. The
    lock is re-entrant within one process (a command calling another on the same run). Under torchrun /
    accelerate launch only global rank 0 (env RANK) locks: the other ranks of the same job must not fail on their
    own rank 0's lock, and they write nothing before the process group is up, which waits for rank 0 — so a
    second job fails on its rank 0 and the launcher stops its other ranks. If the block fails and the directory
    was created here and holds nothing but the lock, it is removed again, so a refused command leaves no
    empty run folder behind."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"run={p}: exists and is not a directory; pass a directory for run=")
    created = not p.exists()
    key = os.path.realpath(p)
    if _rank() != 0 or key in _HELD:
        if key in _HELD:
            _HELD[key][1] += 1
        try:
            yield RunDir(p)
        finally:
            if key in _HELD:
                _HELD[key][1] -= 1
        return
    fd = _acquire(p)
    _HELD[key] = [fd, 1]
    try:
        yield RunDir(p)
    except BaseException:
        if created and p.is_dir() and {c.name for c in p.iterdir()} <= {LOCK_NAME}:
            (p / LOCK_NAME).unlink(missing_ok=True)
            p.rmdir()
        raise
    finally:
        del _HELD[key]
        os.close(fd)   # closing the descriptor releases the flock


def lock_held(path: str | Path) -> bool:
    """True when a live process holds the run's lock (`locked_run`): the run is being written now.

    A shared, non-blocking flock on the lock file fails only while another open file description holds the exclusive
    lock; a lock file left by a finished or killed command is not held (the kernel drops a dead process's locks).
    """
    try:
        fd = os.open(Path(path) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
