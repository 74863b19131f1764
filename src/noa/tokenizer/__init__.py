"""The frozen behavioural tokenizer: a categorical hierarchical VQ-VAE over rollout features,
and the protocol any tokenizer class meets to take its place (:mod:`.protocol`)."""

from noa.tokenizer.frozen import FrozenTokenizer, open_tokenizer
from noa.tokenizer.io import check_compatible, load_config, load_tokenizer, save_tokenizer, tokenizer_info
from noa.tokenizer.model import FEATURE_CATEGORIES, CategoricalVQVAE, TokenizerConfig, reconstruction_mse
from noa.tokenizer.protocol import TokenizerProtocol
from noa.tokenizer.train import codebook_stats, evaluate_tokenizer, train_tokenizer

__all__ = [
    "FEATURE_CATEGORIES",
    "CategoricalVQVAE",
    "FrozenTokenizer",
    "TokenizerConfig",
    "TokenizerProtocol",
    "check_compatible",
    "codebook_stats",
    "evaluate_tokenizer",
    "load_config",
    "load_tokenizer",
    "open_tokenizer",
    "reconstruction_mse",
    "save_tokenizer",
    "tokenizer_info",
    "train_tokenizer",
]
