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

from noa.features import FEATURE_CATEGORIES, feature_names

Columns = dict[str, Tensor | None]  # category -> registry column indices (None: every column, in order)


def feature_problems(requested: object, channels: int) -> list[str]:
    """Every way ``requested`` (``{category: [name, ...]}``) asks for columns noa does not compute
    for ``channels`` channels, one line each."""
    if not isinstance(requested, Mapping) or not requested:
        return [
            f"feature_names must map feature categories ({', '.join(FEATURE_CATEGORIES)}) to lists of feature names"
        ]
    known = feature_names(channels)
    problems = []
    for category, names in requested.items():
        if category not in known:
            problems.append(
                f"feature category {category!r} is not one noa computes{_guess(str(category), list(known))}"
            )
            continue
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            problems.append(f"{category} features must be a list of names, got {names!r}")
            continue
        if not names:
            problems.append(f"{category} features: the list is empty (leave the category out instead)")
        unknown = [f"{n!r}{_guess(n, known[category])}" for n in names if n not in known[category]]
        if unknown:
            problems.append(f"{category} features noa does not compute for {channels} channels: {', '.join(unknown)}")
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        if repeated:
            problems.append(f"{category} features repeat: {', '.join(repeated)}")
    return problems


def _guess(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def feature_columns(requested: Mapping[str, Sequence[str]], channels: int) -> Columns:
    """Registry column indices of ``requested`` (checked by :func:`feature_problems`); None where a
    category is read whole and in order, so its features pass through untouched."""
    known = feature_names(channels)
    return {
        category: None if list(names) == known[category] else torch.tensor([known[category].index(n) for n in names])
        for category, names in requested.items()
    }


def select(features: Mapping[str, Tensor], columns: Columns) -> dict[str, Tensor]:
    """The categories and columns ``columns`` names, from noa's full features (last axis = columns;
    the indices on the features' device)."""
    return {
        category: features[category] if index is None else features[category].index_select(-1, index)
        for category, index in columns.items()
    }
