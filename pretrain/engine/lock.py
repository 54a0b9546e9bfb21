"""One process per work dir: an advisory file lock that the operating system
releases when its holder exits or dies, so a crashed run never leaves it stale."""

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path


class WorkDirBusyError(RuntimeError):
    """Another live process holds the work dir's lock."""


@contextlib.contextmanager
def hold_lock(path: Path, holder: str) -> Iterator[None]:
    """Hold ``path`` exclusively while the block runs; raises
    :class:`WorkDirBusyError` naming the current holder if another process has it.
    The lock file stays behind (deleting it would race with a new holder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # close-on-exec: children do not inherit it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 512).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise WorkDirBusyError(
            f"{path.parent} is in use by {owner}; wait for it to finish or stop it, or use another work dir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.write(fd, f"{holder} (pid {os.getpid()} on {socket.gethostname()}, since {stamp})\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock
