"""Whether data lie where a NOA was trained: its θ box and its grid.

A NOA's θ embedding reads θ rescaled to the box of the family it was first trained on
(``theta_box`` in its config; a fine-tune keeps its source's box), so the box's edges read ±1
and a dimension the family fixed read 0 on every sample. Data whose θ leave that box still run
(the embedding reads beyond ±1, or a fixed dimension's input is no longer 0), but the NOA then
answers where it never learned anything. The same holds, more mildly, for a grid the NOA was not
trained on (a neural operator runs at any resolution; how well is another question). Neither is
an error; both are said, once per stage (train, diagnose, compare, ``noa.load``), by the one
function here that every stage calls: :func:`theta_warning` (and :func:`grid_note`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from noa.model.uafno import UAFNOConfig, box_tensors, embedding_input
from noa.operators.space import Dimension, ParameterSpace

if TYPE_CHECKING:
    from noa.data.h5 import DatasetInfo

UNIT_SLACK = 1e-5  # θ is stored as float32; a value this close to a box edge (unit coordinates) is on it
LISTED_VALUES = 6  # distinct discrete values named before "…"


def box_owner(config: UAFNOConfig, data_family: str | None = None, data: str = "the data's") -> str:
    """Whose box the θ embedding is scaled to, in words: the family the config records, and
    whether that is ``data``'s family (``data_family``) or another (the family a fine-tune's
    source was first trained on)."""
    if config.theta_box is None:
        return "the whole parameter space (no family box)"
    name = config.theta_family
    if name is None:
        return "the box of the family it was first trained on (a checkpoint from before noa recorded its name)"
    if data_family is None:
        return f"family {name}'s box"
    if name == data_family:
        return f"family {name}'s box, {data} family"
    return f"family {name}'s box, the family it was first trained on, not {data} family {data_family}"


def outside_box(config: UAFNOConfig, space: ParameterSpace, thetas: np.ndarray | torch.Tensor) -> list[str]:
    """One phrase per θ dimension whose values in ``thetas`` ``[N, P]`` (unit coordinates) leave
    the model's box, in physical units, with what its embedding then reads; [] when none does."""
    if config.theta_box is None or len(thetas) == 0:
        return []
    rows = torch.as_tensor(np.asarray(thetas, dtype=np.float32))
    low, span = box_tensors(config)
    reads = embedding_input(rows, low, span)
    phrases = []
    for j, dim in enumerate(space.dims):
        lo, hi = config.theta_box[j]
        column = rows[:, j].double().numpy()
        if not _leaves(dim, column, lo, hi):
            continue
        seen = _values(dim, column)
        read = f"its embedding reads {float(reads[:, j].min()):.2g} … {float(reads[:, j].max()):.2g}"
        if hi <= lo:
            phrases.append(
                f"{dim.name} was fixed at {_text(dim.physical(lo))} in training (its embedding input always 0) "
                f"and here takes {seen} ({read})"
            )
        else:
            phrases.append(
                f"{dim.name} takes {seen} against the box's {_text(dim.physical(lo))} … {_text(dim.physical(hi))}"
                f" ({_beyond(dim, column, lo, hi)}{read}, trained on -1 … 1)"
            )
    return phrases


def theta_warning(
    config: UAFNOConfig,
    space: ParameterSpace,
    thetas: np.ndarray | torch.Tensor,
    *,
    data: str,
    data_family: str | None = None,
) -> str | None:
    """The one warning a stage says (each with its own prefix) when θ of ``data`` (words:
    "dataset d.h5", "this rollout") leave the model's box; None when all lie inside it."""
    phrases = outside_box(config, space, thetas)
    if not phrases:
        return None
    return (
        f"θ of {data} fall outside the box the NOA's θ embedding is scaled to "
        f"({box_owner(config, data_family)}): {'; '.join(phrases)}. The NOA extrapolates there; "
        "for these θ train a new run on data covering them (a new run scales θ to its data's family), or keep the "
        "data inside the box"
    )


