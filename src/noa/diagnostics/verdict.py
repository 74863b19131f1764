"""The final verdict: the guide's alignment ladders weighed together with rollout quality.

The guide's verdict looks only at how the NOA's rollouts tokenize and align; a model can pass
it while its rollouts are far from the CNO's. So the verdict rates three criteria and takes the
lowest rating, naming the criterion (or criteria) that set it:

- **alignment ladders**: the guide's rule over sections 1-4 (:func:`.alignment.final_verdict`);
- **rollout error**: the NOA's horizon-averaged MSE over the noise floor (1 = the least any
  deterministic model can reach), on :data:`ROLLOUT_ERROR`; a NOA whose MSE is not at least
  10% below persistence's (holding the IC: an untrained U-AFNO starts there) is Poor whatever
  the ratio, since when the floor is close to persistence the ratio alone cannot tell skill.
  The other way round, a family with little noise has a floor far below persistence (below
  1/:data:`LOW_NOISE_HEADROOM` of it, or none at all): there a NOA with 5% of persistence's error
  is still 80x the floor, and the floor's ladder alone could never pass it. So there the NOA's
  MSE / persistence MSE (the median over operators, robust) rates too, on
  :data:`PERSISTENCE_SCALE`, and lifts the rating up to GOOD at most (EXCELLENT needs the
  floor). The criterion says which scale limits it, the model or the floor's, and what to try;
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
from noa.diagnostics.rollout_quality import FLOOR_GUARD, RolloutQuality

ROLLOUT_ERROR = Ladder("NOA MSE / noise floor (horizon average)", False, 1.2, 1.5, 2.5)
TOKEN_AGREEMENT = Ladder("Token agreement / CNO reference agreement (non-INITIAL codebooks)", True, 0.9, 0.75, 0.5)
LEVELS = ("POOR", "MODERATE", "GOOD", "EXCELLENT")  # index = RANK of the ladder word
PERSISTENCE_SCALE = Ladder(
    "NOA MSE / persistence MSE (median over operators; low-noise families)", False, 0.02, 0.1, 0.3
)
UNASSESSED = "UNASSESSED"
PERSISTENCE_MARGIN = 0.9  # a NOA needs an MSE below this fraction of persistence's to show skill
LOW_NOISE_HEADROOM = 100.0  # persistence / noise floor above this: the floor is too small to be the only scale
NOISE_DOMINATED = 2.0  # persistence / noise floor below this: the noise, not the dynamics, sets every error
PERSISTENCE_CAP = "GOOD"  # the best rating the persistence scale alone can give (EXCELLENT needs the floor)
TRY_MODEL = (
    "train longer (--epochs), give the one-step phase more batches (--one-step-steps) or use a larger model "
    "(--base-channels)"
)

VERDICT_RULE = (
    "the lowest rating of three criteria: the alignment ladders (the guide's rule: EXCELLENT when no assessed "
    "section of 1-4 is below Good and more than half are Excellent; GOOD when none is Poor and more than half are "
    "Good or better; MODERATE when at most one is Poor; POOR otherwise), the rollout error (NOA MSE / noise floor: "
    f"{ROLLOUT_ERROR.describe()}; POOR unless the MSE is at least {100 * (1 - PERSISTENCE_MARGIN):g}% below persistence's; "
    f"where the floor is below 1/{LOW_NOISE_HEADROOM:g} of persistence's MSE or zero (little noise), MSE / persistence "
    f"MSE, median over operators, rates too and can lift it up to {PERSISTENCE_CAP}: {PERSISTENCE_SCALE.describe()}) "
    "and the token agreement relative to two CNO "
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
    advice: str = ""  # what limits this rating and what to try next ("" when nothing needs saying)


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
    """How far the rollouts are from the least reachable error and from persistence's, which of
    the two scales limits the rating, and what to try next (see the module docstring)."""
    name = "rollout error"
    if not math.isfinite(q.overall_mse):
        return Criterion(name, "POOR", "NOA rollouts hold NaN/inf", "NOA rollouts hold NaN/inf")
    to_persistence = _to_persistence(q)
    if q.overall_ratio is None:
        return _noiseless(name, to_persistence)
    ratio, persistence = q.overall_ratio, q.overall_persistence_ratio
    against = "" if persistence is None else f" (persistence {persistence:.2f}x)"
    if persistence is not None and ratio >= PERSISTENCE_MARGIN * persistence:
        detail = (
            f"POOR - NOA MSE {ratio:.2f}x the noise floor, not {100 * (1 - PERSISTENCE_MARGIN):g}% below persistence's "
            f"({persistence:.2f}x): no skill beyond holding the initial condition"
        )
        advice = f"the model limits: it has not learned the dynamics yet; {TRY_MODEL}"
        if persistence < NOISE_DOMINATED:
            advice = (
                f"the noise limits, not only the model: persistence itself is {persistence:.2f}x the floor, so at this "
                "horizon even a perfect model is hardly better than holding the initial condition; judge it over a "
                "longer horizon (--timesteps)"
            )
        return Criterion(name, "POOR", detail, "rollouts are no better than holding the initial condition", advice)
    level = _level(ROLLOUT_ERROR.assess(ratio))
    if (
        persistence is not None
        and persistence > LOW_NOISE_HEADROOM
        and to_persistence is not None
        and LEVELS.index(level) < LEVELS.index(PERSISTENCE_CAP)
    ):
        return _low_noise(name, level, ratio, persistence, to_persistence)
    said = "" if to_persistence is None else f"; per operator, median MSE / persistence MSE {to_persistence:.2f}"
    advice = ""
    if LEVELS.index(level) < LEVELS.index("GOOD"):
        advice = (
            f"the model limits: its MSE is {ratio:.2f}x the noise floor, a floor within reach here (persistence is "
            f"{_times(persistence)} it); {TRY_MODEL}"
        )
    return Criterion(
        name,
        level,
        f"{level} - NOA MSE {ratio:.2f}x the noise floor{against}{said}",
        f"rollouts are {ratio:.2f}x the noise floor",
        advice,
    )


def _to_persistence(q: RolloutQuality) -> float | None:
    """The NOA's MSE / persistence MSE: the median over operators (robust), else the overall one."""
    if q.median_operator_persistence is not None:
        return q.median_operator_persistence
    return q.overall_mse / q.overall_persistence if q.overall_persistence > FLOOR_GUARD else None


