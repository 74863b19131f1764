"""How close NOA rollouts come to the CNO ground truth, measured against floors that say what
a perfect θ-conditioned model would score.

The CNO is stochastic, so a perfect *deterministic* predictor still misses any one realization
by the noise. For each held-out (θ, IC) we replay CNO realization 0 (the target), realization 1
of the same operator, and one rollout of *another draw of the family at the same θ* (another
noise seed; the family draws the operator from θ alone, so this is another noise stream of the
same operator; a family whose weights came from a per-sample seed would give another operator
here). With X, X' independent draws around the conditional mean m, E|X - X'|^2 = 2 Var and the
best any deterministic prediction can do against X is E|m - X|^2 = Var. So, per step:

- noise floor = MSE(realization 0, realization 1) / 2: the expected MSE of the mean rollout
  given (θ, IC) *and the operator*. NOA/noise floor = 1 is perfect; nothing deterministic
  does better in expectation.
- family floor = MSE(realization 0, the other draw) / 2: the expected MSE of the mean rollout
  given (θ, IC) alone, i.e. what a perfect θ-conditioned model scores. family/noise floor = 1
  (up to sampling error) confirms θ identifies the operator; above 1 it says by how much the
  best θ-conditioned model must exceed the noise floor.
- persistence = MSE(IC held constant, realization 0): the trivial baseline.

Scale-free errors follow the_well's definitions, per channel over the grid, then averaged over
channels and samples: nRMSE = sqrt(MSE / (mean(y^2) + eps)) and VRMSE = sqrt(MSE / (Var(y) + eps)),
y the CNO frame, eps = 1e-7. VRMSE 1 is the error of predicting each frame's spatial mean.

VRMSE divides by a frame's spatial spread, so the few frames that are nearly uniform (a decayed
or saturated state) give VRMSE in the tens or hundreds whatever the error: the median over samples
is the headline figure, the mean is kept beside it with the count of frames above
:data:`VRMSE_INFLATED` that explain the gap.

Horizon-mean MSE / noise floor (mean MSE / mean floor) is weighted towards the operators of
largest MSE, so the median over operators of each one's own horizon-mean ratio is given too. That
median is itself led by the operators whose CNO is nearly noise-free (a tiny floor makes any error
a huge ratio: 57300 beside an overall 54 was seen), so the robust per-operator figure is each
operator's MSE / persistence MSE (below 1: better than holding its IC), whose denominator no
operator makes tiny; all of them per update rule when the parameter space has one (residual x + dt·O(x) and convex
α·x + (1-α)·O(x) behave differently).

Token agreement compares the tokenizer's codes of a rollout with those of CNO realization 0, per
(sample, codebook); the agreement between realizations 0 and 1 is the reference: what two
equally valid rollouts share. The INITIAL category's codebooks encode frame 0, the IC, which
every rollout of a sample shares: they agree by construction (holding the IC scores about half
the reference on them). The judged figure therefore counts only the other categories' codebooks
(SUMMARY and TEMPORAL: what the rollout does); the all-codebook figure is kept beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-7  # the_well's guard in nRMSE / VRMSE denominators
FLOOR_GUARD = 1e-12  # floors at or below this give no ratio
INITIAL = "initial"  # the tokenizer category that encodes frame 0 (the IC)
VRMSE_INFLATED = 10.0  # frames above this VRMSE are counted: they are what lifts the mean above the median


@dataclass
class StepErrors:
    """Per-sample, per-step errors ``[B, T]`` (steps 1..T) of one batch."""

    mse: torch.Tensor  # NOA vs CNO realization 0
    gap: torch.Tensor  # CNO realization 0 vs 1 (same operator)
    family_gap: torch.Tensor  # CNO realization 0 vs another family draw at the same θ (NaN when not replayed)
    persistence: torch.Tensor  # IC held constant vs CNO realization 0
    nrmse: torch.Tensor  # the_well nRMSE of the NOA, mean over channels
    vrmse: torch.Tensor  # the_well VRMSE of the NOA, mean over channels
    vrmse_persistence: torch.Tensor
    vrmse_floor: torch.Tensor  # sqrt(noise floor / Var(y)) per channel: a perfect model's VRMSE

    @staticmethod
    def concat(parts: list[StepErrors]) -> StepErrors:
        """The batches' errors stacked along the sample axis."""
        return StepErrors(*(torch.cat([getattr(p, name) for p in parts]) for name in StepErrors.__dataclass_fields__))


