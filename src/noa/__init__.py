"""noa: Neural Operator Agents trained against stochastic CNO rollouts.

The public API (reference and a runnable example: ``docs/api.md``)::

    from noa import load, make_initial_condition, replay_cno, CNO_SPACE

    agent = load("checkpoints/noa/best_model.pt")             # a trained NOA, on CUDA when present
    ic = make_initial_condition("sinusoid", grid=32, seed=7)  # [C, H, W]
    theta = CNO_SPACE.encode({...})                            # θ from physical values
    noa_frames = agent.rollout(ic, theta, timesteps=16)        # [B, T+1, C, H, W]
    cno_frames = replay_cno(ic, theta, 16, noise_seed=0)       # [B, M, T+1, C, H, W]

Names are imported on first use, so ``import noa`` stays cheap (no torch) until one is needed.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from noa.errors import NoaError

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "load": "noa.api.agent",
    "NeuralOperatorAgent": "noa.api.agent",
    "as_theta": "noa.api.inputs",
    "make_initial_condition": "noa.api.initial",
    "replay_cno": "noa.api.ground_truth",
    "load_tokenizer": "noa.api.tokens",
    "Tokenizer": "noa.api.tokens",
    "TokenizerProtocol": "noa.tokenizer.protocol",
    "compute_features": "noa.features",
    "CNO_SPACE": "noa.operators.space",
    "ParameterSpace": "noa.operators.space",
    "IC_KINDS": "noa.data.ics",
    "read_sample": "noa.api.samples",
    "Sample": "noa.api.samples",
    "training_split": "noa.api.samples",
    "TrainingSplit": "noa.api.samples",
    "OperatorFamily": "noa.families",
    "load_family": "noa.families",
}

# deprecated public name -> the name that replaced it (still served, with a DeprecationWarning)
_DEPRECATED: dict[str, str] = {
    "IC_FAMILIES": "IC_KINDS",  # IC kinds were called IC families
}

__all__ = [
    "CNO_SPACE",
    "IC_KINDS",
    "NeuralOperatorAgent",
    "NoaError",
    "OperatorFamily",
    "ParameterSpace",
    "Sample",
    "Tokenizer",
    "TokenizerProtocol",
    "TrainingSplit",
    "as_theta",
    "compute_features",
    "load",
    "load_family",
    "load_tokenizer",
    "make_initial_condition",
    "read_sample",
    "replay_cno",
    "training_split",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on demand
    from noa.api.agent import NeuralOperatorAgent as NeuralOperatorAgent
    from noa.api.agent import load as load
    from noa.api.ground_truth import replay_cno as replay_cno
    from noa.api.initial import make_initial_condition as make_initial_condition
    from noa.api.inputs import as_theta as as_theta
    from noa.api.samples import Sample as Sample
    from noa.api.samples import TrainingSplit as TrainingSplit
    from noa.api.samples import read_sample as read_sample
    from noa.api.samples import training_split as training_split
    from noa.api.tokens import Tokenizer as Tokenizer
    from noa.api.tokens import load_tokenizer as load_tokenizer
    from noa.data.ics import IC_KINDS as IC_FAMILIES  # noqa: F401  # deprecated alias (see _DEPRECATED)
    from noa.data.ics import IC_KINDS as IC_KINDS
    from noa.families import OperatorFamily as OperatorFamily
    from noa.families import load_family as load_family
    from noa.features import compute_features as compute_features
    from noa.operators.space import CNO_SPACE as CNO_SPACE
    from noa.operators.space import ParameterSpace as ParameterSpace
    from noa.tokenizer.protocol import TokenizerProtocol as TokenizerProtocol


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562) and cache the name here; a
    deprecated name warns on every access and is never cached (so it keeps warning)."""
    if name in _DEPRECATED:
        warnings.warn(f"noa.{name} is deprecated; use noa.{_DEPRECATED[name]}", DeprecationWarning, stacklevel=2)
        return __getattr__(_DEPRECATED[name])
    if name not in _EXPORTS:
        raise AttributeError(f"module 'noa' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API and the module's dunders, not its machinery (importlib, typing names)."""
    return sorted({name for name in globals() if name.startswith("__")} | set(_EXPORTS) | set(__all__))
