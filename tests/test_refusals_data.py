"""`noa data generate` / `noa data features` refuse bad input and faults clearly, check before
the long work, and never lose or overwrite a file noa did not write (issue 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from noa import outputs
from noa.cli import main
from noa.data import generate as generate_module
from noa.data.generate import GenerateConfig, add_features, generate
from noa.errors import NoaError

SMALL = ["--n-samples", "6", "--grid", "16", "--timesteps", "3", "--no-progress", "--no-features"]


def _cfg(**kw) -> GenerateConfig:
    return GenerateConfig(**{"n_samples": 6, "grid": 16, "timesteps": 3, "seed": 1, "features": False, **kw})


def _quiet(*_: object) -> None:
    pass


def _one_line_error(capsys: pytest.CaptureFixture, message: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert err.count("\n") == 1, err
    return err


def _hold_lock(output: Path) -> subprocess.Popen:
    """Another process holding the write lock of ``output`` (as a running noa command would)."""
    code = "import sys, time; from noa import outputs\nwith outputs.exclusive(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(output)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


# ---- --overwrite removes only what noa wrote ---------------------------------------------


def test_overwrite_refuses_to_replace_a_file_that_is_not_a_noa_dataset(tmp_path: Path, capsys) -> None:
    out = tmp_path / "notes.h5"
    out.write_text("my notes")
    assert main(["data", "generate", "--out", str(out), *SMALL, "--overwrite"]) == 2
    _one_line_error(capsys, "is not one")
    assert out.read_text() == "my notes"


def test_overwrite_replaces_a_noa_dataset(tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    generate(_cfg(), out, progress=False, log=_quiet)
    generate(_cfg(seed=2), out, overwrite=True, progress=False, log=_quiet)
    with h5py.File(out) as f:
        assert '"seed": 2' in f.attrs["config"]


# ---- one writer per output ---------------------------------------------------------------


def test_a_second_generation_of_one_file_is_refused_and_a_killed_one_leaves_no_stale_lock(tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    partial = tmp_path / "d.h5.partial"
    generate_module._create(partial, _cfg(), None, chunk=8)
    before = partial.read_bytes()
    holder = _hold_lock(out)  # a running generation
    try:
        with pytest.raises(NoaError, match="being written by another noa process"):
            generate(_cfg(), out, overwrite=True, progress=False, log=_quiet)
        assert partial.read_bytes() == before  # the running one's partial file is untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    generate(_cfg(), out, resume=True, progress=False, log=_quiet)  # the kernel released the lock
    assert out.exists()


# ---- outputs that cannot be written, checked first ---------------------------------------


@pytest.mark.parametrize(
    "layout, message",
    [
        ("parent-is-file", "is a file, not a directory"),
        ("out-is-dir", "is a directory"),
    ],
)
def test_unwritable_outputs_are_refused_before_any_work(
    layout: str, message: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    if layout == "parent-is-file":
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "d.h5"
    else:
        out = tmp_path / "d.h5"
        out.mkdir()
    monkeypatch.setattr(generate_module, "_create", lambda *a, **k: pytest.fail("work started"))
    assert main(["data", "generate", "--out", str(out), *SMALL]) == 2
    _one_line_error(capsys, message)


def test_a_dataset_larger_than_the_disk_or_memory_is_refused_up_front(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(generate_module, "_create", lambda *a, **k: pytest.fail("work started"))
    huge = [
        "--n-samples",
        "100000000",
        "--grid",
        "512",
        "--timesteps",
        "100000",
        "--store-trajectories",
        "--no-features",
    ]
    assert main(["data", "generate", "--out", str(tmp_path / "d.h5"), *huge]) == 2
    _one_line_error(capsys, "free some space")
    monkeypatch.setattr(outputs, "available_memory", lambda: 10**9)
    big_batch = ["--n-samples", "8", "--grid", "512", "--timesteps", "2000", "--batch-size", "8", "--no-features"]
    assert main(["data", "generate", "--out", str(tmp_path / "e.h5"), *big_batch]) == 2
    _one_line_error(capsys, "lower --batch-size")


# ---- resume of a complete file -----------------------------------------------------------


def test_resume_of_a_complete_dataset_with_other_sizes_says_they_differ(tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    generate(_cfg(), out, progress=False, log=_quiet)
    with pytest.raises(NoaError, match="n_samples: file has 6, you asked 8"):
        generate(_cfg(n_samples=8), out, resume=True, progress=False, log=_quiet)
    said: list[str] = []
    generate(_cfg(), out, resume=True, progress=False, log=said.append)
    assert said == [f"{out} is already complete; nothing to resume"]


# ---- corrupt inputs and values ------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    out = tmp_path / "d.h5"
    generate(_cfg(features=True), out, progress=False, log=_quiet)
    return out


def test_features_refuse_a_dataset_another_process_writes(dataset: Path) -> None:
    holder = _hold_lock(dataset)
    try:
        with pytest.raises(NoaError, match="being written by another noa process"):
            add_features(dataset, overwrite=True, progress=False, log=_quiet)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with h5py.File(dataset) as f:
        assert f["features/done"][:].all()


def test_a_wrong_dtype_is_refused_by_name(dataset: Path, capsys) -> None:
    with h5py.File(dataset, "r+") as f:
        params = f["parameters/params"][:]
        del f["parameters/params"]
        f["parameters/params"] = params.astype("S8")
    assert main(["data", "info", str(dataset)]) == 2
    _one_line_error(capsys, "/parameters/params has dtype |S8, expected floating point")


def test_theta_outside_the_unit_cube_is_refused(dataset: Path, tmp_path: Path) -> None:
    from noa.data.loader import usable_rows

    with h5py.File(dataset, "r+") as f:
        f["parameters/params"][2, 4] = 1.5
    with pytest.raises(NoaError, match=r"θ of sample 2 is 1.5 in dimension noise_scale, outside \[0, 1\]"):
        usable_rows(dataset, None)
    with pytest.raises(NoaError, match="outside"):
        add_features(dataset, overwrite=True, progress=False, log=_quiet)


# ---- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_generation_says_how_to_resume(signum: int, tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    argv = [
        "--n-samples",
        "400",
        "--grid",
        "32",
        "--timesteps",
        "64",
        "--batch-size",
        "1",
        "--no-progress",
        "--no-features",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # As from a terminal: a test run started in the background (`cmd &` in a script) ignores SIGINT,
    # and a child would inherit that, as Unix intends; the child gets Ctrl-C's default back.
    proc = subprocess.Popen(
        [sys.executable, "-m", "noa", "data", "generate", "--out", str(out), *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = tmp_path / "d.h5.partial"
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and err.count("\n") == 1 and "--resume" in err, err
    assert partial.exists() and not out.exists()
    with h5py.File(partial) as f:  # closed whole: HDF5 opens it and the done flags are readable
        assert 0 <= int(f["metadata/replayed"][:].sum()) < 400


# ---- read-only and full file systems (root and a small tmpfs) ------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "mnt"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_read_only_file_system_is_refused_before_any_work(small_tmpfs: Path, monkeypatch, capsys) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    monkeypatch.setattr(generate_module, "_create", lambda *a, **k: pytest.fail("work started"))
    assert main(["data", "generate", "--out", str(small_tmpfs / "d.h5"), *SMALL]) == 2
    _one_line_error(capsys, "read-only")


def test_a_full_disk_is_refused_before_any_work(small_tmpfs: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(generate_module, "_create", lambda *a, **k: pytest.fail("work started"))
    argv = [
        "--n-samples",
        "64",
        "--grid",
        "32",
        "--timesteps",
        "8",
        "--store-trajectories",
        "--no-progress",
        "--no-features",
    ]
    assert main(["data", "generate", "--out", str(small_tmpfs / "d.h5"), *argv]) == 2
    _one_line_error(capsys, "free some space")


def test_a_disk_that_fills_anyway_is_one_line_not_a_traceback(tmp_path: Path, monkeypatch, capsys) -> None:
    # (Filling a real tmpfs under HDF5 mid-write can crash h5py itself, so the fault is injected.)
    h5py_text = (
        "Driver write request failed (file write failed: time = now\n, filename = '/data/d.h5.partial', "
        "errno = 28, error message = 'No space left on device', buf = 0x1)"
    )
    monkeypatch.setattr(generate_module, "_replay_pending", lambda *a, **k: (_ for _ in ()).throw(OSError(h5py_text)))
    status = main(["data", "generate", "--out", str(tmp_path / "d.h5"), *SMALL])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: No space left on device while writing /data/d.h5.partial; free disk space"), err
