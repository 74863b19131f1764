"""benchmarks/domain_fine_tune.py caches its datasets by the family's content, not its name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import domain_fine_tune  # noqa: E402  (a script folder, not a package)

from noa.families import family_from_text  # noqa: E402

FAMILY = """name: mine
description: residual operators at a moderate gain
dimensions:
  update_policy: {fixed: residual}
  weight_gain: {range: [%s, 1.2]}
"""


def test_an_edited_family_file_of_the_same_name_gets_its_own_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated: list[Path] = []

    def generate(config, path: Path, **_kw) -> None:  # noqa: ANN001  (the real one writes an HDF5 file)
        generated.append(path)
        path.write_text(repr(config.family["dimensions"]["weight_gain"]["range"]))

    monkeypatch.setattr(domain_fine_tune, "WORK", tmp_path)
    monkeypatch.setattr(domain_fine_tune, "generate", generate)
    first = domain_fine_tune.dataset(family_from_text(FAMILY % "0.8", "first"), 16, 1, 16, 4)
    edited = domain_fine_tune.dataset(family_from_text(FAMILY % "1.0", "edited"), 16, 1, 16, 4)
    again = domain_fine_tune.dataset(family_from_text(FAMILY % "0.8", "again"), 16, 1, 16, 4)
    assert edited != first and again == first
    assert generated == [first, edited]  # the unchanged family's file is reused, the edited one's made anew
    assert first.read_text() == "[0.8, 1.2]" and edited.read_text() == "[1.0, 1.2]"
