"""What an interrupted generation left beside a dataset's path: ``OUT.partial``, and the whole
command that continues it (a user who asks about ``OUT`` needs the flags it was started with,
not advice to start another generation).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from noa.data.ics import IC_KINDS, IC_KINDS_KEY


def partial_of(path: Path) -> Path:
    """The file an interrupted generation of ``path`` writes into."""
    return path.with_name(path.name + ".partial")


def resume_command(path: Path) -> str | None:
    """``noa data generate … --resume`` with the flags recorded in ``path``'s partial file;
    None when there is no readable one."""
    partial = partial_of(path)
    if not partial.is_file() or not h5py.is_hdf5(partial):
        return None
    with h5py.File(partial, "r") as f:
        if "config" not in f.attrs:
            return None
        config = json.loads(f.attrs["config"])
    flags = [f"--out {path}"] + [
        f"--{key.replace('_', '-')} {config[key]}"
        for key in ("n_samples", "grid", "timesteps", "realizations", "seed")
        if key in config
    ]
    if config.get(IC_KINDS_KEY) and list(config[IC_KINDS_KEY]) != list(IC_KINDS):
        flags.append("--ic-kinds " + " ".join(config[IC_KINDS_KEY]))
    if config.get("store_trajectories"):
        flags.append("--store-trajectories")
    if config.get("features") is False:
        flags.append("--no-features")
    name = _family_name(config.get("family"))
    if name != "full":
        flags.append(f"--family {name or 'FILE (the family it was started with)'}")
    return "noa data generate " + " ".join(flags) + " --resume"


def _family_name(family: dict | None) -> str | None:
    """The shipped family a recorded one is, else None (the user's own file)."""
    from noa.families import load_family, named_families

    if family is None:
        return "full"
    return next((name for name in named_families() if load_family(name).as_dict() == family), None)
