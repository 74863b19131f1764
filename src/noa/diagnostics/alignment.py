"""The guide's four alignment diagnostics, and the ladders that turn each number into a word.

Every metric is computed on held-out NOA rollouts:

1. VQ reconstruction: the tokenizer's normalized reconstruction MSE of the rollouts' features.
   Features are normalized to unit variance, so 1.0 is what predicting the mean would score.
2. Token diversity: codes used / codes available over all codebooks, and the Shannon entropy
   (bits) of each codebook's usage, averaged over codebooks.
3. Alignment correlation: cosine similarity between the projector's latent (mean over the
   sampled steps, exactly as training's L_latent) and ``cat(tokenizer.encode(features))``,
   and L_latent itself (their MSE).
4. Temporal consistency: the projected latent's norm at every step; its std over time
   divided by its mean (the coefficient of variation), averaged over samples.

Ladders are strict inequalities taken from the guide's "Interpretation" list (reconstruction
< 0.5, utilization > 50%, CV < 0.1 are Good; cosine > 0.5 is Moderate, as the guide's sample
output rates 0.623). A value exactly on a boundary gets the lower word; NaN is Poor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from noa.tokenizer import FrozenTokenizer

EXCELLENT, GOOD, MODERATE, POOR = "Excellent", "Good", "Moderate", "Poor"
RANK = {POOR: 0, MODERATE: 1, GOOD: 2, EXCELLENT: 3}
NORM_GUARD = 1e-12  # a latent whose mean norm is below this has an undefined CV (reported as 0)


@dataclass(frozen=True)
class Ladder:
    """Bounds for Excellent / Good / Moderate on one metric; anything else is Poor."""

    metric: str
    higher_is_better: bool
    excellent: float
    good: float
    moderate: float
    percent: bool = False  # print bounds as percentages

    def assess(self, value: float) -> str:
        for word, bound in ((EXCELLENT, self.excellent), (GOOD, self.good), (MODERATE, self.moderate)):
            if (value > bound) if self.higher_is_better else (value < bound):
                return word
        return POOR

    def describe(self) -> str:
        better, worse = (">", "<=") if self.higher_is_better else ("<", ">=")

        def show(bound: float) -> str:
            return f"{100 * bound:g}%" if self.percent else f"{bound:g}"

        return (
            f"Excellent {better} {show(self.excellent)}, Good {better} {show(self.good)}, "
            f"Moderate {better} {show(self.moderate)}, Poor {worse} {show(self.moderate)}"
        )


RECONSTRUCTION = Ladder("VQ reconstruction MSE (normalized)", False, 0.1, 0.5, 1.0)
DIVERSITY = Ladder("Token utilization", True, 0.8, 0.5, 0.25, percent=True)
CORRELATION = Ladder("Cosine similarity", True, 0.9, 0.7, 0.5)
CONSISTENCY = Ladder("Coefficient of variation", False, 0.05, 0.1, 0.2)
LADDERS = (RECONSTRUCTION, DIVERSITY, CORRELATION, CONSISTENCY)

VERDICT_RULE = (
    "EXCELLENT when no assessed section is below Good and more than half are Excellent; "
    "GOOD when none is Poor and more than half are Good or better; "
    "MODERATE when at most one is Poor; POOR otherwise. Skipped sections do not count."
)


@dataclass
class Reconstruction:
    total: float
    per_category: dict[str, float]
    assessment: str


@dataclass
class Codebook:
    category: str
    level: int
    size: int
    used: int
    entropy_bits: float
    counts: list[int]


@dataclass
class Diversity:
    used: int
    total: int
    utilization: float
    entropy_bits: float  # mean over codebooks
    entropy_ceiling_bits: float  # mean over codebooks of log2(min(N, K)): the most N samples allow
    codebooks: list[Codebook]
    assessment: str


@dataclass
class Alignment:
    cosine_mean: float
    cosine_std: float
    latent_mse: float
    sampled_steps: list[int]
    assessment: str


@dataclass
class Consistency:
    norm_mean: float
    norm_std: float
    cv: float
    assessment: str


def reconstruction(tokenizer: FrozenTokenizer, features: Mapping[str, torch.Tensor]) -> Reconstruction:
    """Section 1: normalized reconstruction MSE per category and in total (the tokenizer's own measure)."""
    mse = tokenizer.reconstruction_mse(features)
    per_category = {name: mse[name] for name in mse if name != "total"}
    return Reconstruction(total=mse["total"], per_category=per_category, assessment=RECONSTRUCTION.assess(mse["total"]))


def code_counts(indices: list[torch.Tensor], sizes: list[int]) -> list[torch.Tensor]:
    """Usage histogram of each codebook from its code indices ``[N]``."""
    return [torch.bincount(idx.cpu(), minlength=size) for idx, size in zip(indices, sizes)]


def entropy_bits(counts: torch.Tensor) -> float:
    """Shannon entropy (bits) of a usage histogram; 0 for an empty one."""
    p = counts.double() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return float((p * (1.0 / p).log2()).sum())  # this form gives +0.0, not -0.0, for one code


def diversity(counts: list[torch.Tensor], entries: list[tuple[str, int]]) -> Diversity:
    """Section 2: utilization over all codebooks and mean per-codebook entropy."""
    books = [
        Codebook(category, level, c.numel(), int((c > 0).sum()), entropy_bits(c), [int(v) for v in c])
        for (category, level), c in zip(entries, counts)
    ]
    used, total = sum(b.used for b in books), sum(b.size for b in books)
    n = int(counts[0].sum())
    utilization = used / total
    return Diversity(
        used=used,
        total=total,
        utilization=utilization,
        entropy_bits=sum(b.entropy_bits for b in books) / len(books),
        entropy_ceiling_bits=sum(math.log2(max(min(n, b.size), 1)) for b in books) / len(books),
        codebooks=books,
        assessment=DIVERSITY.assess(utilization),
    )


def alignment(projected: torch.Tensor, target: torch.Tensor, sampled_steps: list[int]) -> Alignment:
    """Section 3: projector latents ``[N, D]`` (mean over sampled steps) vs tokenizer latents ``[N, D]``.

    The std is over samples (population std, so one sample gives 0).
    """
    projected, target = projected.double(), target.double()
    cosine = F.cosine_similarity(projected, target, dim=1)
    mean = float(cosine.mean())
    return Alignment(
        cosine_mean=mean,
        cosine_std=float(cosine.std(unbiased=False)),
        latent_mse=float(F.mse_loss(projected, target)),
        sampled_steps=list(sampled_steps),
        assessment=CORRELATION.assess(mean),
    )


def consistency(norms: torch.Tensor) -> Consistency:
    """Section 4: from latent norms ``[N, T]`` (projector at every step).

    Per sample: mean and (population) std over the T steps, CV = std / mean. Reported: the
    sample means of each.
    """
    norms = norms.double()
    mean = norms.mean(dim=1)
    std = norms.std(dim=1, unbiased=False)
    cv = torch.where(mean > NORM_GUARD, std / mean.clamp_min(NORM_GUARD), torch.zeros_like(mean))
    value = float(cv.mean())
    return Consistency(
        norm_mean=float(mean.mean()), norm_std=float(std.mean()), cv=value, assessment=CONSISTENCY.assess(value)
    )


def final_verdict(assessments: list[str], aligned: bool) -> str:
    """The verdict line from the assessed sections' words (see :data:`VERDICT_RULE`).

    ``aligned``: whether the alignment sections were assessed; without them the verdict is
    about tokenization alone and says so.
    """
    n = len(assessments)
    ranks = [RANK[a] for a in assessments]
    poor = ranks.count(RANK[POOR])
    if n and min(ranks) >= RANK[GOOD] and 2 * ranks.count(RANK[EXCELLENT]) > n:
        level = "EXCELLENT"
    elif n and poor == 0 and 2 * sum(r >= RANK[GOOD] for r in ranks) > n:
        level = "GOOD"
    elif poor <= 1:
        level = "MODERATE"
    else:
        level = "POOR"
    if aligned:
        phrase = {
            "EXCELLENT": "L_latent provides strong alignment",
            "GOOD": "L_latent provides meaningful alignment",
            "MODERATE": "L_latent provides partial alignment; see the sections rated Moderate or Poor",
            "POOR": "L_latent alignment is weak; see docs/user-guide.md, Troubleshooting (`L_latent` stops falling)",
        }[level]
    else:
        phrase = {
            "EXCELLENT": "NOA outputs tokenize very well",
            "GOOD": "NOA outputs tokenize well",
            "MODERATE": "NOA outputs tokenize only partly well",
            "POOR": "NOA outputs tokenize poorly",
        }[level] + " (alignment not evaluated: no latent projector)"
    return f"{level} - {phrase}"
