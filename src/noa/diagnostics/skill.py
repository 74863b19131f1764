"""Two skills, each defined once here, so every figure that carries a name means one thing.

* **Skill on O** (the benchmarks' measure of how much of the family is learned): per operator,
  ``1 − Σ‖f(x, θ) − O_θ(x)‖² / Σ‖O_θ(x)‖²`` over its states, where O_θ(x) is the CNO's noise-free
  operator output and f is the prediction read at unit scale: the rule head applies
  ``x' = keep·x + scale·f`` outside the network, (keep, scale) = (1, dt) or (α, 1−α)
  (:mod:`noa.model.update_rule`), so ``f = (x̂' − keep·x) / scale`` (:func:`unit_scale`). 1 = O
  learned, 0 = no better than predicting zero. Unlike a skill on the update Δ = x' − x it is not
  weighted by dt² (residual), and it does not credit the −(1−α)·x part of a convex update that the
  rule head supplies for free (an untrained NOA scores ~0.62 on convex Δ, ~0 here).
* **One-step skill** (what ``noa compare``, ``noa diagnose`` and ``benchmarks/fresh_skill.py``
  show): ``1 − Σ‖x̂' − E[x'|x]‖² / Σ‖E[x'|x] − x‖²`` over states x, with E[x'|x] the CNO's
  noise-free step from x (:func:`noa.operators.replay.noise_free_steps`): the prediction's
  error against the step's conditional mean, relative to persistence's. 1 = the step is learned,
  0 = no better than holding the state. Against a noisy realization instead of the mean, even
  the CNO's own noise-free step scores below 1 (0.91 on ``full``), so the noisy form is not used.

Operators are summarised two ways, per update rule: the **median over operators** of each one's
own skill (every operator counts once) and the **pooled** figure ``1 − Σ error / Σ reference``
over all of them (led by the operators with the largest O or update: on 24 held-out residual
operators the pooled drift skill had an effective count of 4 – 6). Each comes with a bootstrap
90% interval over operators from an explicit, seeded generator, and with bins by thirds of the
family's weight_gain range and by activation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noa.diagnostics.held_out import StateSet, rules_of, skill_steps
from noa.families import OperatorFamily
from noa.model.update_rule import UpdateRule
from noa.operators.cno import apply_operator, build_operators
from noa.operators.replay import noise_free_steps
from noa.operators.space import CNO_SPACE, ParameterSpace

RESAMPLES = 1000  # bootstrap resamples behind every interval
LEVEL = 0.9  # the intervals' coverage
SKILL_ON_O = "skill on O"
ONE_STEP_SKILL = "one-step skill"
ONE_STEP_DEFINITION = (
    "1 − Σ‖x̂′ − E[x′|x]‖² / Σ‖E[x′|x] − x‖², E[x′|x] the CNO's noise-free step (1 exact, 0 persistence)"
)

Predictor = Callable[[Tensor, Tensor], Tensor]  # (x [B, C, H, W], θ [B, P]) -> f at unit scale
Stepper = Callable[[Tensor, Tensor], Tensor]  # (x [B, C, H, W], θ [B, P]) -> the predicted next state
ALL = "all"


def unit_scale(next_state: Tensor, x: Tensor, theta: Tensor, rule: UpdateRule) -> Tensor:
    """f read from a predicted next state: ``(x̂' − keep·x) / scale``, the rule taken from θ."""
    keep, scale = rule.coefficients(theta.float())
    return (next_state - keep * x) / scale


def operator_sums(prediction: Tensor, target: Tensor, baseline: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per operator (dim 0): Σ‖prediction − target‖² and Σ‖target − baseline‖² (baseline 0 if None),
    over every other dimension, in float64."""
    p, t = prediction.double(), target.double()
    reference = t if baseline is None else t - baseline.double()
    dims = tuple(range(1, p.ndim))
    return (p - t).pow(2).sum(dim=dims), reference.pow(2).sum(dim=dims)


def pooled(error: np.ndarray, reference: np.ndarray) -> float:
    """1 − Σ error / Σ reference over the operators (nan for none)."""
    total = float(reference.sum())
    return 1.0 - float(error.sum()) / total if total > 0 else float("nan")


def median(error: np.ndarray, reference: np.ndarray) -> float:
    """The median over operators of each one's own skill (nan for none)."""
    return float(np.median(1.0 - error / reference)) if len(reference) else float("nan")


def summary(error: np.ndarray, reference: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Median over operators and pooled skill, each with its bootstrap 90% interval (operators
    resampled with replacement ``RESAMPLES`` times from ``rng``). Operators whose reference is 0
    (nothing to learn) are left out and counted."""
    keep = reference > 0
    error, reference = np.asarray(error, dtype=np.float64)[keep], np.asarray(reference, dtype=np.float64)[keep]
    n = len(reference)
    out: dict[str, Any] = {"operators": n, "left_out": int((~keep).sum())}
    out["median"], out["pooled"] = median(error, reference), pooled(error, reference)
    if n == 0:
        out["median_90"] = out["pooled_90"] = [float("nan"), float("nan")]
        return out
    draws = rng.integers(0, n, size=(RESAMPLES, n))
    e, r = error[draws], reference[draws]
    medians = np.median(1.0 - e / r, axis=1)
    pools = 1.0 - e.sum(axis=1) / r.sum(axis=1)
    tail = 100 * (1 - LEVEL) / 2
    out["median_90"] = [float(v) for v in np.percentile(medians, [tail, 100 - tail])]
    out["pooled_90"] = [float(v) for v in np.percentile(pools, [tail, 100 - tail])]
    return out


def gain_thirds(family: OperatorFamily) -> list[float]:
    """The weight_gain values that cut the family's gain range into thirds (physical units)."""
    position = family.space.position("weight_gain")
    low, high = family.unit_box()[position]
    dim = family.space.dims[position]
    lo, hi = (float(dim.value(u)) for u in (low, high))
    return [lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3]


def gain_bin(gain: float, edges: list[float]) -> str:
    """``low``, ``mid`` or ``high`` third of the family's gain range (``fixed`` where it has none)."""
    if edges[0] == edges[1]:
        return "gain fixed"
    return "gain low" if gain < edges[0] else "gain mid" if gain < edges[1] else "gain high"


@dataclass
class OperatorSkills:
    """Per-operator sums of one skill and what the bins read: rule, gain and activation."""

    error: np.ndarray  # [N] Σ‖prediction − target‖²
    reference: np.ndarray  # [N] Σ‖target − baseline‖²
    rules: list[str]
    gains: list[float]
    activations: list[str]

    @classmethod
    def of(cls, family: OperatorFamily, theta: Tensor, error: Tensor, reference: Tensor) -> OperatorSkills:
        decoded = [family.space.decode(row.tolist()) for row in theta.cpu()]
        return cls(
            error=error.cpu().numpy(),
            reference=reference.cpu().numpy(),
            rules=rules_of(family, theta.cpu()),
            gains=[float(hp["weight_gain"]) for hp in decoded],
            activations=[str(hp["activation"]) for hp in decoded],
        )

    def table(self, family: OperatorFamily, seed: int) -> dict[str, dict[str, Any]]:
        """Per rule: ``all`` and the bins ``gain`` (thirds of the family's range) and
        ``activation``, each a :func:`summary`. One generator seeded by ``seed`` draws every
        interval in a fixed order, so a table is a function of its inputs and the seed."""
        rng = np.random.default_rng(seed)
        edges = gain_thirds(family)
        out: dict[str, dict[str, Any]] = {}
        for rule in sorted(set(self.rules)):
            rows = [i for i, r in enumerate(self.rules) if r == rule]
            entry: dict[str, Any] = {"all": self._summary(rows, rng), "gain": {}, "activation": {}}
            for name, key in (("gain", lambda i: gain_bin(self.gains[i], edges)), ("activation", self._activation)):
                for label in sorted({key(i) for i in rows}):
                    entry[name][label] = self._summary([i for i in rows if key(i) == label], rng)
            out[rule] = entry
        return out

    def _activation(self, i: int) -> str:
        return self.activations[i]

    def _summary(self, rows: list[int], rng: np.random.Generator) -> dict[str, Any]:
        return summary(self.error[rows], self.reference[rows], rng)


@torch.no_grad()
def skill_on_o(
    predict: Predictor, held_out: StateSet, family: OperatorFamily, seed: int = 0, batch: int = 64
) -> dict[str, dict[str, Any]]:
    """The skill-on-O table (:meth:`OperatorSkills.table`) of ``predict`` on a held-out set."""
    errors, references = [], []
    n, s = held_out.states.shape[:2]
    for start in range(0, n, max(1, batch // s)):
        rows = slice(start, min(start + max(1, batch // s), n))
        x, o = held_out.states[rows], held_out.maps[rows]
        theta = held_out.theta[rows].repeat_interleave(s, 0)
        f = predict(x.flatten(0, 1), theta).view_as(x)
        e, r = operator_sums(f, o)
        errors.append(e)
        references.append(r)
    sums = OperatorSkills.of(family, held_out.theta, torch.cat(errors), torch.cat(references))
    return sums.table(family, seed)


def rollout_states(frames: Tensor, timesteps: int) -> Tensor:
    """The states a one-step skill is measured on, from CNO frames ``[B, T+1, ...]``: steps 0, T/4,
    T/2 and 3T/4 (:func:`skill_steps`)."""
    return frames[:, skill_steps(timesteps)]


@torch.no_grad()
def one_step_sums(
    step: Stepper, theta: Tensor, states: Tensor, model_theta: Tensor | None = None, space: ParameterSpace = CNO_SPACE
) -> tuple[Tensor, Tensor]:
    """Per operator, the one-step skill's sums of a stepping model on its states ``[B, S, C, H, W]``
    (:func:`step_sums` without the skill on O, for callers that report only this one)."""
    predicted, x, _ = _stepped(step, theta, states, model_theta)
    clean = noise_free_steps(theta, states, space).flatten(0, 1)
    return _per_operator(operator_sums(predicted, clean, x), states.shape[1])


@torch.no_grad()
def step_sums(
    step: Stepper, theta: Tensor, states: Tensor, model_theta: Tensor | None = None, space: ParameterSpace = CNO_SPACE
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Per operator, the sums of both skills of a stepping model on its states ``[B, S, C, H, W]``:
    ``((one-step error, one-step reference), (on-O error, on-O reference))``. The CNO's noise-free
    step and O_θ are computed here from θ (its replay); the model is fed ``model_theta`` (default
    θ; an ablation may feed another) and read at unit scale with θ's update rule."""
    rule = UpdateRule.from_space(space)
    if rule is None:
        raise ValueError("the skills need a parameter space with an update rule (update_policy, dt, alpha)")
    b, s = states.shape[:2]
    predicted, x, flat_theta = _stepped(step, theta, states, model_theta)
    clean = noise_free_steps(theta, states, space).flatten(0, 1)
    ops = build_operators(theta.cpu(), [0] * b, states.shape[2], states.shape[-1], x.device, space).repeat(s)
    maps = apply_operator(ops, x)
    f = unit_scale(predicted, x, flat_theta.to(x.device), rule)
    return _per_operator(operator_sums(predicted, clean, x), s), _per_operator(operator_sums(f, maps), s)


def _stepped(step: Stepper, theta: Tensor, states: Tensor, model_theta: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The model's step from every state (flattened to ``[B·S, C, H, W]``), the states, and θ per state."""
    s = states.shape[1]
    flat_theta = theta.repeat_interleave(s, 0)
    fed = flat_theta if model_theta is None else model_theta.repeat_interleave(s, 0)
    x = states.flatten(0, 1).float()
    return step(x, fed.to(x.device)), x, flat_theta


def _per_operator(pair: tuple[Tensor, Tensor], states: int) -> tuple[Tensor, Tensor]:
    """Sums over each operator's ``states`` consecutive rows, on the host."""
    return pair[0].view(-1, states).sum(dim=1).cpu(), pair[1].view(-1, states).sum(dim=1).cpu()


def step_tables(
    step: Stepper, family: OperatorFamily, theta: Tensor, states: Tensor, seed: int = 0, chunk: int = 32
) -> dict[str, dict[str, dict[str, Any]]]:
    """Both skills' tables (:meth:`OperatorSkills.table`) of a stepping model on operators θ
    ``[N, P]`` and their states ``[N, S, C, H, W]``: ``one_step`` and ``skill_on_o``. The
    operators go through :func:`step_sums` ``chunk`` at a time."""
    sums = [
        step_sums(step, theta[i : i + chunk], states[i : i + chunk], space=family.space)
        for i in range(0, theta.shape[0], chunk)
    ]
    tables = {}
    for name, which in (("one_step", 0), ("skill_on_o", 1)):
        error, reference = (torch.cat([s[which][part] for s in sums]) for part in (0, 1))
        tables[name] = OperatorSkills.of(family, theta, error, reference).table(family, seed)
    return tables


def by_rule(error: Tensor, reference: Tensor, rules: list[str] | None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """:func:`summary` of every operator (``all``) and of each update rule's, intervals from ``seed``."""
    rng = np.random.default_rng(seed)
    e, r = error.double().numpy(), reference.double().numpy()
    out = {ALL: summary(e, r, rng)}
    for rule in sorted(set(rules or [])):
        pick = np.array([x == rule for x in rules or []])
        out[rule] = summary(e[pick], r[pick], rng)
    return out


def headline(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per rule: the median and pooled figures of ``all`` alone (a curve point's short form)."""
    return {rule: {k: round(v["all"][k], 4) for k in ("median", "pooled")} for rule, v in table.items()}


def format_interval(entry: dict[str, Any], key: str) -> str:
    """``0.412 [0.38, 0.44]``: a figure with its 90% interval."""
    low, high = entry[f"{key}_90"]
    return f"{entry[key]:.3f} [{low:.2f}, {high:.2f}]"


def markdown(table: dict[str, dict[str, Any]], title: str = SKILL_ON_O) -> list[str]:
    """The table as markdown rows: rule, bin, operators, median [90%], pooled [90%]."""
    lines = [
        f"| rule | operators | count | {title}: median over operators [90%] | pooled [90%] |",
        "|---|---|---:|---:|---:|",
    ]
    for rule, entry in table.items():
        rows = [("all", entry["all"])] + [
            (label, e) for kind in ("gain", "activation") for label, e in entry[kind].items()
        ]
        for label, e in rows:
            lines.append(
                f"| {rule} | {label} | {e['operators']} | {format_interval(e, 'median')} | {format_interval(e, 'pooled')} |"
            )
    return lines