@dataclass
class RuleQuality:
    """Horizon-mean figures of the operators that share one update rule."""

    operators: int
    ratio: float | None  # mean NOA MSE / mean noise floor over these operators and every step
    persistence_ratio: float | None  # the same for the IC held constant
    median_operator_ratio: float | None  # median over these operators of their own horizon-mean ratio
    median_operator_persistence: float | None  # median over these operators of their MSE / persistence MSE


@dataclass
class RolloutQuality:
    steps: list[int]  # 1..T
    mse: list[float]  # per step, mean over samples
    nrmse: list[float]  # per step, mean over samples (the_well)
    vrmse: list[float]  # per step, mean over samples (the_well); near-uniform frames inflate it
    vrmse_median: list[float]  # per step, median over samples: the headline VRMSE
    floor: list[float]  # per step: noise floor = realization gap / 2
    realization_gap: list[float]
    floor_ratio: list[float | None]  # NOA MSE / noise floor
    family_floor: list[float | None]  # per step: family gap / 2
    persistence: list[float]  # per step: MSE of the IC held constant
    persistence_ratio: list[float | None]  # persistence / noise floor
    vrmse_persistence: list[float]
    vrmse_persistence_median: list[float]
    vrmse_floor: list[float]
    vrmse_floor_median: list[float]
    horizons: list[int]  # the steps singled out in the printed report
    overall_mse: float
    overall_nrmse: float
    overall_vrmse: float  # mean over every (sample, step) frame
    overall_vrmse_median: float  # median over every (sample, step) frame: the headline
    vrmse_frames_inflated: int  # frames with VRMSE > VRMSE_INFLATED
    vrmse_frames: int  # frames counted (samples x steps)
    overall_floor: float
    overall_ratio: float | None  # horizon-averaged: mean NOA MSE / mean noise floor
    overall_family_floor: float | None
    family_to_noise: float | None  # mean family floor / mean noise floor (1 = θ identifies the operator)
    overall_persistence: float
    overall_persistence_ratio: float | None
    median_operator_ratio: float | None  # median over operators of each one's horizon-mean MSE / noise floor
    median_operator_persistence: float | None  # median over operators of each one's MSE / persistence MSE: robust
    by_rule: dict[str, RuleQuality] | None  # per update rule; None when the parameter space has none
    # Token agreement (None without a tokenizer); every codebook, INITIAL included:
    token_agreement: float | None  # NOA vs CNO realization 0
    token_agreement_reference: float | None  # CNO realization 0 vs 1
    token_agreement_per_codebook: list[float] | None
    token_agreement_persistence: float | None  # IC held constant vs CNO realization 0
    # The judged figures: the codebooks of every category but INITIAL (None without a tokenizer)
    token_categories: list[str] | None  # the category of each codebook
    token_agreement_non_initial: float | None
    token_agreement_reference_non_initial: float | None
    token_agreement_persistence_non_initial: float | None


