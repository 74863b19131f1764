"""Writing outputs safely: one writer per output, checked before the long work, never a torn file.

Every command that writes (a dataset, features, a tokenizer directory, a checkpoint directory,
a report) goes through these helpers:

* :func:`exclusive` holds an OS lock (``flock``) on a small lock file beside the output for as
  long as the command writes it. A second command on the same output is refused at once; the
  kernel drops the lock when the holder exits, so a killed process never leaves it stuck. The
  holder removes the file when it finishes, still holding the lock; a process that opened the
  file just before and locks it just after finds the path gone or another file there, and
  starts over on the file at the path, so two writers never hold locks on different files.
  Only a killed process leaves its (empty, harmless) lock file behind.
* :func:`check_writable` says before any work whether a path can be created: no parent that is
  a file, no directory where a file is expected (or the reverse), a directory that accepts
  files (read-only mounts and permissions included, for root too), and enough free space for
  an estimate of what will be written.
* :func:`replace_dir` puts a directory written under a temporary name in place of the output,
  so a reader sees the old directory, none, or the new one whole.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from noa.errors import NoaError


def named(output: str | Path) -> Path:
    """``output`` with a last name to put a lock or a temporary copy beside: ``.``, ``..`` and
    the like are made absolute (``.`` is the current directory's name); the root has no name
    and is refused, since nothing can be written beside it."""
    path = Path(output)
    if path.name in ("", ".", ".."):
        path = Path(os.path.abspath(path))
    if not path.name:
        raise NoaError(
            f"{output} is the root of the file system, and noa writes its lock and temporary files beside an output; "
            f"choose a directory below it (e.g. {path / 'noa-out'})"
        )
    return path


_STALE = re.compile(r"^\..+\.tmp-(\d+)$")


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output``: a hidden file beside it (``.NAME.lock``)."""
    output = named(output)
    return output.with_name(f".{output.name}.lock")


@contextmanager
def exclusive(output: str | Path, what: str) -> Iterator[None]:
    """Hold the write lock of ``output`` (see the module docstring); NoaError if another process holds it."""
    output = Path(output)
    path = lock_path(output)
    nearest_directory(path.parent, f"the directory of {what} {output}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(path, output, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        # Removed while still locked: whoever locks this file from now on sees it is no longer
        # the one at the path (see _lock) and starts over.
        try:
            path.unlink()
        except OSError:
            pass  # already gone or not removable here: the file stays, empty of meaning once unlocked
        os.close(fd)  # closing the descriptor releases the lock


def _lock(path: Path, output: Path, what: str) -> int:
    """A descriptor of the lock file at ``path``, locked; NoaError if another process holds it.

    A holder removes the file on release, so the file this process opened may be gone (or
    replaced) by the time its lock is granted: the lock only counts when the descriptor is still
    the file at ``path``, otherwise it is dropped and taken again on the file now there.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise NoaError(
                f"cannot create the lock file {path} for {what} {output} ({err.strerror}); {_fix(err)}"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NoaError(
                f"{what} {output} is being written by another noa process (pid {holder}); wait for it to finish, "
                "stop it, or choose another output path"
            ) from err
        except OSError:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)  # a released holder removed this file: lock the one at the path now


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open descriptor ``fd`` is the file at ``path`` (False when the path is gone)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (at_path.st_dev, at_path.st_ino)


def nearest_directory(path: str | Path, what: str) -> Path:
    """The nearest existing ancestor of ``path`` (itself included); NoaError if it is a file."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise NoaError(f"{what} cannot be created: {candidate} is a file, not a directory; choose another path")
            return candidate
    return Path("/")


def check_writable(output: str | Path, what: str, *, directory: bool, needed_bytes: int = 0) -> None:
    """NoaError, before any work, if ``output`` (a file, or a directory when ``directory``) cannot be written."""
    output = Path(output)
    if output.exists():
        if directory and not output.is_dir():
            raise NoaError(
                f"{what} {output} exists and is a file, but a directory is written there; choose another path"
            )
        if not directory and output.is_dir():
            raise NoaError(f"{what} {output} is a directory; give a file path such as {output / 'dataset.h5'}")
    base = nearest_directory(output if directory else output.parent, f"{what} {output}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".noa-write-check-", dir=base)
    except OSError as err:
        raise NoaError(
            f"cannot write {what} {output}: {base} does not accept new files ({err.strerror}); {_fix(err)}"
        ) from err
    os.close(fd)
    os.unlink(probe)
    if needed_bytes > 0:
        free = shutil.disk_usage(base).free
        if free < needed_bytes:
            raise NoaError(
                f"{what} {output} needs about {human_bytes(needed_bytes)} but {base} has {human_bytes(free)} free; "
                "free some space or choose another path"
            )


def temporary_sibling(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``.NAME.tmp-PID`` beside it
    (the pid says which writer; one killed mid-write leaves it for :func:`remove_stale_temporaries`)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Remove the temporary files (``.NAME.tmp-PID``) killed writers left in ``directory``.
    Call it holding the directory's lock: no other process is writing there, so every such
    file of another pid is a torn leftover, never read as whole. Returns the names removed."""
    removed = []
    for path in directory.glob(".*.tmp-*"):
        match = _STALE.match(path.name)
        if match and match.group(1) != str(os.getpid()) and path.is_file():
            path.unlink()
            removed.append(path.name)
    return sorted(removed)


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` whole or not at all: ``write`` fills a fsynced temporary sibling, which is
    then renamed over ``path``, so a reader (or a crash) never sees half a file."""
    tmp = temporary_sibling(path)
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """:func:`write_atomic` of a text file."""
    return write_atomic(path, lambda fh: fh.write(text.encode()))


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished directory ``new`` (a sibling of ``target``) at ``target``.

    An existing ``target`` is moved aside first and removed only once ``new`` is in place, so
    an interruption leaves the old directory, none, or the new one, never a mix of both.
    """
    target, old = named(target), None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old)


def fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fix(err: OSError) -> str:
    if err.errno == errno.EROFS:
        return "the file system is read-only; choose a path on a writable one"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full; free some space"
    return "check the directory's permissions or choose another path"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(needed_bytes: int, what: str, hint: str) -> None:
    """NoaError, up front, when ``what`` needs more memory than this machine has available."""
    free = available_memory()
    if free is not None and needed_bytes > free:
        raise NoaError(
            f"{what} needs about {human_bytes(needed_bytes)} of memory but {human_bytes(free)} is available; {hint}"
        )


# ---- noa's own figures -----------------------------------------------------------------

PNG_MARK = "noa-output"  # the PNG text chunk every figure noa draws carries (its keyword)
UNMARKED_HINT = (
    " (noa marks every figure it writes; one from a noa version before the mark carries none: delete it "
    "yourself if it is noa's)"
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")


def png_metadata(what: str) -> dict[str, str]:
    """The PNG metadata of a figure noa writes: its mark (:data:`PNG_MARK`, naming ``what`` drew
    it), by which a later run tells its own figure from a user's PNG of the same name."""
    from noa import __version__

    return {PNG_MARK: f"{what} (noa {__version__})"}


def png_marked(path: Path) -> bool:
    """Whether ``path`` is a PNG carrying noa's mark. Only the chunks before the image data are
    read (where a text chunk written with the figure lies); any other file is not noa's."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                return False
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return False
                length, kind = int.from_bytes(head[:4], "big"), head[4:]
                if kind in (b"IDAT", b"IEND"):
                    return False
                data = fh.read(length)
                if kind in _PNG_TEXT_CHUNKS and data.partition(b"\0")[0] == PNG_MARK.encode():
                    return True
                fh.seek(4, os.SEEK_CUR)  # the chunk's CRC
    except OSError:
        return False
