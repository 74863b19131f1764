"""`noa data info`: a human summary of a dataset file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from noa.data import h5
from noa.data.ics import IC_KIND_KEY
from noa.features.registry import FEATURE_CATEGORIES


def describe(path: str | Path) -> str:
    """Counts, shapes, θ ranges in physical units, IC kinds, validity and what is stored."""
    with h5.open_dataset(path) as f:
        info = h5.read_info(f)
        params = f["parameters/params"][:]
        replayed = f["metadata/replayed"][:]
        valid = f["metadata/valid"][:]
        max_abs = f["metadata/max_abs"][:]
        kinds = Counter(info.ic_kinds[i] for i in f[f"metadata/{IC_KIND_KEY}"][:])
        amplitudes = Counter(info.amplitude_levels[i] for i in f["metadata/ic_amplitude"][:])
        features_done = int(f["features/done"][:].sum()) if "features" in f and "done" in f["features"] else 0
        feature_dims = (
            {category: f["features"][category].shape[-1] for category in FEATURE_CATEGORIES}
            if info.has_features
            else {}
        )
    n = info.n_samples
    lines = [
        f"Dataset {info.path}",
        f"  status:        {'complete' if info.complete else 'INCOMPLETE (resume with --resume)'}",
        f"  samples:       {n}  (replayed {int(replayed.sum())}, valid {int(valid.sum())}, invalid {int((replayed & ~valid).sum())})",
        f"  fields:        C={info.channels}, grid {info.grid}x{info.grid}, T={info.timesteps}, realizations M={info.realizations}",
        f"  seed:          {info.config.get('seed')}",
        f"  weight banks:  {info.family}",
        f"  trajectories:  {'stored ' + str((n, info.realizations, info.timesteps + 1, info.channels, info.grid, info.grid)) if info.has_trajectories else 'not stored (replayed on demand)'}",
        f"  features:      {f'{features_done}/{n} samples, dims {feature_dims}' if info.has_features else 'none (run `noa data features`)'}",
    ]
    if replayed.any():
        lines.append(f"  max |x|:       median {np.median(max_abs[replayed]):.3g}, max {max_abs[replayed].max():.3g}")
    lines.append("  IC kinds:      " + ", ".join(f"{name} {kinds.get(name, 0)}" for name in info.ic_kinds))
    lines.append("  IC amplitudes: " + ", ".join(f"{name} {amplitudes.get(name, 0)}" for name in info.amplitude_levels))
    family = info.operator_family
    lines.append(f"  operator family: {family.name}{f' ({family.description})' if family.description else ''}")
    lines += [f"    {line}" for line in family.describe() if "(whole range)" not in line]
    lines.append("  θ (physical units over the samples):")
    for j, dim in enumerate(info.space.dims):
        column = params[:, j]
        if dim.kind == "choice":
            counts = Counter(dim.value(u) for u in column)
            text = ", ".join(f"{c}: {counts.get(c, 0)}" for c in dim.choices)
        else:
            lo, hi = dim.value(float(column.min())), dim.value(float(column.max()))
            text = f"{lo:.4g} .. {hi:.4g}  ({dim.kind} on [{dim.low:g}, {dim.high:g}])"
        lines.append(f"    {dim.name:<18} {text}")
    return "\n".join(lines)
