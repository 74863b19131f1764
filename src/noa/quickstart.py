"""`noa quickstart`: the whole pipeline at a size a laptop CPU finishes in minutes.

dataset (generate + features) → tokenizer → NOA training with all three losses, stopped
halfway and resumed with ``--resume auto`` → diagnosis. The layout mirrors the guide's paths
(``datasets/``, ``checkpoints/production/``, ``checkpoints/noa/``) under ``--out``, so each
printed command can be rerun by hand at a larger scale.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from noa.data.generate import GenerateConfig, generate
from noa.data.info import describe
from noa.errors import NoaError
from noa.outputs import check_writable

# The embedded default: small enough for a 2-core CPU, large enough to learn something.
DATA = dict(n_samples=256, grid=32, timesteps=16, seed=0, store_trajectories=True)
TOKENIZER = dict(epochs=100, batch_size=64, lr=3e-3, levels=4, codebook_size=16, latent_dim=8, hidden=128)
NOA = dict(
    n_samples=256, epochs=3, batch_size=4, lr=1e-3, bptt_window=8, timesteps=16, warmup_steps=20,
    base_channels=16, encoder_levels=2, modes=8, afno_blocks=2, projector_hidden=64,
    lambda_commit=0.5, enable_latent_loss=True, lambda_latent=0.5, latent_sample_steps=3, save_every=20, log_every=10,
)


def run_quickstart(out: str | Path, *, device: str = "cpu", seed: int = 0, overwrite: bool = False) -> dict[str, Path]:
    """Run every stage, logging to "noa.quickstart" (training to "noa.train"); returns the paths of what it made."""
    log = logging.getLogger("noa.quickstart").info
    from noa.diagnostics.report import check_report_dir, diagnose
    from noa.tokenizer.io import check_output_dir
    from noa.tokenizer.job import train_tokenizer_on_dataset
    from noa.train.loop import train

    root = Path(out)
    paths = {
        "dataset": root / "datasets" / "quickstart.h5",
        "tokenizer": root / "checkpoints" / "production" / "quickstart_vqvae",
        "checkpoints": root / "checkpoints" / "noa",
        "report": root / "checkpoints" / "noa" / "diagnostics",
    }
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise NoaError(f"{root} already holds a quickstart; pass --overwrite to redo it or choose another --out")
    # --overwrite goes to every stage, and each replaces only the files it writes (never, say,
    # notes kept beside them); every output is checked before the first stage starts.
    check_writable(root, "--out", directory=True)
    if overwrite:
        check_output_dir(paths["tokenizer"], overwrite=True)
        check_report_dir(paths["report"])
    started = time.perf_counter()

    def stage(title: str) -> None:
        log(f"\n{'=' * 60}\n{title}  [{time.perf_counter() - started:.0f}s]\n{'=' * 60}")

    stage("1/5  Dataset: Sobol θ, initial conditions, CNO replay, behavioural features")
    generate(GenerateConfig(**{**DATA, "seed": seed}), paths["dataset"], batch_size=32, device=device, overwrite=overwrite, progress=False, log=log)
    log(describe(paths["dataset"]))

    stage("2/5  Tokenizer: categorical hierarchical VQ-VAE on the dataset's features")
    every_20th_epoch = lambda line: None if re.match(r"epoch (\d+)/", line) and int(line.split()[1].split("/")[0]) % 20 else log(line)  # noqa: E731
    metrics = train_tokenizer_on_dataset(paths["dataset"], paths["tokenizer"], seed=seed, device=device, val_split=0.1, log=every_20th_epoch, progress=False, overwrite=overwrite, **TOKENIZER)
    codebooks = metrics["codebooks"]
    log(f"held-out recon MSE {metrics['recon_mse']['total']:.4f}; codebook utilization "
        f"{sum(c['utilization'] for c in codebooks) / len(codebooks):.1%} (mean over {len(codebooks)} codebooks)")

    args = {**NOA, "dataset": str(paths["dataset"]), "vqvae_path": str(paths["tokenizer"]),
            "checkpoint_dir": str(paths["checkpoints"]), "seed": seed, "device": device}
    batches_per_epoch = (NOA["n_samples"] - round(NOA["n_samples"] * 0.1)) // NOA["batch_size"]  # default --val-split
    stop_at = batches_per_epoch + batches_per_epoch // 2  # mid-epoch 2 of 3
    stage(f"3/5  NOA training (L_traj + λc·L_commit + λl·L_latent), stopping after {stop_at} batches")
    train({**args, "max_steps": stop_at, "overwrite": overwrite})

    stage("4/5  Resume with --resume auto: continues mid-epoch, exactly where it stopped")
    result = train({"resume": "auto", "checkpoint_dir": str(paths["checkpoints"]), "device": device})

    stage("5/5  Diagnosis on held-out samples")
    diagnose(paths["checkpoints"] / "best_model.pt", paths["tokenizer"], paths["dataset"], n_samples=32,
             device=device, seed=seed, out_dir=paths["report"], log=log)

    log(f"\nQuickstart finished in {time.perf_counter() - started:.0f}s (best val loss {result.best_val_loss:.4f}).")
    log(f"  dataset:      {paths['dataset']}")
    log(f"  tokenizer:    {paths['tokenizer']}")
    log(f"  checkpoints:  {paths['checkpoints']}  (step_N.pt, epoch_N.pt, best_model.pt, metrics.jsonl)")
    log(f"  report:       {paths['report'] / 'report.md'}  (plots and summary.json beside it)")
    return paths
