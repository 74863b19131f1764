"""The dataset file: a self-describing HDF5 layout, its writer helpers and a validating reader.

Layout (format ``noa-dataset`` version 2)::

    /                      attrs: format, format_version, complete, config (JSON), grid,
                                  channels, timesteps, realizations, parameter_space (JSON),
                                  cno_family (JSON of the weight banks: name, version, seed, sizes),
                                  ic_families (JSON: the IC kinds), amplitude_levels (JSON), noa_version
    /parameters/params     [N, P] float32   θ in unit coordinates      attrs: names (JSON)
    /inputs/fields         [N, C, H, W] float32 initial conditions
    /metadata/ic_family    [N] int16   index into ic_families (the sample's IC kind)
    /metadata/ic_amplitude [N] int16   index into amplitude_levels
    /metadata/ic_length_scale [N] float32
    /metadata/ic_seed, noise_seed [N] int64   the noise seed keys the CNO's noise stream only
    /metadata/replayed     [N] bool    the rollout of this sample has been computed
    /metadata/valid        [N] bool    the rollout stayed finite and below the bound
    /metadata/max_abs      [N] float32 largest |x| over the rollout
    /trajectories          [N, M, T+1, C, H, W] float32   optional cache of the replay
    /features/{initial,summary,temporal}   attrs: names (JSON); /features/done [N] bool
                           (one group per feature category, noa.features.FEATURE_CATEGORIES)

Everything a replay needs (θ, IC, noise seed, T, M, the family definition) is in the file, so
trajectories are a cache, never the only copy of the truth.

Version 1 files drew each operator's weights from a per-sample operator seed (θ did not
identify the operator). That family is gone, so they are refused with a message, never
replayed as the new family.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from noa.data.ics import IC_KIND_KEY, IC_KINDS_KEY
from noa.errors import NoaError
from noa.families import FULL, OperatorFamily, family_from_dict
from noa.features.registry import FEATURE_CATEGORIES
from noa.operators.space import CNO_SPACE, ParameterSpace
from noa.operators.weights import BANKS

FORMAT = "noa-dataset"
FORMAT_VERSION = 2
REQUIRED = (
    "parameters/params",
    "inputs/fields",
    f"metadata/{IC_KIND_KEY}",
    "metadata/ic_amplitude",
    "metadata/ic_length_scale",
    "metadata/ic_seed",
    "metadata/noise_seed",
    "metadata/replayed",
    "metadata/valid",
    "metadata/max_abs",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What the root attributes of a dataset file declare."""

    path: Path
    n_samples: int
    grid: int
    channels: int
    timesteps: int
    realizations: int
    space: ParameterSpace
    ic_kinds: tuple[str, ...]  # the IC kinds the samples cycle through (recorded as IC_KINDS_KEY)
    amplitude_levels: tuple[str, ...]
    config: dict[str, Any]
    complete: bool
    has_trajectories: bool
    has_features: bool
    family: str = ""  # the CNO weight banks the file was made with (JSON; recorded as cno_family)
    operator_family: OperatorFamily = FULL  # the region of the parameter space θ was drawn from


def open_dataset(path: str | Path) -> h5py.File:
    """Open a dataset file read-only, with one clear message for the usual mistakes."""
    p = Path(path)
    if not p.exists():
        from noa.data.partial import partial_of, resume_command

        command = resume_command(p)
        if command is not None:
            raise NoaError(
                f"dataset {p} does not exist yet: its generation was interrupted and the samples replayed so far are "
                f"in {partial_of(p)}; continue it with `{command}`"
            )
        raise NoaError(
            f"dataset {p} does not exist; create one with `noa data generate --out {p} --n-samples N` "
            "(see `noa data generate --help` for the grid, T and family)"
        )
    if p.is_dir():
        raise NoaError(f"dataset {p} is a directory; pass the path of an .h5 file")
    if zipfile.is_zipfile(p):
        raise NoaError(
            f"{p} is a torch archive (a checkpoint or tokenizer weights?), not an HDF5 dataset; pass the .h5 file `noa data generate` wrote"
        )
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise NoaError(
            f"dataset {p} is not a readable HDF5 file ({err}); regenerate it with `noa data generate`"
        ) from err
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise NoaError(f"{p} is an HDF5 file but not a noa dataset (its 'format' attribute is not '{FORMAT}')")
    return f


