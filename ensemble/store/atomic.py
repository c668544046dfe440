"""The one place files are written: every write goes to a temp file in the same folder, then renames.

A crash mid-write leaves the old file (or none), never half a submission or a torn job record. A full disk
is a NoSpace error that names the path and the space left, with the temp file already gone.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# A write that fails with less than this free beside it ran out of disk, whatever the library said (HDF5 and
# TensorFlow do not always pass ENOSPC on, and may crash outright); a member process that runs out exits with
# NO_SPACE_EXIT, and the runner stops the job rather than retrying it.
LOW_SPACE_BYTES = 16 * 2**20
NO_SPACE_EXIT = 28


class NoSpace(Exception):
    """The disk is full: which path could not be written and how much space is left there."""

    def __init__(self, path: Path, what: str = "writing"):
        self.path = Path(path)
        self.free = free_bytes(self.path)
        free = "unknown space" if self.free is None else format_bytes(self.free)
        super().__init__(f"no space left on device {what} {self.path} ({free} free there); free some space and "
                         "rerun the same command: everything finished so far is kept")


_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


class ReadOnly(Exception):
    """A path this command must write cannot be written (a read-only mount, a folder of another user)."""

    def __init__(self, path: Path | str, reason: str = "read-only"):
        self.path = Path(path)
        super().__init__(f"cannot write {self.path} ({reason})")


def is_read_only(error: BaseException | None) -> bool:
    """Whether an error says a path may not be written: a read-only file system or no permission."""
    return isinstance(error, ReadOnly) or (isinstance(error, OSError) and error.errno in _READ_ONLY_ERRNOS)


def read_only_error(error: OSError, path: Path | str | None = None) -> ReadOnly:
    return ReadOnly(path or error.filename or "?", error.strerror or "read-only")


def write_refusal(path: Path) -> str | None:
    """Why files cannot be made at path (or, while it does not exist, in its nearest existing folder), as the
    OS words it; None when they can. Asked of the file system without writing (a read-only mount refuses even
    root)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
        return None if os.access(path, os.W_OK) else os.strerror(errno.EACCES)
    except OSError as error:
        return error.strerror or str(error)


def writable(path: Path) -> bool:
    return write_refusal(path) is None


def require_writable(path: Path) -> Path:
    """Refuse, before any work, a command whose results could not be saved."""
    if (reason := write_refusal(path)) is not None:
        raise ReadOnly(path, reason)
    return path


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system that holds path (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def low_on_space(path: Path) -> bool:
    free = free_bytes(path)
    return free is not None and free < LOW_SPACE_BYTES


def format_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def is_no_space(error: BaseException | None) -> bool:
    """Whether an error (or one it came from) is a full disk: the OS's errno, or the words libraries such as
    HDF5 wrap it in."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NoSpace) or (isinstance(error, OSError) and error.errno in _NO_SPACE_ERRNOS) \
                or "No space left on device" in str(error) or "errno = 28" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> Path:
    return write_with(path, lambda handle: handle.write(data))


def write_with(path: Path, write) -> Path:
    """`write(handle)` fills a temp file beside path, which then replaces path: for data too big to hold twice."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file its normal mode
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_no_space(error) and not isinstance(error, NoSpace):
            raise NoSpace(path) from None
        if is_read_only(error) and not isinstance(error, ReadOnly):
            raise read_only_error(error, path) from None
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy(path: Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
