"""`noa quickstart`: the whole pipeline at a size a laptop CPU finishes in minutes.

dataset (generate + features) → tokenizer → NOA training with all three losses, stopped
halfway and resumed with ``--resume auto`` → diagnosis. The layout mirrors the guide's paths
(``datasets/``, ``checkpoints/production/``, ``checkpoints/noa/``) under ``--out``, so each
printed command can be rerun by hand at a larger scale.

Running it again continues an interrupted quickstart: each finished stage is recognised by its
outputs and skipped (the dataset file, the tokenizer directory, the training checkpoints, the
report), an interrupted generation or training resumes, and ``--overwrite`` starts over: it
first removes what an earlier quickstart wrote, so an interrupted ``--overwrite`` is an
interrupted new quickstart, which the command without ``--overwrite`` continues.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from noa.data.generate import GenerateConfig, generate
from noa.data.info import describe
from noa.errors import NoaError
from noa.families import load_family
from noa.interruption import Interruption
from noa.outputs import check_writable
from noa.presets import train_preset

# The embedded default: small enough for a 2-core CPU, large enough to learn something.
# Its operators come from the shipped `starter` family (`noa family show starter`), sized so
# that these minutes learn it; the full family needs far more updates (benchmarks/README.md).
FAMILY = "starter"
DATA: dict[str, Any] = dict(n_samples=1024, grid=32, timesteps=16, seed=0, store_trajectories=True)
# The tokenizer and the NOA train with the presets named "quickstart" (noa.presets: the one
# definition `--preset quickstart` uses too); what is the quickstart's own is the data they
# read: NOA below holds it, and any other flag there overrides the preset's, as a flag would.
PRESET = "quickstart"
TOKENIZER: dict[str, Any] = {}  # flags over the tokenizer preset's (none: it trains the preset as it is)
NOA: dict[str, Any] = dict(n_samples=960, timesteps=16)


def noa_settings() -> dict[str, Any]:
    """The NOA's training settings: the preset's values under the quickstart's own."""
    return {**train_preset(PRESET).values, **NOA}


# Marks a directory as a quickstart's (and with which seed), so a rerun continues only its own.
MARKER = ".noa-quickstart.json"


class QuickstartInterrupted(NoaError):
    """Ctrl-C or SIGTERM during a stage: what is done is kept; the message says to run it again
    (exit status 130 or 143)."""

    def __init__(self, stage: str, exit_code: int = 130, overwrite: bool = False):
        again = "run the same command without --overwrite" if overwrite else "run the same command again"
        super().__init__(
            f"quickstart interrupted during stage {stage}; finished stages are kept and an interrupted "
            f"one resumes: {again} to continue where it stopped (--overwrite starts over)"
        )
        self.exit_code = exit_code


def quickstart_paths(root: Path) -> dict[str, Path]:
    """Where each stage writes, under ``root`` (the guide's layout)."""
    return {
        "dataset": root / "datasets" / "quickstart.h5",
        "tokenizer": root / "checkpoints" / "production" / "quickstart_vqvae",
        "checkpoints": root / "checkpoints" / "noa",
        "report": root / "checkpoints" / "noa" / "diagnostics",
    }


def _claim(root: Path, seed: int, overwrite: bool) -> None:
    """Refuse a directory that holds something else (whatever the flags: ``checkpoints/noa`` is
    also ``noa train``'s default, so a project folder may hold the user's own run), a finished
    quickstart, or another seed's; then mark it as this quickstart's."""
    marker = root / MARKER
    check_writable(root, "--out", directory=True)
    occupied = root.exists() and any(root.iterdir())
    if occupied and not marker.is_file():  # --overwrite too: it may only ever replace a quickstart's own outputs
        raise NoaError(
            f"{root} holds files that are not a quickstart's (it has no {MARKER}); nothing there was changed: "
            "choose a new or empty --out"
        )
    if occupied and not overwrite:
        if _marked_seed(marker) not in (None, seed):
            raise NoaError(
                f"{root} holds a quickstart with another --seed; rerun with its seed ({_marked_seed(marker)}) or pass --overwrite"
            )
        if (quickstart_paths(root)["report"] / "report.md").is_file():
            raise NoaError(
                f"{root} already holds a quickstart that ran to its end (its report.md); pass --overwrite to redo it or choose another --out"
            )
    root.mkdir(parents=True, exist_ok=True)
    if not marker.is_file() or _marked_seed(marker) != seed:  # a rerun leaves it as it is: no kill can cut it short
        marker.write_text(json.dumps({"seed": seed}))