def read_info(f: h5py.File) -> DatasetInfo:
    """Validate the layout of an open dataset and return what it declares."""
    p = Path(f.filename)
    version = int(f.attrs.get("format_version", -1))
    if version == 1:
        raise NoaError(
            f"{p} is a version-1 noa dataset: its operators' weights come from per-sample operator seeds, a CNO generator "
            f"this noa no longer replays (θ now identifies the operator); regenerate it with `noa data generate` "
            f"(its flags are in the file's config: {f.attrs.get('config', '?')})"
        )
    if version != FORMAT_VERSION:
        raise NoaError(
            f"{p} has dataset format version {version}; this noa reads version {FORMAT_VERSION}; regenerate it with this noa's `noa data generate`"
        )
    check_family(f)
    missing = [name for name in REQUIRED if name not in f]
    if missing:
        raise NoaError(
            f"dataset {p} is missing {', '.join('/' + m for m in missing)}; regenerate it with `noa data generate`"
        )
    try:
        space = ParameterSpace.from_json(f.attrs["parameter_space"])
        config = json.loads(f.attrs["config"])
        info = DatasetInfo(
            path=p,
            n_samples=int(f["parameters/params"].shape[0]),
            grid=int(f.attrs["grid"]),
            channels=int(f.attrs["channels"]),
            timesteps=int(f.attrs["timesteps"]),
            realizations=int(f.attrs["realizations"]),
            space=space,
            ic_kinds=tuple(json.loads(f.attrs[IC_KINDS_KEY])),
            amplitude_levels=tuple(json.loads(f.attrs["amplitude_levels"])),
            config=config,
            complete=bool(f.attrs["complete"]),
            has_trajectories="trajectories" in f,
            has_features="features" in f and all(category in f["features"] for category in FEATURE_CATEGORIES),
            family=str(f.attrs["cno_family"]),
            operator_family=recorded_family(f),
        )
    except KeyError as err:
        raise NoaError(f"dataset {p} lacks the root attribute {err}; regenerate it with `noa data generate`") from err
    n, c, g = info.n_samples, info.channels, info.grid
    expected = {
        "parameters/params": (n, space.size),
        "inputs/fields": (n, c, g, g),
        **{
            f"metadata/{k}": (n,)
            for k in (
                IC_KIND_KEY,
                "ic_amplitude",
                "ic_length_scale",
                "ic_seed",
                "noise_seed",
                "replayed",
                "valid",
                "max_abs",
            )
        },
    }
    if info.has_trajectories:
        expected["trajectories"] = (n, info.realizations, info.timesteps + 1, c, g, g)
    for name, shape in expected.items():
        if not isinstance(f[name], h5py.Dataset):
            raise NoaError(
                f"dataset {p}: /{name} is a group, expected an array; regenerate it with `noa data generate`"
            )
        if tuple(f[name].shape) != shape:
            raise NoaError(f"dataset {p}: /{name} has shape {tuple(f[name].shape)}, expected {shape}")
        kinds = _DTYPE_KINDS[name.split("/")[-1]]
        if f[name].dtype.kind not in kinds:
            raise NoaError(
                f"dataset {p}: /{name} has dtype {f[name].dtype}, expected {_KIND_WORDS[kinds]}; "
                "regenerate it with `noa data generate`"
            )
    return info


# The numpy dtype kinds each array may have (f: float, i/u: integer, b: bool).
_DTYPE_KINDS = {
    "params": "f",
    "fields": "f",
    "trajectories": "f",
    "ic_length_scale": "f",
    "max_abs": "f",
    IC_KIND_KEY: "iu",
    "ic_amplitude": "iu",
    "ic_seed": "iu",
    "noise_seed": "iu",
    "replayed": "b",
    "valid": "b",
}
_KIND_WORDS = {"f": "floating point", "iu": "integers", "b": "booleans"}


def recorded_family(f: h5py.File) -> OperatorFamily:
    """The operator family a dataset records; files made before families drew from the whole space."""
    stored = f.attrs.get("operator_family")
    if stored is None:
        return FULL
    try:
        data = json.loads(stored)
    except json.JSONDecodeError as err:
        raise NoaError(
            f"dataset {f.filename}: its 'operator_family' attribute is not valid JSON ({err}); regenerate it"
        ) from err
    return family_from_dict(data, f"dataset {f.filename}'s recorded family")


