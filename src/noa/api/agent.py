"""A trained Neural Operator Agent: load a checkpoint, roll it out from (IC, θ) on any device.

``noa.load(path)`` rebuilds the θ-conditioned U-AFNO that ``noa train`` saved (any checkpoint:
``best_model.pt``, ``epoch_N.pt``, ``step_N.pt``) with :mod:`noa.train.checkpoint`, the same
code the trainer and ``noa diagnose`` use, and rolls it out with
:func:`noa.train.rollout.rollout_noa`, so a rollout made here is the one the reports measure.
"""

from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import Any

import torch

from noa.api.inputs import Theta, paired
from noa.coverage import theta_warning
from noa.errors import NoaError
from noa.model import UAFNO, UAFNOConfig
from noa.operators.space import CNO_SPACE, ParameterSpace
from noa.runtime import resolve_device
from noa.train.checkpoint import API_FIX, build_model, load_checkpoint
from noa.train.rollout import rollout_noa

log = logging.getLogger("noa.api")


class NeuralOperatorAgent:
    """A trained NOA with what it needs to be used: its U-AFNO, config and θ space.

    ``model`` is the plain :class:`~noa.model.UAFNO` (eval mode) for anything this class does
    not cover; ``config`` its architecture; ``space`` the θ space its inputs are unit
    coordinates of (``space.encode``/``space.decode`` convert physical values);
    ``training_args`` the flags of the run that saved it (``timesteps``, ``dataset``, ...).
    """

    def __init__(
        self,
        model: UAFNO,
        *,
        space: ParameterSpace = CNO_SPACE,
        training_args: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        if model.config.param_dim != space.size:
            raise NoaError(
                f"the NOA takes θ of {model.config.param_dim} values but the parameter space has {space.size} "
                f"({', '.join(space.names)}); it was trained on another family of operators"
            )
        self.model = model.eval()
        self.space = space
        self.training_args = dict(training_args or {})
        self.path = path
        self._box_warned = False  # θ outside the model's box is said once per agent (noa.coverage)

    @property
    def config(self) -> UAFNOConfig:
        """The U-AFNO's architecture: ``channels`` is the C its ICs must have."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Where the NOA runs and where its rollouts are returned."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> NeuralOperatorAgent:
        """Move the NOA to ``device`` ('cpu', 'cuda', 'cuda:N', 'auto'); returns ``self``."""
        self.model.to(resolve_device(str(device)))
        return self

    @torch.no_grad()
    def rollout(self, ic: torch.Tensor, theta: Theta, timesteps: int) -> torch.Tensor:
        """The NOA's rollout ``[B, T+1, C, H, W]`` on its device (frame 0 is the IC), float32.

        ``ic`` is ``[C, H, W]`` or ``[B, C, H, W]`` on any device; ``theta`` one θ or B of them,
        as unit coordinates (``[P]`` / ``[B, P]``) or physical values (a mapping, or a list of
        them); a batch of 1 on either side is repeated to the other's B. The grid must be a
        multiple of 2**encoder_levels. No gradients are kept.
        """
        if isinstance(timesteps, bool) or not isinstance(timesteps, numbers.Integral) or timesteps < 1:
            raise NoaError(f"timesteps must be an integer >= 1, got {timesteps!r}")
        ics, rows = paired(ic, theta, self.space)
        self._warn_outside_box(rows)
        frames, _ = rollout_noa(self.model, ics.to(self.device), rows.to(self.device), int(timesteps))
        return frames

    def _warn_outside_box(self, rows: torch.Tensor) -> None:
        """The first θ outside the box the NOA's embedding is scaled to is said on the logger
        ``noa.api`` (a warning, so it shows without any logging set up); later calls stay quiet."""
        if self._box_warned:
            return
        line = theta_warning(self.config, self.space, rows, data="this rollout")
        if line:
            self._box_warned = True
            log.warning(f"Warning: {line}")

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"NeuralOperatorAgent({self.path or 'in memory'}: channels {cfg.channels}, θ dims {cfg.param_dim}, "
            f"{cfg.backbone_label}, base {cfg.base_channels}, levels {cfg.encoder_levels}, on {self.device})"
        )


def load(checkpoint_path: str | Path, device: str | torch.device = "auto") -> NeuralOperatorAgent:
    """The trained NOA saved in ``checkpoint_path`` by ``noa train``, on ``device``.

    ``device`` is 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present). The file is read with
    ``torch.load(weights_only=True)``, so loading it never runs code; a missing, torn or
    foreign file, or weights that do not fit their config, is a NoaError.
    """
    path = Path(checkpoint_path)
    ckpt = load_checkpoint(path, map_location="cpu", fix=API_FIX)
    model, _ = build_model(ckpt, resolve_device(str(device)))
    args = ckpt.get("args")
    return NeuralOperatorAgent(model, training_args=args if isinstance(args, dict) else None, path=path)