def _marked_seed(marker: Path) -> Any:
    """The seed a quickstart's marker records; None when it is not JSON: a kill cut its writing
    short (between the file's creation and its one write), so it is written again."""
    try:
        return json.loads(marker.read_text()).get("seed")
    except json.JSONDecodeError:
        return None


def _tokenizer_done(path: Path) -> dict[str, Any] | None:
    """The held-out metrics of a complete tokenizer directory (written whole), or None."""
    metrics = path / "metrics.json"
    return json.loads(metrics.read_text()) if (path / "weights.pt").is_file() and metrics.is_file() else None


def _training_finished(checkpoints: Path) -> Path | None:
    """The last epoch's checkpoint when training has run to its end, else None."""
    last = checkpoints / f"epoch_{noa_settings()['epochs']}.pt"
    return last if last.is_file() else None


def run_quickstart(out: str | Path, *, device: str = "cpu", seed: int = 0, overwrite: bool = False) -> dict[str, Path]:
    """Run every stage not done yet, logging to "noa.quickstart" (training to "noa.train");
    returns the paths of what it made. An interrupt raises :class:`QuickstartInterrupted`."""
    log = logging.getLogger("noa.quickstart").info
    from noa.diagnostics.report import check_report_dir
    from noa.tokenizer.io import check_output_dir

    root = Path(out)
    paths = quickstart_paths(root)
    _claim(root, seed, overwrite)
    # --overwrite removes only the files the stages write (never, say, notes kept beside them);
    # every output is checked before anything is removed.
    if overwrite:
        check_output_dir(paths["tokenizer"], overwrite=True)
        check_report_dir(paths["report"])
        _remove_earlier_results(paths)
    started = time.perf_counter()
    current = ["1/5"]

    def stage(title: str) -> None:
        current[0] = title.split()[0]
        log(f"\n{'=' * 60}\n{title}  [{time.perf_counter() - started:.0f}s]\n{'=' * 60}")

    # SIGTERM as Ctrl-C in every stage (generation and training install their own handlers
    # while they run): the stage stops with the message, never by the default silent exit.
    with Interruption().installed() as interruption:
        try:
            best = _stages(paths, device, seed, stage, log)
        except KeyboardInterrupt:
            raise QuickstartInterrupted(current[0], 128 + interruption.signum, overwrite) from None
        except NoaError as err:
            exit_code = getattr(err, "exit_code", 2)
            if exit_code < 128:  # a refusal, not an interrupted stage
                raise
            raise QuickstartInterrupted(current[0], exit_code, overwrite) from err
    log(f"\nQuickstart finished in {time.perf_counter() - started:.0f}s (best val loss {best:.4f}).")
    log(f"  dataset:      {paths['dataset']}")
    log(f"  tokenizer:    {paths['tokenizer']}")
    log(f"  checkpoints:  {paths['checkpoints']}  (step_N.pt, epoch_N.pt, best_model.pt, metrics.jsonl)")
    log(f"  report:       {paths['report'] / 'report.md'}  (plots and summary.json beside it)")
    return paths


def _remove_earlier_results(paths: dict[str, Path]) -> None:
    """What an earlier quickstart wrote, the report first: an interrupted start-over never
    leaves an old report beside missing checkpoints, nor looks finished."""
    from noa.diagnostics.report import REPORT_FILES
    from noa.tokenizer.directory import TOKENIZER_FILES
    from noa.train.checkpoint import run_checkpoints

    dataset = paths["dataset"]
    doomed = [paths["report"] / name for name in REPORT_FILES]
    doomed += run_checkpoints(paths["checkpoints"])
    doomed += [paths["checkpoints"] / name for name in ("latest.json", "metrics.jsonl")]
    doomed += [paths["tokenizer"] / name for name in TOKENIZER_FILES]
    doomed += [dataset.with_name(dataset.name + tail) for tail in (".partial", ".partial.new", "")]
    for path in doomed:
        path.unlink(missing_ok=True)


