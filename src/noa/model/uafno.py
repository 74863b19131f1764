"""The Neural Operator Agent backbone: a θ-conditioned U-AFNO that advances a field one step.

``x_{t+1} = keep(θ)·x_t + scale(θ)·f(x_t, θ)``: with the family's update rule in the config,
(keep, scale) = (1, dt) for residual operators and (α, 1-α) for convex ones, so ``f`` learns
the operator O itself at unit scale (:mod:`noa.model.update_rule`); without one, (1, 1).
``f`` is a U-Net whose encoder halves the grid ``encoder_levels`` times (doubling channels each
time), whose bottleneck is a stack of AFNO blocks mixing the coarse map globally in Fourier
space, and whose decoder climbs back with skip connections.
θ enters everywhere through FiLM (per-channel scale and shift) from one shared embedding, which
reads θ rescaled so that the training family's box spans [-1, 1] in every dimension it varies
(``theta_box``): a narrow family's θ differ by a few hundredths of the whole space's unit
coordinates, which an embedding learns to tell apart only slowly. θ outside the box still reads
(beyond ±1), so every NOA takes every family's θ.

Beside the U-AFNO (``backbone`` "hybrid") or instead of it ("generated") a θ-generated stack
(:mod:`noa.model.generated`) adds its own f: full-resolution convolutions whose weights θ mixes
from learned banks, which FiLM cannot express. Either way the rule head sees one f.

Fields live on a torus, so every convolution pads circularly. Normalisation is per sample
(GroupNorm / LayerNorm), so a sample's output never depends on its batch neighbours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from noa.errors import NoaError
from noa.model.afno import AFNOBlock
from noa.model.generated import GeneratedShape, GeneratedStack, largest_shape
from noa.model.update_rule import UpdateRule
from noa.operators.space import CNO_SPACE
from noa.periodic import PeriodicConv2d

FILM_INIT_SCALE = 0.1  # FiLM starts near (scale 1, shift 0) yet already depends on θ
HEAD_INIT_SCALE = 1e-2  # f starts near 0: the identity map, or α·x for a convex rule
BACKBONES = ("uafno", "hybrid", "generated")


@dataclass
class UAFNOConfig:
    """Architecture of a :class:`UAFNO`; plain data, stored in checkpoints as a dict."""

    channels: int = 3
    param_dim: int = CNO_SPACE.size  # θ of the CNO's parameter space; training sets it from the dataset
    base_channels: int = 32
    encoder_levels: int = 3
    modes: int = 16
    afno_blocks: int = 4
    afno_num_blocks: int = 8  # block-diagonal groups in the spectral MLP
    sparsity_threshold: float = 0.01
    # The family's update rule applied by the head (UpdateRule.to_dict()); None = x + f(x, θ),
    # which is also what a checkpoint written before the rule head existed gets.
    update_rule: dict[str, Any] | None = None
    # [low, high] of each θ unit coordinate over the training family (OperatorFamily.unit_box);
    # None = the whole space, which is also what a checkpoint written before the box existed gets.
    theta_box: list[list[float]] | None = None
    # The name of the family whose box theta_box is (a fine-tune keeps its source's, so this may not
    # be the data's); None without a box, or in a checkpoint written before noa recorded it.
    theta_family: str | None = None
    # Which paths compute f (BACKBONES): the U-AFNO alone, a θ-generated stack beside it
    # (f = f_generated + f_uafno) or the generated stack alone; a checkpoint written before the
    # generated stack existed gets "uafno" and computes what it always did.
    backbone: str = "uafno"
    # The generated stack's upper bounds (noa.model.generated); None = the whole CNO space's
    # largest operator. Training sets them from the dataset's family.
    generated_channels: int | None = None
    generated_layers: int | None = None
    generated_kernel: int | None = None
    generated_banks: int = 8
    # [θ index, options] of the dimensions the generated stack reads as one-hot codes
    # (generated.discrete_dimensions of the dataset's space); None = none.
    theta_discrete: list[list[int]] | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "theta_family":
                if value is not None and not isinstance(value, str):
                    raise NoaError(f"model config: theta_family must be a family name or null, got {value!r}")
                continue
            if field.name == "theta_box":
                if value is not None:
                    self.theta_box = _checked_box(value, self.param_dim)
                continue
            if field.name == "backbone":
                if value not in BACKBONES:
                    raise NoaError(f"model config: backbone must be one of {', '.join(BACKBONES)}, got {value!r}")
                continue
            if field.name == "theta_discrete":
                if value is not None:
                    self.theta_discrete = _checked_discrete(value, self.param_dim)
                continue
            if field.name in ("generated_channels", "generated_layers", "generated_kernel") and value is None:
                continue
            if field.name == "update_rule":
                if value is not None:
                    UpdateRule.from_dict(value)
                continue
            if field.name == "sparsity_threshold":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise NoaError(f"model config: sparsity_threshold must be a number >= 0, got {value!r}")
                continue
            minimum = 0 if field.name == "afno_blocks" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise NoaError(f"model config: {field.name} must be an integer >= {minimum}, got {value!r}")
        if self.generated_kernel is not None and self.generated_kernel % 2 == 0:
            raise NoaError(
                f"model config: generated_kernel must be odd (a centred k×k kernel), got {self.generated_kernel}"
            )
        if self.bottleneck_channels % self.afno_num_blocks:
            raise NoaError(
                f"model config: the bottleneck has {self.bottleneck_channels} channels "
                f"(base_channels * 2**encoder_levels), which afno_num_blocks={self.afno_num_blocks} "
                "does not divide; choose afno_num_blocks dividing it (e.g. a power of two)"
            )

    @property
    def bottleneck_channels(self) -> int:
        return self.base_channels * 2**self.encoder_levels

    @property
    def uses_uafno(self) -> bool:
        return self.backbone != "generated"

    @property
    def uses_generated(self) -> bool:
        return self.backbone != "uafno"

    @property
    def backbone_label(self) -> str:
        """How a run's header names the model: its paths and the generated stack's shape."""
        if not self.uses_generated:
            return "U-AFNO"
        shape = self.generated_shape()
        stack = (
            f"θ-generated stack ({shape.channels} channels, {shape.layers} layers, "
            f"{shape.kernel}x{shape.kernel}, {shape.banks} banks)"
        )
        return stack if not self.uses_uafno else f"U-AFNO + {stack}"

    def generated_shape(self) -> GeneratedShape:
        """The generated stack's shape, with the whole CNO space's largest where a size is None."""
        largest = largest_shape(CNO_SPACE, [[0.0, 1.0]] * CNO_SPACE.size)
        return GeneratedShape(
            channels=self.generated_channels or largest["channels"],
            layers=self.generated_layers or largest["layers"],
            kernel=self.generated_kernel or largest["kernel"],
            banks=self.generated_banks,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UAFNOConfig:
        """Build from a dict; missing keys take defaults, unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise NoaError(
                f"model config: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(known))}"
            )
        return cls(**d)


