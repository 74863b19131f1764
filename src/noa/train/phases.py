"""Which phase a batch belongs to: the one-step phase, then rollouts, teacher-forced first.

A run's batches are numbered by the global step g (0-based). Batches g < one_step_steps learn
the one-step map (:mod:`noa.train.one_step`); the others roll out (:mod:`noa.train.step`).
Teacher forcing only means something for rollouts, so ``--teacher-forcing-steps`` counts from
the first rollout batch: a recipe's N teacher-forced batches stay N whatever the one-step phase
is (counted from step 0, a one-step phase of N batches or more would swallow them).
"""

from __future__ import annotations

from noa.train.config import TrainConfig

ONE_STEP, ROLLOUT = "one-step", "rollout"
PHASES = (ONE_STEP, ROLLOUT)


def one_step_end(cfg: TrainConfig) -> int:
    """The first batch of the rollout phase (0 without a one-step phase)."""
    return cfg.one_step_steps or 0


def phase_of(cfg: TrainConfig, step: int) -> str:
    """The phase of batch ``step``."""
    return ONE_STEP if step < one_step_end(cfg) else ROLLOUT


def teacher_forcing_end(cfg: TrainConfig) -> int:
    """The first batch after teacher forcing (the rollout phase's first N batches)."""
    return one_step_end(cfg) + cfg.teacher_forcing_steps


def teacher_forced(cfg: TrainConfig, step: int) -> bool:
    """Whether rollout batch ``step`` starts each window from the CNO's state."""
    return one_step_end(cfg) <= step < teacher_forcing_end(cfg)
