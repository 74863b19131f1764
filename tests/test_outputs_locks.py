"""The write lock of an output: its file is removed when the holder finishes, and a process
that opened the file just before it was removed never counts a lock on it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from noa import outputs
from noa.errors import NoaError


def test_the_lock_file_is_removed_when_the_command_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with outputs.exclusive(out, "x"):
        assert outputs.lock_path(out).read_text() == f"{os.getpid()}\n"
    assert not outputs.lock_path(out).exists()
    with pytest.raises(RuntimeError), outputs.exclusive(out, "x"):  # an error inside releases and removes it too
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_a_lock_on_a_removed_lock_file_does_not_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    path = outputs.lock_path(out)
    # A process opened the lock file, then its holder finished and removed it: the stale
    # descriptor can still be locked, but it is no longer the file at the path.
    with outputs.exclusive(out, "x"):
        stale = os.open(path, os.O_RDWR)
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not outputs._same_file(stale, path)
    # exclusive() that first opens the stale file starts over on the file at the path, so the
    # lock it holds excludes every later writer.
    real_open, calls = os.open, []

    def open_stale_first(name, flags, mode=0o777):
        calls.append(name)
        return os.dup(stale) if len(calls) == 1 else real_open(name, flags, mode)

    monkeypatch.setattr(outputs.os, "open", open_stale_first)
    with outputs.exclusive(out, "x"):
        monkeypatch.setattr(outputs.os, "open", real_open)
        assert len(calls) == 2 and path.exists()
        with pytest.raises(NoaError, match=rf"being written by another noa process \(pid {os.getpid()}\)"):
            with outputs.exclusive(out, "x"):
                pass
        assert path.exists()  # the refused attempt leaves the holder's file alone
    assert not path.exists()
    os.close(stale)
