"""The benchmarks' research candidates live in :mod:`noa.model.candidates`, not in the scripts."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from noa.families import FULL
from noa.model import UAFNO, UAFNOConfig
from noa.model.candidates import HyperStack, LocalUAFNO, ThetaBlind, UAFNOBranch, WideUAFNOBranch
from noa.model.generated import family_fields
from noa.operators.space import CNO_SPACE

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MODULE_BASES = {"Module", "nn.Module", "torch.nn.Module"}


def module_classes(source: str) -> list[str]:
    """Names of the classes in ``source`` whose bases name Module, nn.Module or torch.nn.Module."""
    return [
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and any(ast.unparse(base) in MODULE_BASES for base in node.bases)
    ]


def test_the_module_finder_sees_every_spelling_of_module() -> None:
    source = "class A(nn.Module): pass\nclass B(torch.nn.Module): pass\nclass C(Module): pass\nclass D(Base): pass\n"
    assert module_classes(source) == ["A", "B", "C"]


def test_no_benchmark_defines_a_model() -> None:
    defined = {
        f"{path.relative_to(BENCHMARKS)}: {name}"
        for path in sorted(BENCHMARKS.rglob("*.py"))
        for name in module_classes(path.read_text())
    }
    assert not defined, f"move these models into noa.model.candidates and import them: {sorted(defined)}"


def hybrid() -> UAFNOBranch:
    """long_curve's ``hybrid``: `noa train --backbone hybrid` at the U-AFNO branch's widths."""
    return UAFNOBranch(None, "hybrid", family_fields(CNO_SPACE, FULL.unit_box()))


# name: (builder, state-dict entries, digest of their keys and shapes, Σ values, Σ values²) at seed 0,
# as the benchmarks built them before they moved here: saved benchmark checkpoints load into these.
RECORDED: dict[str, tuple[Callable[[], nn.Module], int, str, float, float]] = {
    "hyper": (HyperStack, 15, "40674f430e55de7c", -20.344387182154534, 2915.585670297516),
    "uafno": (UAFNOBranch, 98, "67c4daf5392c7da6", 587.3957577850794, 933.5369237560958),
    "uafno4x": (WideUAFNOBranch, 98, "cf1928145de66874", 1161.0739881486634, 1868.668892279288),
    "uafno-local": (LocalUAFNO, 146, "2d8a29ecdee03be2", 734.3908384957796, 1338.7860020472124),
    "hybrid": (hybrid, 111, "2bcfec97408261d4", 1029.523048239964, 7766.272216820816),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_a_candidate_keeps_its_state_dict_and_seeded_initialisation(name: str) -> None:
    build, entries, layout, total, squares = RECORDED[name]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = build().state_dict()
    digest = hashlib.sha256("".join(f"{k} {tuple(v.shape)}\n" for k, v in state.items()).encode()).hexdigest()[:16]
    assert (len(state), digest) == (entries, layout), f"{name}: its state-dict keys or shapes changed"
    assert sum(v.double().sum().item() for v in state.values()) == pytest.approx(total, rel=1e-9)
    assert sum(v.double().pow(2).sum().item() for v in state.values()) == pytest.approx(squares, rel=1e-9)


def test_the_blind_noa_shares_the_noas_parameters_and_sees_theta_as_zeros() -> None:
    noa = UAFNO(UAFNOConfig(base_channels=8, encoder_levels=2, modes=4, afno_blocks=1))
    blind = ThetaBlind(noa)
    assert list(blind.state_dict()) == [f"model.{key}" for key in noa.state_dict()]
    gen = torch.Generator().manual_seed(0)
    x, theta = torch.randn(2, 3, 16, 16, generator=gen), torch.rand(2, CNO_SPACE.size, generator=gen)
    with torch.no_grad():
        assert torch.equal(blind(x, theta), noa(x, torch.zeros_like(theta)))
        assert not torch.equal(blind(x, theta), noa(x, theta))
