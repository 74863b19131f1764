"""Every command block of the seed user guide runs as printed, at tiny scale.

The blocks below are copied from the guide (noa-training-guide.md) verbatim; only sizes are
substituted (``SCALE``) so the whole guide runs in a few minutes on a CPU, and ``poetry run
python`` becomes this interpreter (see ``_tiny``). Each block must exit 0 and print the kinds of lines
the guide shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

BASIC = """poetry run python scripts/dev/train_noa_state_supervised.py \\
    --dataset datasets/100k_full_features.h5 \\
    --n-samples 5000 \\
    --epochs 10 \\
    --batch-size 4 \\
    --lr 3e-4 \\
    --bptt-window 32 \\
    --timesteps 256"""

WITH_VQVAE = """poetry run python scripts/dev/train_noa_state_supervised.py \\
    --dataset datasets/100k_full_features.h5 \\
    --vqvae-path checkpoints/production/100k_3family_v1 \\
    --n-samples 5000 \\
    --epochs 10 \\
    --batch-size 4 \\
    --lr 3e-4 \\
    --bptt-window 32 \\
    --timesteps 256 \\
    --lambda-commit 0.5"""

FULL = """poetry run python scripts/dev/train_noa_state_supervised.py \\
    --dataset datasets/100k_full_features.h5 \\
    --vqvae-path checkpoints/production/100k_3family_v1 \\
    --n-samples 5000 \\
    --epochs 10 \\
    --batch-size 4 \\
    --lr 3e-4 \\
    --bptt-window 32 \\
    --warmup-steps 500 \\
    --timesteps 256 \\
    --lambda-commit 0.5 \\
    --enable-latent-loss \\
    --lambda-latent 0.5 \\
    --latent-sample-steps 8 \\
    --save-every 200"""

RESUME_EPOCH = """# Resume from last saved checkpoint
poetry run python scripts/dev/train_noa_state_supervised.py \\
    --resume checkpoints/noa/epoch_5.pt \\
    --dataset datasets/100k_full_features.h5 \\
    --vqvae-path checkpoints/production/100k_3family_v1 \\
    --epochs 10 \\
    --batch-size 4 \\
    --enable-latent-loss \\
    --lambda-latent 0.5"""

RESUME_STEP = """# Resume from step checkpoint (e.g., batch 200 of epoch 1)
poetry run python scripts/dev/train_noa_state_supervised.py \\
    --resume checkpoints/noa/step_200.pt \\
    --dataset datasets/100k_full_features.h5 \\
    --vqvae-path checkpoints/production/100k_3family_v1 \\
    --epochs 5 \\
    --batch-size 4 \\
    --enable-latent-loss"""

DIAGNOSE = """poetry run python scripts/dev/diagnose_latent_alignment.py \\
    --noa-checkpoint checkpoints/noa/best_model.pt \\
    --vqvae-path checkpoints/production/100k_3family_v1 \\
    --dataset datasets/100k_full_features.h5 \\
    --n-samples 100 \\
    --timesteps 256"""

CUSTOM_VQVAE = """# System automatically infers VQ latent dimension
poetry run python scripts/dev/train_noa_state_supervised.py \\
    --vqvae-path checkpoints/my_custom_vqvae \\
    --enable-latent-loss"""

TRANSFER = """# Train on general dataset
poetry run python scripts/dev/train_noa_state_supervised.py \\
    --dataset datasets/100k_full_features.h5 \\
    --epochs 20 \\
    --checkpoint-dir checkpoints/noa_pretrained

# Fine-tune on domain-specific data
poetry run python scripts/dev/train_noa_state_supervised.py \\
    --resume checkpoints/noa_pretrained/best_model.pt \\
    --dataset datasets/domain_specific.h5 \\
    --epochs 5 \\
    --lr 1e-4  # Lower LR for fine-tuning"""