def _times(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}x"


def _low_noise(name: str, floor_level: str, ratio: float, persistence: float, to_persistence: float) -> Criterion:
    """A family whose noise floor is far below persistence's MSE: the better of the floor's rating
    and persistence's (capped), saying which scale limits."""
    by_persistence = _capped(_level(PERSISTENCE_SCALE.assess(to_persistence)))
    level = max(floor_level, by_persistence, key=LEVELS.index)
    numbers = (
        f"NOA MSE {ratio:.3g}x the noise floor, which this family's little noise puts at 1/{persistence:.3g} of "
        f"persistence's MSE; per operator, median MSE / persistence MSE {to_persistence:.3g}"
    )
    if LEVELS.index(by_persistence) > LEVELS.index(floor_level):
        detail = (
            f"{level} - {numbers}: rated on persistence ({PERSISTENCE_SCALE.describe()}, at most {PERSISTENCE_CAP}); "
            f"on the floor alone it would be {floor_level}"
        )
        phrase = (
            f"rollouts are {to_persistence:.2f} of persistence's MSE (median operator), {ratio:.3g}x a tiny noise floor"
        )
        advice = (
            "the noise floor's scale limits, not the model: with so little noise even a good emulator sits far above "
            f"the floor; read MSE / persistence for this family, and to close in on the floor {TRY_MODEL}"
        )
    else:
        detail = f"{level} - {numbers}: not better on persistence's scale either"
        phrase = (
            f"rollouts are {to_persistence:.2f} of persistence's MSE (median operator) and {ratio:.3g}x the noise floor"
        )
        advice = f"the model limits: it is far from persistence's error as well as from the floor; {TRY_MODEL}"
    return Criterion(name, level, detail, phrase, advice)


def _noiseless(name: str, to_persistence: float | None) -> Criterion:
    """A CNO without noise has no floor: rated on persistence's scale alone (capped), when it has one."""
    if to_persistence is None:
        return Criterion(
            name,
            None,
            "not evaluated: the noise floor is zero (the CNO is noiseless here) and so is persistence's error",
            "",
        )
    if to_persistence >= PERSISTENCE_MARGIN:
        detail = (
            f"POOR - no noise floor (a noiseless CNO); per operator, median MSE / persistence MSE {to_persistence:.2f}"
        )
        advice = f"the model limits: it has not learned the dynamics yet; {TRY_MODEL}"
        return Criterion(name, "POOR", detail, "rollouts are no better than holding the initial condition", advice)
    level = _capped(_level(PERSISTENCE_SCALE.assess(to_persistence)))
    detail = (
        f"{level} - no noise floor (the CNO is noiseless here), so rated on persistence: per operator, median MSE / "
        f"persistence MSE {to_persistence:.3g} ({PERSISTENCE_SCALE.describe()}, at most {PERSISTENCE_CAP})"
    )
    advice = "" if level == PERSISTENCE_CAP else f"the model limits: {TRY_MODEL}"
    return Criterion(
        name, level, detail, f"rollouts are {to_persistence:.2f} of persistence's MSE (median operator)", advice
    )


def _capped(level: str) -> str:
    """A rating on persistence's scale, at most PERSISTENCE_CAP."""
    return min(level, PERSISTENCE_CAP, key=LEVELS.index)


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