def _is_pairs(value: Any, kinds: tuple[type, ...]) -> bool:
    """Whether ``value`` is a list of two-element lists of numbers of ``kinds`` (never bools)."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(pair, (list, tuple))
        and len(pair) == 2
        and all(isinstance(v, kinds) and not isinstance(v, bool) for v in pair)
        for pair in value
    )


def _checked_box(box: Any, param_dim: int) -> list[list[float]]:
    """``box`` as param_dim [low, high] pairs with 0 <= low <= high <= 1, or a NoaError."""
    pairs = box if _is_pairs(box, (int, float)) else []
    ok = len(pairs) == param_dim and all(0.0 <= low <= high <= 1.0 for low, high in pairs)
    if not ok:
        raise NoaError(
            f"model config: theta_box must be {param_dim} [low, high] pairs with 0 <= low <= high <= 1 "
            f"(θ's unit coordinates over the training family), got {box!r}"
        )
    return [[float(low), float(high)] for low, high in pairs]


def _checked_discrete(pairs: Any, param_dim: int) -> list[list[int]]:
    """``pairs`` as [θ index, options] with 0 <= index < param_dim and options >= 2, or a NoaError."""
    ok = _is_pairs(pairs, (int,)) and all(0 <= index < param_dim and options >= 2 for index, options in pairs)
    if not ok:
        raise NoaError(
            f"model config: theta_discrete must be [index, options] pairs with 0 <= index < {param_dim} and "
            f"options >= 2 (θ's discrete dimensions), got {pairs!r}"
        )
    return [[int(i), int(n)] for i, n in pairs]


def embedding_input(params: Tensor, low: Tensor, span: Tensor) -> Tensor:
    """θ in [-1, 1] over the box: 2·(θ - low)/span - 1 (low = 0, span = 1 without a box: 2θ - 1
    bit for bit, so a checkpoint from before the box computes what it always did)."""
    return 2.0 * ((params - low) / span) - 1.0


def box_tensors(config: UAFNOConfig) -> tuple[Tensor, Tensor]:
    """(low, span) of the embedding's rescaling. A dimension the family fixes (low = high) is
    centred on its value with span 1; without a box, (0, 1) everywhere."""
    if config.theta_box is None:
        return torch.zeros(config.param_dim), torch.ones(config.param_dim)
    box = torch.tensor(config.theta_box, dtype=torch.float32)
    width = box[:, 1] - box[:, 0]
    fixed = width <= 0
    return torch.where(fixed, box[:, 0] - 0.5, box[:, 0]), torch.where(fixed, torch.ones_like(width), width)


def check_grid(config: UAFNOConfig, grid: int) -> None:
    """Fail clearly unless ``grid`` survives ``encoder_levels`` halvings with at least 2 cells
    (any grid serves a model without the U-AFNO: the generated stack never halves it)."""
    if not config.uses_uafno:
        return
    factor = 2**config.encoder_levels
    if grid % factor:
        raise NoaError(
            f"grid {grid} is not divisible by 2**encoder_levels = {factor}; "
            "use a grid that is a multiple of it or fewer encoder levels"
        )
    if grid // factor < 2:
        raise NoaError(
            f"grid {grid} leaves a {grid // factor}x{grid // factor} bottleneck after "
            f"{config.encoder_levels} encoder levels; it must be at least 2x2: use fewer encoder levels"
        )


def _groups(channels: int) -> int:
    """The largest GroupNorm group count <= 8 that divides ``channels``."""
    return max(g for g in range(1, 9) if channels % g == 0)


class FiLM(nn.Module):
    """Per-channel ``(scale, shift)`` from the θ embedding, starting near ``(1, 0)``."""

    def __init__(self, embed_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, 2 * channels)
        with torch.no_grad():
            self.proj.weight.mul_(FILM_INIT_SCALE)
            self.proj.bias.zero_()

    def forward(self, emb: Tensor) -> tuple[Tensor, Tensor]:
        delta, shift = self.proj(emb).chunk(2, dim=-1)
        return 1.0 + delta, shift


class ConvBlock(nn.Module):
    """Two periodic 3x3 convolutions with GroupNorm, GELU, FiLM after the first, and a residual."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.conv1 = PeriodicConv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.film = FiLM(embed_dim, out_channels)
        self.conv2 = PeriodicConv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)
        h = self.norm1(self.conv1(x)) * scale[:, :, None, None] + shift[:, :, None, None]
        h = self.norm2(self.conv2(self.act(h)))
        return self.act(h + self.shortcut(x))


