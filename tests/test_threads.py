"""The command's CPU thread policy: sleeping waiters, the idle cores, and the user's word first."""

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
    assert threads.choose_threads(None) == (2, "idle cores of 8")  # 8 cores, about 6 busy
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert threads.choose_threads(None)[0] == 1  # never fewer than one


@pytest.mark.parametrize("env, message", [({"OMP_NUM_THREADS": "two"}, "OMP_NUM_THREADS='two' is not a whole number"), ({}, "--threads must be >= 1")])
def test_bad_thread_requests_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict, message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(NoaError, match=message):
        threads.choose_threads(None if env else 0)


def test_the_command_lets_waiting_threads_sleep_and_says_what_it_chose(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    probe = "import sys, os; from noa.cli import main; main(sys.argv[1:]); print('policy', os.environ.get('OMP_WAIT_POLICY'))"
    cmd = [sys.executable, "-c", probe, "data", "generate", "--out", str(tmp_path / "d.h5"), "--n-samples", "2", "--grid", "8",
           "--timesteps", "2", "--no-features", "--no-progress", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    assert "CPU threads: 1 (--threads; waiting threads passive)" in out and "policy PASSIVE" in out
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice stands
    out = subprocess.run([*cmd[:-2], "--overwrite"], capture_output=True, text=True, env=env, check=True).stdout
    assert "waiting threads active" in out and "idle cores of" in out
