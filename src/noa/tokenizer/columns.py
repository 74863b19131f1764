"""The feature columns a tokenizer reads, by name from noa's feature registry.

noa computes every feature of a rollout (:mod:`noa.features`) and a tokenizer names the columns
it wants; here those names are checked against the registry (with a guess for a misspelt one)
and turned into column indices, so CNO and NOA rollouts reach any tokenizer through one path.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from noa.features import FAMILIES, feature_names

Columns = dict[str, Tensor | None]  # family -> registry column indices (None: every column, in order)


def feature_problems(requested: object, channels: int) -> list[str]:
    """Every way ``requested`` (``{family: [name, ...]}``) asks for columns noa does not compute
    for ``channels`` channels, one line each."""
    if not isinstance(requested, Mapping) or not requested:
        return [f"feature_names must map feature families ({', '.join(FAMILIES)}) to lists of feature names"]
    known = feature_names(channels)
    problems = []
    for family, names in requested.items():
        if family not in known:
            problems.append(f"feature family {family!r} is not one noa computes{_guess(str(family), list(known))}")
            continue
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            problems.append(f"{family} features must be a list of names, got {names!r}")
            continue
        if not names:
            problems.append(f"{family} features: the list is empty (leave the family out instead)")
        unknown = [f"{n!r}{_guess(n, known[family])}" for n in names if n not in known[family]]
        if unknown:
            problems.append(f"{family} features noa does not compute for {channels} channels: {', '.join(unknown)}")
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        if repeated:
            problems.append(f"{family} features repeat: {', '.join(repeated)}")
    return problems


def _guess(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def feature_columns(requested: Mapping[str, Sequence[str]], channels: int) -> Columns:
    """Registry column indices of ``requested`` (checked by :func:`feature_problems`); None where a
    family is read whole and in order, so its features pass through untouched."""
    known = feature_names(channels)
    return {
        family: None if list(names) == known[family] else torch.tensor([known[family].index(n) for n in names])
        for family, names in requested.items()
    }


def select(features: Mapping[str, Tensor], columns: Columns) -> dict[str, Tensor]:
    """The families and columns ``columns`` names, from noa's full features (last axis = columns;
    the indices on the features' device)."""
    return {
        family: features[family] if index is None else features[family].index_select(-1, index)
        for family, index in columns.items()
    }
