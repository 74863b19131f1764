"""Named recipes: `noa train --preset NAME` and `noa vqvae train --preset NAME`.

A preset is a set of flag values with a name, so that "train the way the quickstart does" is one
flag instead of the fourteen its report lists. It fills in what the user leaves out and nothing
else: every flag given (or set in a ``--config`` file) overrides it, and a resumed or fine-tuned
run keeps what its checkpoint records over it. The run records the preset's name.

The quickstart trains with these same definitions (``noa quickstart`` is ``--preset
quickstart`` at its own data sizes), so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noa.errors import NoaError


@dataclass(frozen=True)
class Preset:
    """A named set of flag values (flag names with underscores, as a ``--config`` file's keys)."""

    name: str
    summary: str
    values: Mapping[str, Any]
    # With a number, the one-step phase takes all of the run's batches but its last ``rollout_batches``
    # (at least half of them go to it); computed when the run knows how many batches it has.
    rollout_batches: int | None = None

    def one_step_steps(self, total_batches: int) -> int | None:
        """The one-step phase this preset asks for in a run of ``total_batches`` (None: the default's)."""
        if self.rollout_batches is None:
            return None
        return max(total_batches // 2, total_batches - self.rollout_batches)


# The quickstart's CPU recipe (sized on a 2-core CPU: benchmarks/README.md measures each lever).
# Many operators, few states of each: the states of one rollout are much alike, so the one-step
# phase draws one state per operator and batch (one_step_states 1) and sees every operator once
# per epoch; it takes all but the last 4 batches, the rollouts under L_total the rest. A
# validation costs about a quarter of an epoch there, so every 6th epoch and the last validate;
# one loader process reads the next batch on the second core while the other trains.
TRAIN_PRESETS: dict[str, Preset] = {
    "quickstart": Preset(
        "quickstart",
        "the quickstart's CPU recipe: U-AFNO base 16, 2 levels, 8 modes, 2 blocks (0.26 M parameters), "
        "17 epochs of batch 16 at lr 2e-3, one-step phase on one state per operator for all but the last 4 "
        "batches, window 8, L_commit + L_latent (needs --vqvae-path), projector 64, --val-split 0.05, "
        "--val-every 6, one loader process",
        {
            "val_split": 0.05,
            "epochs": 17,
            "val_every": 6,
            "num_workers": 1,
            "batch_size": 16,
            "lr": 2e-3,
            "bptt_window": 8,
            "warmup_steps": 20,
            "one_step_states": 1,
            "base_channels": 16,
            "encoder_levels": 2,
            "modes": 8,
            "afno_blocks": 2,
            "projector_hidden": 64,
            "lambda_commit": 0.5,
            "enable_latent_loss": True,
            "lambda_latent": 0.5,
            "latent_sample_steps": 3,
            "save_every": 20,
            "log_every": 10,
        },
        rollout_batches=4,
    ),
    # The NOA training guide's recommended values (its "Training Configuration" tables); what
    # depends on the data (--n-samples, --timesteps, --vqvae-path) stays the user's, and the
    # warmup follows its default (the guide's 500, or a tenth of a shorter run).
    "guide": Preset(
        "guide",
        "the NOA training guide's configuration: U-AFNO base 32, 3 levels, 16 modes, 4 blocks (4.62 M parameters), "
        "10 epochs of batch 4 at lr 3e-4 (cosine), window 32, λ_commit 0.5, early stopping after 2 epochs "
        "without improvement, a step checkpoint every 200 batches",
        {
            "epochs": 10,
            "batch_size": 4,
            "lr": 3e-4,
            "bptt_window": 32,
            "lr_schedule": "cosine",
            "lambda_commit": 0.5,
            "lambda_latent": 0.5,
            "latent_sample_steps": 3,
            "save_every": 200,
            "early_stop_patience": 2,
            "base_channels": 32,
            "encoder_levels": 3,
            "modes": 16,
            "afno_blocks": 4,
        },
    ),
}

TOKENIZER_PRESETS: dict[str, Preset] = {
    "quickstart": Preset(
        "quickstart",
        "the quickstart's tokenizer: 4 levels of 16 codes, latent 8, hidden 128, 25 epochs of batch 64 at lr 3e-3",
        {
            "epochs": 25,
            "batch_size": 64,
            "lr": 3e-3,
            "levels": 4,
            "codebook_size": 16,
            "latent_dim": 8,
            "hidden": 128,
            "val_split": 0.1,
        },
    ),
    "guide": Preset(
        "guide",
        "the production tokenizer's sizes: 12 levels of 64 codes, latent 16, hidden 256, 100 epochs of batch 128 "
        "at lr 3e-3",
        {
            "epochs": 100,
            "batch_size": 128,
            "lr": 3e-3,
            "levels": 12,
            "codebook_size": 64,
            "latent_dim": 16,
            "hidden": 256,
            "val_split": 0.1,
        },
    ),
}


def train_preset(name: str) -> Preset:
    """The `noa train` preset ``name``; NoaError naming the known ones otherwise."""
    return _lookup(name, TRAIN_PRESETS, "noa train")


def tokenizer_preset(name: str) -> Preset:
    """The `noa vqvae train` preset ``name``; NoaError naming the known ones otherwise."""
    return _lookup(name, TOKENIZER_PRESETS, "noa vqvae train")


def _lookup(name: str, known: Mapping[str, Preset], command: str) -> Preset:
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    guess = f" (did you mean {close[0]}?)" if close else ""
    raise NoaError(
        f"unknown --preset {name!r}{guess}; {command} knows: {', '.join(known)} "
        f"(`{command} --help` says what each sets)"
    )


def help_text(known: Mapping[str, Preset], rules: str) -> str:
    """The --preset help: every preset with what it sets, then ``rules`` (what overrides it, where it is recorded)."""
    listed = "; ".join(f"{p.name}: {p.summary}" for p in known.values())
    return f"start from a named recipe ({listed}). {rules}"
