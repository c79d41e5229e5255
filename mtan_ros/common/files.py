"""Files written whole or not at all, and a full disk reported as one line.

`atomic_write(path)` hands out a temporary file beside `path`
(".NAME.PID.RANDOM.tmp"); when the block ends the file is flushed, fsynced and
renamed over `path`. A reader, or a process killed at any moment, finds the
previous file or the new one, never half of one. When the block fails the
temporary file is removed and `path` is left as it was.

A write that runs out of space (ENOSPC), over a quota (EDQUOT) or into an I/O
error (EIO) raises `StorageError`, whose one line names the file, the space left
on its file system and what to do. Libraries that lose the errno count too:
torch's zip writer reports a short write as "RuntimeError: [enforce fail at
inline_container.cc] . unexpected pos", so an OSError or RuntimeError raised while
the file system is nearly full is taken for a full disk.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional, Union

from mtan_ros.errors import StorageError

__all__ = ["atomic_write", "write_text", "write_bytes", "remove_stale_temporaries", "storage_error", "free_bytes",
           "format_bytes"]

PathLike = Union[str, "os.PathLike[str]"]

# Why each errno stops a write, and what the user can do about it.
_CAUSES = {
    errno.ENOSPC: ("no space left on device", "free some space there or choose another folder"),
    errno.EDQUOT: ("disk quota exceeded", "delete some of your files there, ask for a larger quota or choose "
                                          "another folder"),
    errno.EIO: ("input/output error", "the disk may be failing or was removed: check it (dmesg) or choose another "
                                      "folder"),
}
# An OSError or RuntimeError without an errno, raised while the file system has less than this left,
# is taken for a full disk (a short write leaves less than one write's worth).
NEARLY_FULL_BYTES = 1 << 20
# Words of the messages of libraries that report a full disk without an errno (sqlite3, among others).
_FULL_WORDS = ("no space left", "disk is full", "disk full")

# Temporary files: ".NAME.PID.RANDOM.tmp" (checkpoints of older versions: ".NAME.RANDOM.tmp").
_TMP_PATTERN = r"\.{name}\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{{8}}\.tmp"
_writing: set[str] = set()  # names of the temporary files this process is writing now
_writing_lock = threading.Lock()


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb", *, encoding: Optional[str] = None,
                 newline: Optional[str] = None) -> Iterator[IO]:
    """A file object ("wb" or "w") whose content replaces `path` only when the block ends without error.

    The folder is created if needed; temporaries that killed writers left for the
    same target are removed first. The new file gets the permissions of any newly
    created file (0666 minus the umask). Storage failures raise StorageError (see
    the module doc); anything else, Ctrl-C included, propagates unchanged.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp_name = _create_temporary(path)
    except OSError as exc:
        raise storage_error(path, exc) or exc
    handle = None
    try:
        if mode == "w":
            handle = os.fdopen(fd, mode, encoding=encoding or "utf-8", newline=newline)
        else:
            handle = os.fdopen(fd, mode)
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(tmp_name, path)
    except BaseException as exc:
        if handle is None:
            os.close(fd)
        else:
            _close_quietly(handle)
        written = _size(tmp_name)
        nearly_full = _is_nearly_full(path.parent)  # measured while the partial file still takes its space
        Path(tmp_name).unlink(missing_ok=True)
        error = storage_error(path, exc, written=written, nearly_full=nearly_full, previous_kept=True) \
            if isinstance(exc, Exception) else None
        if error is None:
            raise
        raise error from exc
    finally:
        with _writing_lock:
            _writing.discard(os.path.basename(tmp_name))
    _fsync_folder(path.parent)


def write_text(path: PathLike, text: str, *, newline: Optional[str] = None) -> Path:
    """`text` (UTF-8) as the whole content of `path`, atomically (see atomic_write)."""
    with atomic_write(path, "w", newline=newline) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: PathLike, data: bytes) -> Path:
    """`data` as the whole content of `path`, atomically (see atomic_write)."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def storage_error(path: PathLike, exc: BaseException, *, written: Optional[int] = None,
                  nearly_full: Optional[bool] = None, previous_kept: bool = False) -> Optional[StorageError]:
    """The StorageError for a failed write of `path`, or None when `exc` is not a storage failure.

    `exc` counts when it, or an exception it was raised from or during, is an
    ENOSPC/EDQUOT/EIO OSError or says the disk is full; or when it is an OSError or
    RuntimeError and the file system was nearly full (`nearly_full`, measured by the
    caller before it cleaned up; measured now when None). `written`: bytes of the
    file written before the failure; `previous_kept`: an existing `path` was not
    touched (both for the message).
    """
    if isinstance(exc, StorageError):
        return exc
    path = Path(path)
    code = _storage_errno(exc)
    if code is None and isinstance(exc, (OSError, RuntimeError)):
        if nearly_full if nearly_full is not None else _is_nearly_full(path.parent):
            code = errno.ENOSPC
    if code is None:
        return None
    reason, advice = _CAUSES[code]
    free = free_bytes(path.parent)
    text = f"cannot write '{path}': {reason}"
    if written:
        text += f" after writing {format_bytes(written)} of it"
    if free is not None:
        text += f"; {format_bytes(free)} free on that file system"
    text += f"; {advice}"
    if previous_kept and path.exists():
        text += f" (the previous '{path.name}' is unchanged)"
    error = StorageError(text)
    error.path, error.free_bytes = str(path), free
    return error


def free_bytes(folder: PathLike) -> Optional[int]:
    """Bytes an ordinary user can still write on the file system holding `folder` (its nearest existing
    parent); None when that cannot be asked."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize


def format_bytes(count: int) -> str:
    """A byte count as people read it: "0 B", "812 B", "151.5 KiB", "3.2 GiB"."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Delete temporary files of `path` left by killed writers; returns what was removed.

    Only names that atomic_write makes for this target count. Files this process
    is writing now are kept, and so are files named after another process that is
    still running (it may be writing the same target).
    """
    path = Path(path)
    pattern = re.compile(_TMP_PATTERN.format(name=re.escape(path.name)))
    with _writing_lock:
        busy = set(_writing)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or entry.name in busy or not entry.is_file(follow_symlinks=False):
            continue
        pid = match.group("pid")
        if pid is not None and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass  # someone else removed it, or the folder is read-only: not this write's problem
    return removed


def _storage_errno(exc: Optional[BaseException]) -> Optional[int]:
    """The storage errno of `exc` or of the exceptions it was raised from or during, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _CAUSES:
            return exc.errno
        if any(words in str(exc).lower() for words in _FULL_WORDS):
            return errno.ENOSPC
        exc = exc.__cause__ or exc.__context__
    return None


def _is_nearly_full(folder: Path) -> bool:
    free = free_bytes(folder)
    return free is not None and free < NEARLY_FULL_BYTES


def _size(name: str) -> Optional[int]:
    try:
        return os.stat(name).st_size
    except OSError:
        return None


def _close_quietly(handle: IO) -> None:
    """Close after a failure: flushing the rest fails again on a full disk, and the first error is the one."""
    try:
        handle.close()
    except OSError:
        pass


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, exclusive file next to `path`, created with mode 0666 so that the umask applies."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        name = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        with _writing_lock:
            try:
                fd = os.open(path.parent / name, flags, 0o666)
            except FileExistsError:
                continue
            _writing.add(name)
        return fd, str(path.parent / name)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; folders that cannot be opened this way (some file systems) are skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True
