"""Who is working on what: an exclusive lock file that names its holder's pid.

The kernel drops a `flock` when its process dies, however it dies, so a lock left by a killed process is
free again at once; the pid written inside only serves to tell the user who holds it, or who held it.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from .atomic import NoSpace, is_no_space, is_read_only, read_only_error


class LockHeld(Exception):
    """Another live process holds the lock; `holder` is what it wrote there (pid, host, since)."""

    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by pid {holder.get('pid', '?')}")


def read_holder(path: Path) -> dict:
    """What the last holder wrote: {'pid', 'host', 'since'}; empty when there is nothing readable."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return {}
    pid, host, since = (text.split(maxsplit=2) + ["", "", ""])[:3]
    return {"pid": int(pid), "host": host, "since": since} if pid.isdigit() else {}


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock now (asked without taking it for more than an instant)."""
    if not Path(path).is_file():
        return False
    # opened to read and probed with a shared lock, which the holder's exclusive one refuses: no write access
    # is needed (a read-only workspace), and NFS, which emulates flock with byte-range locks, allows it too
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


class PidLock:
    """`with PidLock(path) as lock:` - held until the block ends or the process dies.

    `lock.previous` is what the last holder wrote when it ended without releasing (killed): the caller
    can say it took over. A live holder raises LockHeld, after waiting up to `wait` seconds.
    """

    def __init__(self, path: Path, wait: float = 0.0):
        self.path, self.wait = Path(path), wait
        self.previous: dict = {}
        self._handle = None

    def __enter__(self) -> "PidLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> "PidLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as error:
            if is_no_space(error):
                raise NoSpace(self.path) from None
            if is_read_only(error):
                raise read_only_error(error, self.path) from None
            raise
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    raise LockHeld(self.path, read_holder(self.path)) from None
                time.sleep(0.2)
        self.previous = read_holder(self.path)  # left there only by a holder that never released
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
            handle.flush()
        except OSError as error:
            try:
                handle.close()  # the lock goes with the handle (closing flushes again, and may fail alike)
            except OSError:
                pass
            if is_no_space(error):
                raise NoSpace(self.path) from None
            raise
        self._handle = handle
        return self

    def release(self) -> None:
        handle, self._handle = self._handle, None
        handle.seek(0)
        handle.truncate()  # an empty file after a clean exit: nothing to take over
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