def check_family(f: h5py.File) -> None:
    """NoaError unless the file was made with the weight banks and parameter space this noa replays.

    The replay cannot take another family (its weights are a constant of the code), so a file
    that declares one must be refused rather than replayed as something it is not.
    """
    p = Path(f.filename)
    stored = f.attrs.get("cno_family")
    if stored is None:
        raise NoaError(
            f"dataset {p} does not record its CNO weight banks (root attribute 'cno_family'); regenerate it with `noa data generate`"
        )
    try:
        declared = json.loads(stored)
    except json.JSONDecodeError as err:
        raise NoaError(f"dataset {p}: its 'cno_family' attribute is not valid JSON ({err}); regenerate it") from err
    if declared != json.loads(BANKS.to_json()):
        raise NoaError(
            f"dataset {p} was made with CNO weight banks {declared}, but this noa replays {json.loads(BANKS.to_json())}; "
            "regenerate it with this noa's `noa data generate` (or use the noa version that made it)"
        )
    if "parameter_space" in f.attrs and ParameterSpace.from_json(f.attrs["parameter_space"]) != CNO_SPACE:
        raise NoaError(
            f"dataset {p} declares a parameter space other than this noa's CNO operators' ({', '.join(CNO_SPACE.names)}); "
            "regenerate it with `noa data generate`"
        )


def check_inputs(f: h5py.File, rows: np.ndarray, chunk: int = 1024) -> None:
    """NoaError if θ or an IC of the given (sorted) rows holds NaN or inf, or θ lies outside
    the unit cube the parameter space is declared on (the replay would clamp it while a model
    sees the raw value, so the two would disagree about the operator)."""
    for name in ("parameters/params", "inputs/fields"):
        for start in range(0, len(rows), chunk):
            block = f[name][rows[start : start + chunk]]
            if not np.isfinite(block).all():
                bad = rows[start + int(np.argwhere(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))[0][0])]
                raise NoaError(
                    f"dataset {f.filename}: /{name} holds NaN or inf at sample {bad}; regenerate the dataset"
                )
            if name == "parameters/params" and ((block < 0) | (block > 1)).any():
                i, j = np.argwhere((block < 0) | (block > 1))[0]
                raise NoaError(
                    f"dataset {f.filename}: θ of sample {rows[start + int(i)]} is {float(block[i, j]):g} in dimension "
                    f"{CNO_SPACE.names[int(j)] if j < CNO_SPACE.size else j}, outside [0, 1] where the parameter space is declared; "
                    "regenerate the dataset with `noa data generate` (θ is stored in unit coordinates)"
                )


def feature_names(f: h5py.File) -> dict[str, list[str]]:
    """Names of the stored feature columns per category."""
    if "features" not in f or not all(category in f["features"] for category in FEATURE_CATEGORIES):
        raise NoaError(f"dataset {f.filename} has no features; compute them with `noa data features {f.filename}`")
    return {category: json.loads(f["features"][category].attrs["names"]) for category in FEATURE_CATEGORIES}


def fingerprint(path: str | Path) -> str:
    """A short hash of what defines a dataset's samples (config, θ, seeds), not its caches."""
    with open_dataset(path) as f:
        return fingerprint_of(f)


def fingerprint_of(f: h5py.File) -> str:
    """:func:`fingerprint` of an open dataset."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(str(f.attrs["config"]).encode())
    digest.update(str(f.attrs.get("cno_family", "")).encode())
    for name in ("parameters/params", "metadata/noise_seed", "metadata/ic_seed"):
        digest.update(np.ascontiguousarray(f[name][:]).tobytes())
    return digest.hexdigest()


def read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` for increasing ``rows``, read as one slice per contiguous run: h5py's
    list indexing selects point by point and took ~65 ms for 16 trajectory rows of the
    quickstart's file, the slices ~1 ms (benchmarks/README.md, "Reading a batch")."""
    if len(rows) == 0:
        return dataset[rows]
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(rows)]))
    out = np.empty((len(rows), *dataset.shape[1:]), dtype=dataset.dtype)
    for start, end in zip(starts, ends, strict=True):
        out[start:end] = dataset[rows[start] : rows[end - 1] + 1]
    return out


def read_features(f: h5py.File, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Stored features of the given sorted rows, checked complete and finite."""
    feature_names(f)  # clear message when absent
    done = f["features/done"][:] if "done" in f["features"] else np.ones(len(f["parameters/params"]), bool)
    if not done[rows].all():
        raise NoaError(
            f"dataset {f.filename} has features for only some samples; finish them with `noa data features {f.filename}`"
        )
    out = {}
    for category in FEATURE_CATEGORIES:
        if f["features"][category].dtype.kind != "f":
            raise NoaError(
                f"dataset {f.filename}: /features/{category} has dtype {f['features'][category].dtype}, expected floating point; recompute with `noa data features --overwrite`"
            )
        values = read_rows(f["features"][category], rows)
        if not np.isfinite(values).all():
            bad = rows[int(np.argwhere(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0][0])]
            raise NoaError(
                f"dataset {f.filename}: /features/{category} holds NaN or inf at sample {bad}; recompute with `noa data features --overwrite`"
            )
        out[category] = torch.from_numpy(values)
    return out