# Guide sizes -> tiny sizes. Flags the guide leaves at their defaults at full scale
# (--timesteps 256, model widths) reach the tiny scale through a config file's defaults.
SCALE = [
    (r"--n-samples 5000", "--n-samples 16"),
    (r"--n-samples 100\b", "--n-samples 4"),
    (r"--epochs (10|20)\b", "--epochs 2"),
    (r"--epochs 5\b", "--epochs 2"),
    (r"--bptt-window 32", "--bptt-window 4"),
    (r"--timesteps 256", "--timesteps 8"),
    (r"--warmup-steps 500", "--warmup-steps 2"),
    (r"--save-every 200", "--save-every 2"),
    (r"epoch_5\.pt", "epoch_1.pt"),
    (r"step_200\.pt", "step_2.pt"),
]
TINY_DEFAULTS = [
    "--timesteps",
    "8",
    "--bptt-window",
    "4",
    "--n-samples",
    "16",
    "--epochs",
    "2",
    "--base-channels",
    "8",
    "--encoder-levels",
    "2",
    "--modes",
    "4",
    "--afno-blocks",
    "1",
    "--projector-hidden",
    "16",
    "--device",
    "cpu",
]


def _tiny(block: str, defaults: list[str] = TINY_DEFAULTS) -> str:
    for pattern, repl in SCALE:
        block = re.sub(pattern, repl, block)
    # `poetry run python` is the guide's way to reach the project's environment; the test runs in a
    # temporary directory (no pyproject.toml for poetry to find) with this interpreter, which has
    # noa importable, so the prefix is always replaced by it. The README says how `poetry install`
    # provides the same environment.
    block = block.replace("poetry run python", f"{sys.executable}")
    # Model widths and T are guide defaults that the tiny run shrinks on every train call.
    extra = " ".join(defaults)
    block = re.sub(r"(train_noa_state_supervised\.py) \\\n", rf"\1 {extra} \\\n", block)
    return block