def dataset_warning(config: UAFNOConfig, info: DatasetInfo, rows: Sequence[int] | np.ndarray) -> str | None:
    """:func:`theta_warning` of ``rows`` of the dataset ``info`` describes (train, diagnose and
    compare call this); the θ are read only when the model has a box to leave."""
    if config.theta_box is None:  # a model without a box reads every θ of the space
        return None
    return theta_warning(
        config,
        info.space,
        dataset_thetas(info.path, rows),
        data=f"dataset {info.path}",
        data_family=info.operator_family.name,
    )


def grid_note(trained_grid: int | None, grid: int, *, data: str) -> str | None:
    """One line when ``data`` has another grid than the NOA was trained at (None when the same
    or unknown): legitimate for a neural operator, never silent."""
    if trained_grid is None or trained_grid == grid:
        return None
    return (
        f"the NOA was trained at {trained_grid}×{trained_grid} and {data} is {grid}×{grid}: it runs at any "
        "resolution, but these figures score it at one it never saw"
    )


def trained_on_text(trained: dict) -> str:
    """The family and grid a run was trained on and whose θ box its embedding reads, in words."""
    if trained.get("dataset") is None:
        where = "data not recorded in the checkpoint"
    elif trained.get("family") is None:
        where = f"data not found (its dataset {trained['dataset']} is not there to read)"
    else:
        where = f"family {trained['family']} at {trained['grid']}×{trained['grid']}"
    return f"{where}; θ embedding scaled to {trained.get('theta_box')}"


def dataset_thetas(path: str | Path, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """θ rows ``[N, P]`` (unit coordinates) of ``rows`` of a dataset file."""
    from noa.data import h5

    with h5.open_dataset(path) as f:
        every = f["parameters/params"][:]  # whole, then picked: h5py's point selection of many rows is slow
    return np.asarray(every[np.asarray(rows, dtype=np.int64)])


def _leaves(dim: Dimension, column: np.ndarray, lo: float, hi: float) -> bool:
    """Whether some value leaves [lo, hi]: by unit coordinate for a real dimension, by decoded
    value for a discrete one (any unit coordinate inside an integer's share is that integer)."""
    if dim.kind in ("int", "choice"):
        first, last = _rank(dim, lo), _rank(dim, hi)
        return any(not first <= _rank(dim, u) <= last for u in np.unique(column))
    return bool(column.min() < lo - UNIT_SLACK or column.max() > hi + UNIT_SLACK)


def _rank(dim: Dimension, unit: float) -> float:
    """A discrete dimension's decoded value as a number (an option's index for a choice)."""
    return float(dim.index(unit)) if dim.kind == "choice" else float(dim.value(unit))


def _values(dim: Dimension, column: np.ndarray) -> str:
    """The values a column takes, physical: a range for a real dimension, the distinct values of a discrete one."""
    if dim.kind == "int":
        return f"{dim.physical(column.min())} … {dim.physical(column.max())}"
    if dim.kind == "choice":
        distinct = sorted({dim.physical(u) for u in np.unique(column)}, key=lambda v: _rank(dim, dim.unit(v)))
        shown = ", ".join(_text(v) for v in distinct[:LISTED_VALUES])
        return shown + (", …" if len(distinct) > LISTED_VALUES else "")
    return f"{_text(dim.physical(column.min()))} … {_text(dim.physical(column.max()))}"


def _beyond(dim: Dimension, column: np.ndarray, lo: float, hi: float) -> str:
    """How far a real dimension's values go past the box's edges, in its physical units."""
    if dim.kind in ("int", "choice"):
        return ""
    parts = []
    if column.min() < lo - UNIT_SLACK:
        parts.append(f"{_text(dim.physical(lo) - dim.physical(column.min()))} below")
    if column.max() > hi + UNIT_SLACK:
        parts.append(f"{_text(dim.physical(column.max()) - dim.physical(hi))} above")
    return f"up to {' and '.join(parts)}; "


def _text(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
