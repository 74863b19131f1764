"""`noa family show`: a family as the YAML `--family` reads, with what it will cost to emulate."""

from __future__ import annotations

from pathlib import Path

import h5py

from noa.families.difficulty import family_difficulty
from noa.families.family import OperatorFamily, load_family, named_families


def resolve(spec: str) -> tuple[OperatorFamily, str]:
    """The family a name, a YAML file or a dataset names, and a line saying where it came from."""
    path = Path(spec)
    if path.is_file() and h5py.is_hdf5(path):
        from noa.data import h5

        with h5.open_dataset(path) as f:
            info = h5.read_info(f)
        seed, n = info.config.get("seed"), info.n_samples
        return info.operator_family, (
            f"the family recorded by dataset {path} ({n} samples, seed {seed}); "
            f"`noa data generate --family THIS_FILE --seed {seed} --n-samples {n}` draws the same θ"
        )
    family = load_family(spec)
    where = f"shipped family {spec!r}" if spec in named_families() and not path.is_file() else f"family file {path}"
    return family, where


def show_family(spec: str, difficulty: bool = True, operators: int = 32, seed: int = 0) -> str:
    """The family's YAML, then comments: its origin, its dimensions in words and (unless
    ``difficulty`` is False) the training-free difficulty of its maps per update rule."""
    family, origin = resolve(spec)
    lines = [f"# {origin}", family.to_yaml().rstrip(), "#", "# In words (dimensions not named keep their whole range):"]
    lines += [f"#   {line}" for line in family.describe()]
    if difficulty:
        lines += [
            "#",
            f"# How hard its maps are to emulate ({operators} operators, grid 32, states at steps 0-12 of 16):",
        ]
        lines += _difficulty_lines(family, operators, seed)
    return "\n".join(lines) + "\n"


def _difficulty_lines(family: OperatorFamily, operators: int, seed: int) -> list[str]:
    measured = family_difficulty(family, operators=operators, seed=seed)
    out = []
    for rule, m in measured.items():
        out.append(
            f"#   {rule:<8} ({m['operators']} operators): finite-difference gain {m['gain']:.3g}, "
            f"relative gain {m['relative']:.3g}, high-wavenumber share of O(x) {m['high_fraction_map']:.3g}"
        )
    out += [
        "#   (medians; relative gain near 0: O is almost a constant field of θ; a larger gain and high-wavenumber",
        "#   share cost more updates: benchmarks/README.md gives the skill the ladder reached for each)",
    ]
    return out