def _stages(
    paths: dict[str, Path], device: str, seed: int, stage: Callable[[str], None], log: Callable[[str], None]
) -> float:
    """The five stages, each skipped when its outputs show it done; returns the best val loss."""
    from noa.diagnostics.report import diagnose
    from noa.run_siblings import checkpoints_in
    from noa.tokenizer.job import train_tokenizer_on_dataset
    from noa.train.checkpoint import load_checkpoint
    from noa.train.loop import train

    stage(f"1/5  Dataset: Sobol θ of the {FAMILY!r} family, initial conditions, CNO replay, behavioural features")
    generate(
        GenerateConfig(**{**DATA, "seed": seed, "family": load_family(FAMILY).as_dict()}),
        paths["dataset"],
        batch_size=32,
        device=device,
        resume=True,
        progress=False,
        log=log,
    )
    log(describe(paths["dataset"]))

    stage(f"2/5  Tokenizer (--preset {PRESET}): categorical hierarchical VQ-VAE on the dataset's features")
    metrics = _tokenizer_done(paths["tokenizer"])
    if metrics is None:

        def every_20th_epoch(line: str) -> None:
            if not (re.match(r"epoch (\d+)/", line) and int(line.split()[1].split("/")[0]) % 20):
                log(line)

        metrics = train_tokenizer_on_dataset(
            paths["dataset"],
            paths["tokenizer"],
            seed=seed,
            device=device,
            log=every_20th_epoch,
            progress=False,
            preset=PRESET,
            **TOKENIZER,
        )
    else:
        log(f"{paths['tokenizer']} is complete; kept")
    codebooks = metrics["codebooks"]
    log(
        f"held-out recon MSE {metrics['recon_mse']['total']:.4f}; codebook utilization "
        f"{sum(c['utilization'] for c in codebooks) / len(codebooks):.1%} (mean over {len(codebooks)} codebooks)"
    )

    args = {
        "preset": PRESET,
        **NOA,
        "dataset": str(paths["dataset"]),
        "vqvae_path": str(paths["tokenizer"]),
        "checkpoint_dir": str(paths["checkpoints"]),
        "seed": seed,
        "device": device,
    }
    settings = noa_settings()
    batches_per_epoch = (settings["n_samples"] - round(settings["n_samples"] * settings["val_split"])) // settings[
        "batch_size"
    ]
    stop_at = batches_per_epoch + batches_per_epoch // 2  # mid-epoch 2
    stage(
        f"3/5  NOA training (--preset {PRESET}: a one-step phase, then L_traj + λc·L_commit + λl·L_latent), "
        f"stopping after {stop_at} batches"
    )
    if not checkpoints_in(paths["checkpoints"]):  # "overwrite": a first batch cut short may have left metrics.jsonl
        train({**args, "max_steps": stop_at, "overwrite": True})
    else:
        log(f"{paths['checkpoints']} holds this quickstart's checkpoints; the next stage continues from the newest")

    stage("4/5  Resume with --resume auto: continues mid-epoch, exactly where it stopped")
    finished = _training_finished(paths["checkpoints"])
    if finished is None:
        best = train({"resume": "auto", "checkpoint_dir": str(paths["checkpoints"]), "device": device}).best_val_loss
    else:
        log(f"training already ran to its end ({finished.name}); kept")
        best = float(load_checkpoint(finished)["best_val_loss"])

    stage("5/5  Diagnosis on held-out samples")
    diagnose(
        paths["checkpoints"] / "best_model.pt",
        paths["tokenizer"],
        paths["dataset"],
        n_samples=32,
        device=device,
        seed=seed,
        out_dir=paths["report"],
        log=log,
    )
    return best
