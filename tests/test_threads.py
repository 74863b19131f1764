"""The command's CPU thread policy: half the idle cores, and the user's word first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from noa import threads
from noa.errors import NoaError


def test_threads_come_from_the_flag_then_the_environment_then_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(5) == (5, "--threads")
    assert threads.choose_threads(None) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (5.6, 0.0, 0.0))
    assert threads.choose_threads(None) == (1, "half the idle cores of 8")  # 8 cores, about 6 busy
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert threads.choose_threads(None) == (4, "half the idle cores of 8")  # room for a neighbour
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert threads.choose_threads(None)[0] == 1  # never fewer than one


@pytest.mark.parametrize(
    "env, message",
    [({"OMP_NUM_THREADS": "two"}, "OMP_NUM_THREADS='two' is not a whole number"), ({}, "--threads must be >= 1")],
)
def test_bad_thread_requests_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict, message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(NoaError, match=message):
        threads.choose_threads(None if env else 0)


def test_the_command_says_what_it_chose(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [
        sys.executable,
        "-m",
        "noa",
        "data",
        "generate",
        "--out",
        str(tmp_path / "d.h5"),
        "--n-samples",
        "2",
        "--grid",
        "8",
        "--timesteps",
        "2",
        "--no-features",
        "--no-progress",
    ]
    out = subprocess.run([*cmd, "--threads", "1"], capture_output=True, text=True, env=env, check=True).stdout
    assert "CPU threads: 1 (--threads)" in out
    out = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True, env=env, check=True).stdout
    assert "(half the idle cores of" in out
