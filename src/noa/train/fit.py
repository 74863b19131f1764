"""Do the dataset, the tokenizer and the settings fit each other? Every mismatch in one refusal,
each value named with where it came from (a flag, the config file, the checkpoint, the
tokenizer), so a user who never typed ``--timesteps`` is not told to lower it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noa.data import h5
from noa.errors import NoaError
from noa.tokenizer.frozen import FrozenTokenizer
from noa.tokenizer.io import compatibility_problems
from noa.train.config import TrainConfig, flag_name


def origin(key: str, cli: dict[str, Any], file_values: dict[str, Any], resumed_from: Path | None) -> str | None:
    """Where a setting's value came from: the flag, the config file or the resumed checkpoint
    (None: a default, perhaps one that followed the data)."""
    if cli.get(key) is not None:
        return flag_name(key)
    if key in file_values:
        return f"{key} in --config {cli['config']}"
    if resumed_from is not None:
        return f"{flag_name(key)} of {resumed_from.name}, resumed"
    return None


def check_fit(
    cfg: TrainConfig,
    info: h5.DatasetInfo,
    t_origin: str | None,
    tokenizer_origin: str | None,
    tokenizer: FrozenTokenizer | None,
) -> None:
    """Refuse, listing every mismatch, a run whose T, tokenizer or model does not fit the dataset."""
    ds = f"dataset {cfg.dataset}"
    tk = f"tokenizer {cfg.vqvae_path}" + (f" ({tokenizer_origin})" if tokenizer_origin else "")
    if t_origin is not None:
        t_said = f"{t_origin} gives T={cfg.timesteps}"
    elif tokenizer is not None:
        t_said = f"T={cfg.timesteps} is {tk}'s (no --timesteps given: T follows the tokenizer)"
    else:
        t_said = f"T={cfg.timesteps}"
    problems = []
    if cfg.timesteps > info.timesteps:
        problems.append(f"T: {t_said}, more than {ds}'s T={info.timesteps}")
    if tokenizer is not None:
        if tokenizer.timesteps != cfg.timesteps:
            problems.append(f"T: {tk} was trained on T={tokenizer.timesteps}, {t_said}")
        fits = compatibility_problems(tokenizer, timesteps=None, channels=info.channels, grid=info.grid, source=ds)
        problems += [p.replace("tokenizer has", f"{tk} was trained on", 1) for p in fits]
    factor = 2**cfg.model.encoder_levels
    if cfg.model.uses_uafno and (info.grid % factor or info.grid // factor < 2):  # the generated stack takes any grid
        problems.append(
            f"grid: the model's {cfg.model.encoder_levels} encoder levels need a multiple of {factor} of at least "
            f"{2 * factor}, {ds} has {info.grid}"
        )
    if problems:
        raise NoaError(
            "the dataset, the tokenizer and the settings do not fit each other:\n  - "
            + "\n  - ".join(problems)
            + "\nPass --timesteps of at most the dataset's T, a tokenizer trained on this data (noa vqvae train), "
            "fewer --encoder-levels, or another dataset."
        )
