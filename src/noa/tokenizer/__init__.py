"""The frozen behavioural tokenizer: a categorical hierarchical VQ-VAE over rollout features."""

from noa.tokenizer.io import check_compatible, load_config, load_tokenizer, save_tokenizer, tokenizer_info
from noa.tokenizer.model import FAMILIES, CategoricalVQVAE, TokenizerConfig
from noa.tokenizer.train import codebook_stats, evaluate_tokenizer, reconstruction_mse, train_tokenizer

__all__ = [
    "FAMILIES",
    "CategoricalVQVAE",
    "TokenizerConfig",
    "check_compatible",
    "codebook_stats",
    "evaluate_tokenizer",
    "load_config",
    "load_tokenizer",
    "reconstruction_mse",
    "save_tokenizer",
    "tokenizer_info",
    "train_tokenizer",
]