def _scaled_errors(
    pred: torch.Tensor, target: torch.Tensor, extra: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """the_well's nRMSE and VRMSE of [B, T, C, H, W] frames, mean over channels: [B, T]."""
    mse_c = (pred - target).pow(2).mean(dim=(3, 4))
    power = target.pow(2).mean(dim=(3, 4))
    var = target.var(dim=(3, 4), unbiased=False)
    return {
        "nrmse": (mse_c / (power + EPS)).sqrt().mean(dim=2),
        "vrmse": (mse_c / (var + EPS)).sqrt().mean(dim=2),
    }


def step_errors(noa: torch.Tensor, cno: torch.Tensor, other: torch.Tensor | None = None) -> StepErrors:
    """Errors of NOA frames ``[B, T+1, C, H, W]`` against CNO replays ``[B, 2, T+1, C, H, W]``
    (realizations 0 and 1 of each operator); ``other`` ``[B, T+1, C, H, W]`` is a rollout of
    another family draw at the same θ and IC (the family floor is NaN without it)."""
    noa, x0, x1 = noa[:, 1:].double(), cno[:, 0, 1:].double(), cno[:, 1, 1:].double()
    ic = cno[:, 0, :1].double().expand_as(x0)
    dims = (2, 3, 4)
    gap = (x1 - x0).pow(2).mean(dim=dims)
    family = (
        (other[:, 1:].double() - x0).pow(2).mean(dim=dims) if other is not None else torch.full_like(gap, float("nan"))
    )
    scaled, scaled_persistence = _scaled_errors(noa, x0), _scaled_errors(ic, x0)
    floor_c = (x1 - x0).pow(2).mean(dim=(3, 4)) / 2
    return StepErrors(
        mse=(noa - x0).pow(2).mean(dim=dims).cpu(),
        gap=gap.cpu(),
        family_gap=family.cpu(),
        persistence=(ic - x0).pow(2).mean(dim=dims).cpu(),
        nrmse=scaled["nrmse"].cpu(),
        vrmse=scaled["vrmse"].cpu(),
        vrmse_persistence=scaled_persistence["vrmse"].cpu(),
        vrmse_floor=(floor_c / (x0.var(dim=(3, 4), unbiased=False) + EPS)).sqrt().mean(dim=2).cpu(),
    )


def report_horizons(timesteps: int) -> list[int]:
    """First step, quarter, half and full horizon (deduplicated)."""
    return sorted({1, max(1, timesteps // 4), max(1, timesteps // 2), timesteps})


def _ratio(mse: float | None, floor: float | None) -> float | None:
    if mse is None or floor is None or mse != mse or floor != floor:
        return None
    return mse / floor if floor > FLOOR_GUARD else None


def _nan_to_none(values: list[float]) -> list[float | None]:
    return [None if v != v else v for v in values]


def _agreement(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    """Share of (sample, codebook) codes two tokenizations have in common; None without both."""
    return None if a is None or b is None else float((a == b).double().mean())


def _dynamic(tokens: torch.Tensor | None, keep: list[bool]) -> torch.Tensor | None:
    """The columns of the codebooks outside INITIAL; None when there are none (or no tokens)."""
    return None if tokens is None or not any(keep) else tokens[:, torch.tensor(keep)]


def _median_operator_ratio(mse: torch.Tensor, reference: torch.Tensor) -> float | None:
    """Median over samples ``[N, T]`` of each one's horizon-mean MSE / ``reference`` (the noise
    floor or persistence; samples without one left out)."""
    per_floor = reference.mean(dim=1)
    per_ratio = mse.mean(dim=1)[per_floor > FLOOR_GUARD] / per_floor[per_floor > FLOOR_GUARD]
    median = float(per_ratio.median()) if per_ratio.numel() else float("nan")
    return None if median != median else median


def _by_rule(
    mse: torch.Tensor, floor: torch.Tensor, persistence: torch.Tensor, rules: list[str]
) -> dict[str, RuleQuality]:
    """Horizon-mean figures of each update rule's samples."""
    out = {}
    for rule in sorted(set(rules)):
        pick = torch.tensor([r == rule for r in rules])
        mean_floor = float(floor[pick].mean())
        out[rule] = RuleQuality(
            operators=int(pick.sum()),
            ratio=_ratio(float(mse[pick].mean()), mean_floor),
            persistence_ratio=_ratio(float(persistence[pick].mean()), mean_floor),
            median_operator_ratio=_median_operator_ratio(mse[pick], floor[pick]),
            median_operator_persistence=_median_operator_ratio(mse[pick], persistence[pick]),
        )
    return out


def summarize(
    errors: StepErrors,
    tokens_noa: torch.Tensor | None,
    tokens_cno: torch.Tensor | None,
    tokens_cno_other: torch.Tensor | None,
    tokens_persistence: torch.Tensor | None = None,
    *,
    categories: list[str] | None = None,
    rules: list[str] | None = None,
) -> RolloutQuality:
    """Aggregate all samples' ``StepErrors`` ``[N, T]`` and code indices ``[N, E]`` (None
    without a tokenizer: the token agreements are then None).

    ``categories`` names each codebook's tokenizer category (the tokenizer's ``entries``), needed
    with tokens to leave INITIAL out of the judged agreement; ``rules`` gives each sample's update
    rule for the per-rule figures (None: no per-rule split).
    """
    if tokens_noa is not None and (categories is None or len(categories) != tokens_noa.shape[1]):
        raise ValueError(f"summarize needs one category per codebook ({tokens_noa.shape[1]}), got {categories}")
    if rules is not None and len(rules) != errors.mse.shape[0]:
        raise ValueError(f"summarize needs one update rule per sample ({errors.mse.shape[0]}), got {len(rules)}")
    keep = [c != INITIAL for c in categories or []]
    mse, floor, family, persistence = errors.mse, errors.gap / 2, errors.family_gap / 2, errors.persistence
    mse_t, floor_t, persistence_t = (
        mse.mean(dim=0).tolist(),
        floor.mean(dim=0).tolist(),
        persistence.mean(dim=0).tolist(),
    )
    family_t = _nan_to_none(family.mean(dim=0).tolist())
    overall_mse, overall_floor, overall_persistence = float(mse.mean()), float(floor.mean()), float(persistence.mean())
    overall_family = None if torch.isnan(family).any() else float(family.mean())
    per_codebook = (
        None if tokens_noa is None or tokens_cno is None else (tokens_noa == tokens_cno).double().mean(dim=0).tolist()
    )
    return RolloutQuality(
        steps=list(range(1, mse.shape[1] + 1)),
        mse=mse_t,
        nrmse=errors.nrmse.mean(dim=0).tolist(),
        vrmse=errors.vrmse.mean(dim=0).tolist(),
        vrmse_median=errors.vrmse.median(dim=0).values.tolist(),
        floor=floor_t,
        realization_gap=errors.gap.mean(dim=0).tolist(),
        floor_ratio=[_ratio(m, f) for m, f in zip(mse_t, floor_t)],
        family_floor=family_t,
        persistence=persistence_t,
        persistence_ratio=[_ratio(p, f) for p, f in zip(persistence_t, floor_t)],
        vrmse_persistence=errors.vrmse_persistence.mean(dim=0).tolist(),
        vrmse_persistence_median=errors.vrmse_persistence.median(dim=0).values.tolist(),
        vrmse_floor=errors.vrmse_floor.mean(dim=0).tolist(),
        vrmse_floor_median=errors.vrmse_floor.median(dim=0).values.tolist(),
        horizons=report_horizons(mse.shape[1]),
        overall_mse=overall_mse,
        overall_nrmse=float(errors.nrmse.mean()),
        overall_vrmse=float(errors.vrmse.mean()),
        overall_vrmse_median=float(errors.vrmse.median()),
        vrmse_frames_inflated=int((errors.vrmse > VRMSE_INFLATED).sum()),
        vrmse_frames=errors.vrmse.numel(),
        overall_floor=overall_floor,
        overall_ratio=_ratio(overall_mse, overall_floor),
        overall_family_floor=overall_family,
        family_to_noise=_ratio(overall_family, overall_floor),
        overall_persistence=overall_persistence,
        overall_persistence_ratio=_ratio(overall_persistence, overall_floor),
        median_operator_ratio=_median_operator_ratio(mse, floor),
        median_operator_persistence=_median_operator_ratio(mse, persistence),
        by_rule=None if rules is None else _by_rule(mse, floor, persistence, rules),
        token_agreement=_agreement(tokens_noa, tokens_cno),
        token_agreement_reference=_agreement(tokens_cno, tokens_cno_other),
        token_agreement_per_codebook=per_codebook,
        token_agreement_persistence=_agreement(tokens_persistence, tokens_cno),
        token_categories=None if tokens_noa is None else list(categories or []),
        token_agreement_non_initial=_agreement(_dynamic(tokens_noa, keep), _dynamic(tokens_cno, keep)),
        token_agreement_reference_non_initial=_agreement(_dynamic(tokens_cno, keep), _dynamic(tokens_cno_other, keep)),
        token_agreement_persistence_non_initial=_agreement(
            _dynamic(tokens_persistence, keep), _dynamic(tokens_cno, keep)
        ),
    )
