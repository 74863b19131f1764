"""Behavioral features of rollouts: INITIAL (frame 0), TEMPORAL (per frame), SUMMARY (whole rollout).

One code path, rollout -> :func:`rollout_statistics` -> :func:`features_from_statistics`, serves
both the tokenizer's training data (:func:`compute_features`) and the NOA's own rollouts during
training, so the tokenizer sees exactly what training feeds it.
"""

from noa.features.compute import compute_features, features_from_statistics
from noa.features.registry import FEATURE_CATEGORIES, FeatureSpec, feature_dims, feature_names, feature_specs
from noa.features.statistics import RolloutStatistics, frame_gradient, rollout_statistics

__all__ = [
    "FEATURE_CATEGORIES",
    "FeatureSpec",
    "RolloutStatistics",
    "compute_features",
    "feature_dims",
    "feature_names",
    "feature_specs",
    "features_from_statistics",
    "frame_gradient",
    "rollout_statistics",
]
