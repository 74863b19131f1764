"""Operator families: the regions of the CNO parameter space a dataset's operators are drawn from."""

from noa.families.family import (
    FULL,
    Choices,
    Fixed,
    OperatorFamily,
    Range,
    family_from_dict,
    family_from_text,
    load_family,
    named_families,
)

__all__ = [
    "FULL",
    "Choices",
    "Fixed",
    "OperatorFamily",
    "Range",
    "family_from_dict",
    "family_from_text",
    "load_family",
    "named_families",
]
