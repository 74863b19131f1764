"""Behavioral features of rollouts: INITIAL (frame 0), TEMPORAL (per frame), SUMMARY (whole rollout).

One function, :func:`compute_features`, serves both the tokenizer's training data and the
NOA's own rollouts during training, so the tokenizer sees exactly what training feeds it.
"""

from noa.features.compute import compute_features
from noa.features.registry import FAMILIES, FeatureSpec, feature_dims, feature_names, feature_specs

__all__ = ["FAMILIES", "FeatureSpec", "compute_features", "feature_dims", "feature_names", "feature_specs"]
