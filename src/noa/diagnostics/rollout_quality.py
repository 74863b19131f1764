"""How close NOA rollouts come to the CNO ground truth, measured against the CNO's own noise.

The CNO is stochastic, so a perfect *deterministic* predictor still misses any one
realization by the noise. We replay two realizations (0 and 1) of each held-out operator and
IC and compare the NOA against realization 0. With X0, X1 independent draws around the
conditional mean m, E|X0 - X1|^2 = 2 Var, and the best any deterministic prediction can do
against X0 is E|m - X0|^2 = Var. So:

- realization gap = MSE(X0, X1) per step;
- stochastic floor = gap / 2, an unbiased estimate of the least MSE a deterministic
  predictor can reach against realization 0;
- floor ratio = NOA MSE / floor: about 1 means "as good as the noise allows", well above 1
  means room to improve. Undefined (None) where the floor is ~0 (a noiseless CNO).

Token agreement compares the tokenizer's codes of the NOA rollout with those of CNO
realization 0, per (sample, codebook); the agreement between realizations 0 and 1 is the
reference: what two equally valid rollouts share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STD_GUARD = 1e-6  # a CNO frame std below this is raised to it before normalizing the RMSE
FLOOR_GUARD = 1e-12  # floors at or below this give no ratio


@dataclass
class StepErrors:
    """Per-sample, per-step errors ``[B, T]`` (steps 1..T) of one batch."""

    mse: torch.Tensor  # NOA vs CNO realization 0
    gap: torch.Tensor  # CNO realization 0 vs 1
    ref_std: torch.Tensor  # std of the CNO realization-0 frame over (C, H, W)

    @staticmethod
    def concat(parts: list[StepErrors]) -> StepErrors:
        """The batches' errors stacked along the sample axis."""
        return StepErrors(*(torch.cat([getattr(p, name) for p in parts]) for name in ("mse", "gap", "ref_std")))


@dataclass
class RolloutQuality:
    steps: list[int]  # 1..T
    mse: list[float]  # per step, mean over samples
    nrmse: list[float]  # per step, mean over samples of RMSE / std(CNO frame)
    floor: list[float]  # per step: realization gap / 2
    realization_gap: list[float]
    floor_ratio: list[float | None]
    horizons: list[int]  # the steps singled out in the printed report
    overall_mse: float
    overall_nrmse: float
    overall_floor: float
    overall_ratio: float | None
    token_agreement: float  # NOA vs CNO realization 0
    token_agreement_reference: float  # CNO realization 0 vs 1
    token_agreement_per_codebook: list[float]


def step_errors(noa: torch.Tensor, cno: torch.Tensor) -> StepErrors:
    """Errors of NOA frames ``[B, T+1, C, H, W]`` against CNO replays ``[B, 2, T+1, C, H, W]``."""
    noa, x0, x1 = noa[:, 1:].double(), cno[:, 0, 1:].double(), cno[:, 1, 1:].double()
    dims = (2, 3, 4)
    return StepErrors(
        mse=(noa - x0).pow(2).mean(dim=dims).cpu(),
        gap=(x1 - x0).pow(2).mean(dim=dims).cpu(),
        ref_std=x0.std(dim=dims, unbiased=False).cpu(),
    )


def report_horizons(timesteps: int) -> list[int]:
    """First step, quarter, half and full horizon (deduplicated)."""
    return sorted({1, max(1, timesteps // 4), max(1, timesteps // 2), timesteps})


def _ratio(mse: float, floor: float) -> float | None:
    return mse / floor if floor > FLOOR_GUARD else None


def summarize(
    errors: StepErrors,
    tokens_noa: torch.Tensor,
    tokens_cno: torch.Tensor,
    tokens_cno_other: torch.Tensor,
) -> RolloutQuality:
    """Aggregate all samples' ``StepErrors`` ``[N, T]`` and code indices ``[N, E]``."""
    mse, gap = errors.mse, errors.gap
    nrmse = mse.sqrt() / errors.ref_std.clamp_min(STD_GUARD)
    floor = gap / 2
    mse_t, floor_t = mse.mean(dim=0).tolist(), floor.mean(dim=0).tolist()
    overall_mse, overall_floor = float(mse.mean()), float(floor.mean())
    agree = (tokens_noa == tokens_cno).double()
    return RolloutQuality(
        steps=list(range(1, mse.shape[1] + 1)),
        mse=mse_t,
        nrmse=nrmse.mean(dim=0).tolist(),
        floor=floor_t,
        realization_gap=gap.mean(dim=0).tolist(),
        floor_ratio=[_ratio(m, f) for m, f in zip(mse_t, floor_t)],
        horizons=report_horizons(mse.shape[1]),
        overall_mse=overall_mse,
        overall_nrmse=float(nrmse.mean()),
        overall_floor=overall_floor,
        overall_ratio=_ratio(overall_mse, overall_floor),
        token_agreement=float(agree.mean()),
        token_agreement_reference=float((tokens_cno == tokens_cno_other).double().mean()),
        token_agreement_per_codebook=agree.mean(dim=0).tolist(),
    )