class UAFNO(nn.Module):
    """The NOA: ``forward(x, params) = keep·x + scale·f(x, params)`` (see the module), with f from
    the U-AFNO, the θ-generated stack (:mod:`noa.model.generated`) or their sum, as
    ``config.backbone`` says. The U-AFNO's modules keep their names whatever sits beside them,
    so a checkpoint of the U-AFNO alone loads as it always did."""

    theta_low: Tensor
    theta_span: Tensor

    def __init__(self, config: UAFNOConfig) -> None:
        super().__init__()
        self.config = config
        self.rule = UpdateRule.from_dict(config.update_rule) if config.update_rule is not None else None
        low, span = box_tensors(config)
        # Not in the state dict: they follow from the config, which the checkpoint stores.
        self.register_buffer("theta_low", low, persistent=False)
        self.register_buffer("theta_span", span, persistent=False)
        # No bottleneck without the U-AFNO: L_latent is refused for such a model (train.config).
        self.bottleneck_channels = config.bottleneck_channels if config.uses_uafno else 0
        if config.uses_uafno:
            self._build_uafno(config)
        self.generated = (
            GeneratedStack(config.channels, config.param_dim, config.generated_shape(), config.theta_discrete or [])
            if config.uses_generated
            else None
        )

    def _build_uafno(self, config: UAFNOConfig) -> None:
        widths = [config.base_channels * 2**level for level in range(config.encoder_levels + 1)]
        embed_dim = 4 * config.base_channels
        self.embed = nn.Sequential(
            nn.Linear(config.param_dim, embed_dim),
            nn.GELU(),
            nn.Linear(embed_dim, embed_dim),
            nn.GELU(),
        )
        self.stem = ConvBlock(config.channels, widths[0], embed_dim)
        self.down = nn.ModuleList(
            PeriodicConv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(config.encoder_levels)
        )
        self.encoder = nn.ModuleList(ConvBlock(w, w, embed_dim) for w in widths[1:])
        self.afno = nn.ModuleList(
            AFNOBlock(widths[-1], config.modes, config.afno_num_blocks, config.sparsity_threshold)
            for _ in range(config.afno_blocks)
        )
        self.afno_film = nn.ModuleList(FiLM(embed_dim, widths[-1]) for _ in range(config.afno_blocks))
        # Decoder level i climbs from widths[i + 1] to widths[i]; listed from the bottom up.
        levels = list(reversed(range(config.encoder_levels)))
        # Nearest upsampling then a circular 3x3 conv: a stride-2 transposed conv gives each of
        # the four sub-pixel positions its own kernel, which shows up as checkerboard artefacts.
        self.up = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), PeriodicConv2d(widths[i + 1], widths[i], 3, padding=1)
            )
            for i in levels
        )
        self.decoder = nn.ModuleList(ConvBlock(2 * widths[i], widths[i], embed_dim) for i in levels)
        self.head = nn.Conv2d(widths[0], config.channels, 1)
        with torch.no_grad():
            self.head.weight.mul_(HEAD_INIT_SCALE)
            nn.init.zeros_(self.head.bias)  # type: ignore[arg-type]  # a Conv2d built with bias=True has one

    @property
    def layers(self) -> list[str]:
        """Names accepted by :meth:`get_intermediate_features`, shallow to deep (none without the U-AFNO)."""
        if not self.config.uses_uafno:
            return []
        return [f"encoder_{i}" for i in range(self.config.encoder_levels + 1)] + ["bottleneck"]

    def forward(self, x: Tensor, params: Tensor, return_bottleneck: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``[B, C, H, W]``, ``[B, P]`` -> the next state ``[B, C, H, W]`` (see :meth:`step`)."""
        return self.step(x, params, return_bottleneck)

    def step(self, x: Tensor, params: Tensor, return_bottleneck: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """One step; with ``return_bottleneck`` also the bottleneck map of this same pass (without
        the U-AFNO, an empty ``[B, 0, 1, 1]`` map: there is none to read)."""
        self._check_inputs(x, params)
        scaled = embedding_input(params, self.theta_low, self.theta_span)
        if self.config.uses_uafno:
            g, bottleneck = self._uafno(x, scaled)
        else:
            bottleneck = x.new_zeros(x.shape[0], 0, 1, 1)
        if self.generated is not None:
            generated = self.generated(x, scaled, params)
            g = generated if not self.config.uses_uafno else g + generated
        out = x + g if self.rule is None else self.rule.apply(x, g, params)
        return (out, bottleneck) if return_bottleneck else out

    def _uafno(self, x: Tensor, scaled: Tensor) -> tuple[Tensor, Tensor]:
        """The U-AFNO's f and its bottleneck."""
        emb = self.embed(scaled)
        skips = self._encode(x, emb)
        bottleneck = self._bottleneck(skips[-1], emb)
        h = bottleneck
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            h = block(torch.cat([up(h), skip], dim=1), emb)
        return self.head(h), bottleneck

    def get_intermediate_features(
        self, state: Tensor, layer: str = "bottleneck", params: Tensor | None = None
    ) -> Tensor:
        """The named feature map for ``state`` under ``params``; runs only the layers it needs."""
        if params is None:
            raise NoaError("get_intermediate_features needs params=θ ([B, param_dim]): the U-AFNO is θ-conditioned")
        if not self.config.uses_uafno:
            raise NoaError(
                "this NOA has no U-AFNO (backbone 'generated'), so no encoder or bottleneck features to return"
            )
        if layer not in self.layers:
            raise NoaError(f"unknown layer {layer!r}; valid layers are {', '.join(self.layers)}")
        self._check_inputs(state, params)
        emb = self.embed(embedding_input(params, self.theta_low, self.theta_span))
        skips = self._encode(state, emb)
        if layer == "bottleneck":
            return self._bottleneck(skips[-1], emb)
        return skips[int(layer.removeprefix("encoder_"))]

    def _encode(self, x: Tensor, emb: Tensor) -> list[Tensor]:
        """Encoder outputs at every level, full resolution first."""
        skips = [self.stem(x, emb)]
        for down, block in zip(self.down, self.encoder):
            skips.append(block(down(skips[-1]), emb))
        return skips

    def _bottleneck(self, h: Tensor, emb: Tensor) -> Tensor:
        for block, film in zip(self.afno, self.afno_film):
            h = block(h, *film(emb))
        return h

    def _check_inputs(self, x: Tensor, params: Tensor) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.channels:
            raise NoaError(f"state must be [B, {cfg.channels}, H, W] for this model, got {list(x.shape)}")
        if params.ndim != 2 or params.shape != (x.shape[0], cfg.param_dim):
            raise NoaError(
                f"params must be [B, param_dim] = [{x.shape[0]}, {cfg.param_dim}] for this model, got {list(params.shape)}"
            )
        for grid in set(x.shape[2:]):
            check_grid(cfg, grid)
