"""How the NOA's step executes: precision, compilation, CUDA graphs, activation checkpointing.

None of these changes what is computed, only how fast and in how much memory. float32 eager is
the reference; the others are checked against it with stated tolerances (tests/test_execution.py).

* **Precision.** ``bf16`` runs the step under ``torch.autocast`` with bfloat16: convolutions and
  matrix products in bf16, normalisations in float32 (autocast's own rule), the AFNO's FFTs in
  float32 (:mod:`noa.model.afno`). The state ``x_t`` stays float32 (``x + f(x)`` promotes), so
  a long rollout does not accumulate bf16 rounding, and every loss is reduced in float32.
* **Compilation.** ``torch.compile`` of the one-step function: the same step 256 times a batch
  is where fusing pointwise kernels pays. One graph serves every step (see :class:`Stepper`);
  compiling it costs minutes at the guide's widths, once per process, so it is opt-in.
* **CUDA graphs.** ``torch.compile(mode="reduce-overhead")``: each step replays recorded
  kernels instead of launching them one by one, which is what bounds a batch-4, 64x64 step on a
  large GPU. A graph's outputs live in a pool that later replays reuse, so the step hands out
  copies (a few KB per step).
* **Activation checkpointing.** Each step keeps only its input and recomputes its activations
  during the backward pass: about one forward pass more, for memory that no longer grows with
  the window's activations.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from noa.errors import NoaError

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Execution:
    """A resolved way of running the step (no "auto" left)."""

    device_type: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    cuda_graphs: bool = False
    activation_checkpointing: bool = False

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def describe(self) -> str:
        mode = "eager" if not self.compile else "compiled + CUDA graphs" if self.cuda_graphs else "compiled"
        extra = ", activation checkpointing" if self.activation_checkpointing else ""
        return f"{self.precision}, {mode}{extra}"


def resolve_execution(
    device: str,
    precision: str = "auto",
    compile: bool = False,
    cuda_graphs: bool = False,
    activation_checkpointing: bool = False,
    world_size: int = 1,
) -> Execution:
    """Check the combination and fill in the precision: bf16 on CUDA, float32 on a CPU (where
    bf16 autocast is slower). Several ranks (DDP) compile without CUDA graphs: DDP's gradient
    hooks run outside them."""
    cuda = device.startswith("cuda")
    if precision not in PRECISIONS:
        raise NoaError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if cuda_graphs and not cuda:
        raise NoaError("--cuda-graphs needs a CUDA device; drop it (or pass --no-cuda-graphs) on a CPU")
    if cuda_graphs and not compile:
        raise NoaError("--cuda-graphs works through torch.compile; add --compile")
    if cuda_graphs and activation_checkpointing:
        raise NoaError("--activation-checkpointing does not combine with CUDA graphs; pass --no-cuda-graphs with it")
    if cuda_graphs and world_size > 1:
        raise NoaError(
            "--cuda-graphs is for one process; with torchrun, training compiles without them (drop --cuda-graphs)"
        )
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return Execution("cuda" if cuda else "cpu", precision, compile, cuda_graphs, activation_checkpointing)


class Stepper:
    """``step(x, params, return_bottleneck)`` of a model as ``execution`` says to run it.

    Outputs are float32 tensors the caller owns, whatever the precision and mode.
    """

    def __init__(self, module: nn.Module, execution: Execution):
        self.execution = execution
        if execution.compile:
            # The AFNO's complex spectrum runs as torch's own FFT and complex kernels, which is
            # what this warning says once per graph; it is expected, not a fault.
            warnings.filterwarnings(
                "ignore", message="Torchinductor does not support code generation for complex operators"
            )
            mode = "reduce-overhead" if execution.cuda_graphs else None
            self._run = torch.compile(module, mode=mode)
        else:
            self._run = module

    def __call__(
        self, x: Tensor, params: Tensor, return_bottleneck: bool = False, recompute: bool = True
    ) -> Tensor | tuple[Tensor, Tensor]:
        """One step. ``recompute=False`` is for a step back-propagated on its own (the one-step
        phase): activation checkpointing would save nothing there, and a checkpointed step's
        backward peaks higher than a plain one's (recomputed activations and the gradient at once)."""
        ex = self.execution
        if ex.compile and torch.is_grad_enabled() and not x.requires_grad:
            # A window's first state is detached, later ones carry gradients: one graph for
            # both (an input that requires grad) instead of a second compilation.
            x = x.detach().requires_grad_(True)
        with ex.autocast():
            # Always with the bottleneck (computed anyway): one graph whether L_latent wants it or not.
            if ex.activation_checkpointing and recompute and torch.is_grad_enabled():
                out, bottleneck = checkpoint(self._run, x, params, True, use_reentrant=False)
            else:
                out, bottleneck = self._run(x, params, True)
        if return_bottleneck:
            return self._own(out), self._own(bottleneck)
        return self._own(out)

    def _own(self, t: Tensor) -> Tensor:
        t = t.float()
        return t.clone() if self.execution.cuda_graphs else t

    def new_batch(self) -> None:
        """Tell CUDA graphs that the previous batch's outputs are no longer needed."""
        if self.execution.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