def _bash(block: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    script = "set -e\n" + block.replace(" scripts/dev/", f" {REPO}/scripts/dev/")
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _noa(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "noa.cli", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guide's paths, made by the toolkit's own commands."""
    root = tmp_path_factory.mktemp("guide")
    _noa(
        "data",
        "generate",
        "--out",
        "datasets/100k_full_features.h5",
        "--n-samples",
        "24",
        "--grid",
        "16",
        "--timesteps",
        "8",
        "--store-trajectories",
        "--no-progress",
        cwd=root,
    )
    _noa(
        "data",
        "generate",
        "--out",
        "datasets/domain_specific.h5",
        "--n-samples",
        "16",
        "--grid",
        "16",
        "--timesteps",
        "8",
        "--seed",
        "5",
        "--store-trajectories",
        "--no-progress",
        cwd=root,
    )
    for name, latent in (("production/100k_3family_v1", "4"), ("my_custom_vqvae", "6")):
        _noa(
            "vqvae",
            "train",
            "--dataset",
            "datasets/100k_full_features.h5",
            "--out",
            f"checkpoints/{name}",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--codebook-size",
            "8",
            "--levels",
            "2",
            "--latent-dim",
            latent,
            "--hidden",
            "32",
            "--no-progress",
            cwd=root,
        )
    return root


def _new_run(workspace: Path) -> None:
    """The Quick Start blocks are alternatives: a user starting another run into the default
    --checkpoint-dir clears it first (noa refuses to mix two runs' checkpoints)."""
    shutil.rmtree(workspace / "checkpoints" / "noa", ignore_errors=True)


def _run(block: str, cwd: Path, defaults: list[str] = TINY_DEFAULTS) -> str:
    done = _bash(_tiny(block, defaults), cwd)
    assert done.returncode == 0, (
        f"guide block failed:\n{_tiny(block, defaults)}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
    return done.stdout


def test_quick_start_blocks(workspace: Path) -> None:
    out = _run(BASIC, workspace)
    assert "Epoch 1/2" in out and "Train: total=" in out and "Val:   total=" in out and " commit=" not in out
    _new_run(workspace)
    out = _run(WITH_VQVAE, workspace)
    assert " commit=" in out and " latent=" not in out
    _new_run(workspace)
    out = _run(FULL, workspace)
    assert re.search(r"\[\d+/\d+\] loss=\S+ traj=\S+ commit=\S+ latent=\S+ lr=\S+ \S+s/b", out)
    assert (workspace / "checkpoints/noa/step_2.pt").exists() and (workspace / "checkpoints/noa/best_model.pt").exists()


def test_resume_blocks(workspace: Path) -> None:
    out = _run(RESUME_STEP, workspace)
    assert "Resuming from checkpoint: checkpoints/noa/step_2.pt" in out
    assert "(Will skip first 2 batches of epoch 1)" in out and "Skipping first 2 batches (already processed)..." in out
    assert "✓ Loaded latent projector weights" in out
    out = _run(RESUME_EPOCH, workspace)
    assert "Resuming from checkpoint: checkpoints/noa/epoch_1.pt" in out and "Epoch 2/2" in out


def test_diagnostics_block(workspace: Path) -> None:
    out = _run(DIAGNOSE, workspace)
    for section in (
        "1. VQ Reconstruction Quality",
        "2. Token Diversity",
        "3. Alignment Correlation",
        "4. Temporal Consistency",
        "Overall Summary",
        "➜ Final Verdict:",
    ):
        assert section in out


def test_custom_vqvae_block_infers_the_latent_dimension(workspace: Path) -> None:
    _new_run(workspace)
    out = _run(CUSTOM_VQVAE, workspace)
    assert " latent=" in out
    import torch

    ckpt = torch.load(workspace / "checkpoints/noa/best_model.pt", weights_only=True)
    assert ckpt["alignment_state"]["latent_dim"] == 6 * 2 * 3  # latent 6 x 2 levels x 3 categories


def test_transfer_learning_block(workspace: Path) -> None:
    _new_run(workspace)
    out = _run(TRANSFER, workspace)
    assert "fine-tuning (weights only)" in out and "Fresh optimizer" in out


# The guide's blocks in the order it prints them. At the guide's scale Basic Training writes
# step_200.pt (--save-every defaults to 200 of 1125 batches per epoch), which the resume blocks
# name; at the tiny scale --save-every 2 does the same.
GUIDE_ORDER = [BASIC, WITH_VQVAE, FULL, RESUME_EPOCH, RESUME_STEP, DIAGNOSE, CUSTOM_VQVAE, TRANSFER]


def _hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (lock files aside, which are rewritten by design) -> its hash."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def test_every_guide_block_in_order_in_one_directory(tmp_path_factory: pytest.TempPathFactory, workspace: Path) -> None:
    """A researcher pastes every block into one shell: each runs, and no block loses or
    overwrites a file an earlier one wrote (later runs go to fresh sibling directories)."""
    root = tmp_path_factory.mktemp("guide-in-order")
    for name in ("datasets", "checkpoints"):
        shutil.copytree(workspace / name, root / name, ignore=shutil.ignore_patterns("noa", "noa-*", "noa_pretrained*"))
    defaults = [*TINY_DEFAULTS, "--save-every", "2"]
    outputs = []
    for block in GUIDE_ORDER:
        before = _hashes(root)
        outputs.append(_run(block, root, defaults))
        after = _hashes(root)
        changed = [name for name, digest in before.items() if after.get(name) != digest]
        assert not changed, f"block changed or removed earlier files {changed}:\n{block}"
    text = "\n".join(outputs)
    assert "this run writes to checkpoints/noa-2" in text and "this run writes to checkpoints/noa-3" in text
    assert "this resume branches into checkpoints/noa-4" in text
    assert "this fine-tune writes to checkpoints/noa-" in text
    for run in ("noa", "noa-2", "noa-3", "noa-4", "noa-5", "noa-6", "noa-7", "noa_pretrained"):
        assert (root / "checkpoints" / run / "epoch_2.pt").exists(), run
    # In the guide's order the diagnosis reads Basic Training's physics-only checkpoints/noa/best_model.pt.
    assert "➜ Final Verdict:" in outputs[GUIDE_ORDER.index(DIAGNOSE)]
