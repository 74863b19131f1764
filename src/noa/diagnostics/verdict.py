"""The final verdict: the guide's alignment ladders weighed together with rollout quality.

The guide's verdict looks only at how the NOA's rollouts tokenize and align; a model can pass
it while its rollouts are far from the CNO's. So the verdict rates three criteria and takes the
lowest rating, naming the criterion (or criteria) that set it:

- **alignment ladders**: the guide's rule over sections 1-4 (:func:`.alignment.final_verdict`);
- **rollout error**: the NOA's horizon-averaged MSE over the noise floor (1 = the least any
  deterministic model can reach), on :data:`ROLLOUT_ERROR`; a NOA whose MSE is not at least
  10% below persistence's (holding the IC: an untrained U-AFNO starts there) is Poor whatever
  the ratio, since when the floor is close to persistence the ratio alone cannot tell skill;
- **token agreement**: the share of codes the NOA's rollouts share with CNO realization 0,
  over the share two CNO realizations share (the reference), on :data:`TOKEN_AGREEMENT`;
  counted on the codebooks outside the INITIAL category, which encode the IC and agree by
  construction (the all-codebook figures are shown beside, not judged).

A criterion that cannot be evaluated (no tokenizer, a noiseless CNO giving no floor) is left
out and the report says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from noa.diagnostics.alignment import RANK, Ladder
from noa.diagnostics.rollout_quality import RolloutQuality

ROLLOUT_ERROR = Ladder("NOA MSE / noise floor (horizon average)", False, 1.2, 1.5, 2.5)
TOKEN_AGREEMENT = Ladder("Token agreement / CNO reference agreement (non-INITIAL codebooks)", True, 0.9, 0.75, 0.5)
LEVELS = ("POOR", "MODERATE", "GOOD", "EXCELLENT")  # index = RANK of the ladder word
UNASSESSED = "UNASSESSED"
PERSISTENCE_MARGIN = 0.9  # a NOA needs an MSE below this fraction of persistence's to show skill

VERDICT_RULE = (
    "the lowest rating of three criteria: the alignment ladders (the guide's rule: EXCELLENT when no assessed "
    "section of 1-4 is below Good and more than half are Excellent; GOOD when none is Poor and more than half are "
    "Good or better; MODERATE when at most one is Poor; POOR otherwise), the rollout error (NOA MSE / noise floor: "
    f"{ROLLOUT_ERROR.describe()}; POOR unless the MSE is at least {100 * (1 - PERSISTENCE_MARGIN):g}% below persistence's) and the token agreement relative to two CNO "
    f"realizations' on the codebooks outside INITIAL, which encode the IC and agree by construction ({TOKEN_AGREEMENT.describe()}). "
    "Criteria that cannot be evaluated do not count."
)


@dataclass
class Criterion:
    """One criterion's rating (None when it could not be evaluated) and the numbers behind it."""

    name: str
    level: str | None
    detail: str  # the numbers, for the report
    phrase: str  # what the verdict line says when this criterion decides


@dataclass
class Verdict:
    level: str
    line: str  # "LEVEL - phrase", the report's Final Verdict
    criteria: list[Criterion]
    decided_by: list[str]  # names of the criteria at the lowest rating


def _level(word: str) -> str:
    """A ladder word (Excellent ... Poor) as a verdict level (EXCELLENT ... POOR)."""
    return LEVELS[RANK[word]]


def alignment_criterion(guide_verdict: str | None, skipped: str | None) -> Criterion:
    """The guide's verdict line over sections 1-4 (None when they were skipped)."""
    name = "alignment ladders (sections 1-4)"
    if guide_verdict is None:
        return Criterion(name, None, f"not evaluated ({skipped})", "")
    level, _, phrase = guide_verdict.partition(" - ")
    return Criterion(name, level, guide_verdict, phrase)


def rollout_criterion(q: RolloutQuality) -> Criterion:
    """How far the rollouts are from the least reachable error, and whether they beat persistence."""
    name = "rollout error"
    if not math.isfinite(q.overall_mse):
        return Criterion(name, "POOR", "NOA rollouts hold NaN/inf", "NOA rollouts hold NaN/inf")
    if q.overall_ratio is None:
        return Criterion(
            name, None, "not evaluated: the noise floor is zero (the CNO is noiseless here), so there is no ratio", ""
        )
    ratio, persistence = q.overall_ratio, q.overall_persistence_ratio
    against = "" if persistence is None else f" (persistence {persistence:.2f}x)"
    if persistence is not None and ratio >= PERSISTENCE_MARGIN * persistence:
        detail = (
            f"POOR - NOA MSE {ratio:.2f}x the noise floor, not {100 * (1 - PERSISTENCE_MARGIN):g}% below persistence's "
            f"({persistence:.2f}x): no skill beyond holding the initial condition"
        )
        return Criterion(name, "POOR", detail, "rollouts are no better than holding the initial condition")
    level = _level(ROLLOUT_ERROR.assess(ratio))
    return Criterion(
        name,
        level,
        f"{level} - NOA MSE {ratio:.2f}x the noise floor{against}",
        f"rollouts are {ratio:.2f}x the noise floor",
    )


def agreement_criterion(q: RolloutQuality, skipped: str | None) -> Criterion:
    """The NOA's token agreement with the CNO relative to what two CNO realizations share, on
    the codebooks outside INITIAL (which encode the shared IC and agree by construction)."""
    name = "token agreement"
    if q.token_agreement is None or q.token_agreement_reference is None:
        return Criterion(name, None, f"not evaluated ({skipped})", "")
    agree, reference = q.token_agreement_non_initial, q.token_agreement_reference_non_initial
    if agree is None or reference is None:
        return Criterion(name, None, "not evaluated: the tokenizer has no codebooks outside INITIAL", "")
    if reference <= 0:
        return Criterion(
            name, None, "not evaluated: two CNO realizations share no non-INITIAL code, so there is no reference", ""
        )
    relative = agree / reference
    level = _level(TOKEN_AGREEMENT.assess(relative))
    detail = (
        f"{level} - {100 * agree:.1f}% of non-INITIAL codes agree with the CNO's, against {100 * reference:.1f}% between "
        f"two CNO realizations ({relative:.2f} of the reference; all codebooks {100 * q.token_agreement:.1f}% against "
        f"{100 * q.token_agreement_reference:.1f}%)"
    )
    phrase = f"tokens agree on {100 * agree:.0f}% of non-INITIAL codes against {100 * reference:.0f}% between CNO realizations"
    return Criterion(name, level, detail, phrase)


def combine(criteria: list[Criterion]) -> Verdict:
    """The lowest rating among the evaluated criteria, with the criteria that set it."""
    rated = [c for c in criteria if c.level is not None]
    if not rated:
        return Verdict(UNASSESSED, f"{UNASSESSED} - no criterion could be evaluated", criteria, [])
    level = min((c.level for c in rated if c.level is not None), key=LEVELS.index)
    deciding = [c for c in rated if c.level == level]
    line = f"{level} - " + "; ".join(c.phrase for c in deciding)
    return Verdict(level, line, criteria, [c.name for c in deciding])
