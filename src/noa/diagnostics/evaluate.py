"""Evaluate a trained NOA on held-out samples against its frozen tokenizer.

One pass over the held-out samples replays two CNO realizations per operator (ground truth
and its noise) and one rollout of another family draw at the same θ (another noise seed: the
family floor), rolls the NOA out with the latent projector applied at every step, and tokenizes
them all, with the persistence baseline (the IC held constant). From that pass come the guide's four sections (:mod:`.alignment`) and the
rollout-quality section (:mod:`.rollout_quality`); :mod:`.report` turns them into text,
``report.md``, ``summary.json`` and the figures.

Held-out means: the validation split the training run used (rebuilt from the checkpoint's
args exactly as training built it), plus dataset rows beyond the run's ``--n-samples``,
which training never read. In another dataset, held-out is decided by content: a row with the
θ, noise seed, IC seed and IC field of one of the run's training samples is a training sample
(two files generated with the same ``--seed`` share their first rows), so it is left out. A
fine-tune's rows are held out from every run it descends from as well (its weights learned
their training rows too); a source that cannot be read is named, never silently passed over. Nothing here draws random numbers except the choice of which
held-out samples to evaluate when there are more than asked for (seeded by ``--seed``).

A checkpoint trained without a tokenizer (L_traj only) is diagnosed on rollout quality alone
unless ``--vqvae-path`` supplies one; the token sections say why they are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

import noa
from noa.coverage import box_owner, dataset_warning, grid_note
from noa.data import h5
from noa.data.ics import IC_KIND_KEY, IC_KINDS_KEY
from noa.data.loader import SampleSource, run_split, usable_rows
from noa.diagnostics import alignment as guide
from noa.diagnostics import verdict as rating
from noa.diagnostics.curves import TrainingCurves, training_curves_of
from noa.diagnostics.rollout_quality import RolloutQuality, StepErrors, step_errors, summarize
from noa.diagnostics.skill import by_rule, one_step_sums, rollout_states
from noa.errors import NoaError
from noa.features import compute_features
from noa.model import UAFNO, LatentProjector, UAFNOConfig
from noa.operators.replay import replay
from noa.operators.space import ACTS_ONLY_UNDER, ParameterSpace
from noa.run_siblings import newer_sibling_checkpoint
from noa.seeding import derive_seed, generator
from noa.tokenizer import FrozenTokenizer, open_tokenizer
from noa.tokenizer.user_class import class_problem, spec_of
from noa.train.checkpoint import RECORDED_PATHS, build_model, load_checkpoint, recorded_path
from noa.train.lineage import SOURCE_KEY, ancestry
from noa.train.rollout import rollout_noa, sample_steps

SKIP_REASON = "the checkpoint has no latent projector (trained without --enable-latent-loss)"
NO_TOKENIZER = (
    "no tokenizer: the checkpoint was trained without --vqvae-path (L_traj only); "
    "pass --vqvae-path to tokenize its rollouts"
)
OTHER_TOKENIZER = (
    "the NOA's latent projector was trained against another tokenizer, so its alignment with this one means nothing"
)
OTHER_TOKENIZER_SHORT = "not the run's tokenizer: alignment sections skipped, token figures are another tokenizer's"
DEFAULT_LATENT_SAMPLE_STEPS = 3  # the guide's recommended --latent-sample-steps
PLOTTED_OPERATORS = 3
THETA_PER_LINE = 5  # decoded θ parameters per line of a frames-figure row title
FAMILY_DRAW = "diagnose/family-draw"  # derives the other family draw's noise seed from a sample's
RULE_DIMENSION = "update_policy"  # the θ dimension whose value splits rollout quality per update rule
SECTION_NAMES = ("VQ Reconstruction", "Token Diversity", "Alignment Correlation", "Temporal Consistency")


@dataclass
class DiagnosticsResult:
    """Every number of one diagnosis; ``text`` is the printed report."""

    checkpoint: str
    tokenizer: str | None  # None: diagnosed without a tokenizer (rollout quality only)
    dataset: str
    timesteps: int
    n_samples: int
    rows: list[int]
    notes: list[str]
    run: dict[str, Any]  # date, noa version, the checkpoint's position, training args, dataset summary
    reconstruction: guide.Reconstruction | None
    diversity: guide.Diversity | None
    alignment: guide.Alignment | None
    consistency: guide.Consistency | None
    skipped: dict[str, str]  # section name -> why it was skipped
    alignment_verdict: str | None  # the guide's verdict over sections 1-4 (None without a tokenizer)
    verdict: str  # the final verdict line, see :mod:`.verdict`
    verdict_detail: rating.Verdict
    rollout: RolloutQuality
    cno_reconstruction: float | None  # the tokenizer's reconstruction MSE on CNO realization 0 (reference)
    text: str = ""
    warnings: list[str] = field(default_factory=list)  # said in the report's header (and its verdict)
    tokenizer_class: str | None = None  # the class that loaded the tokenizer (None: noa's own)
    trained_on: dict[str, Any] = field(default_factory=dict)  # the run's family, grid and θ box (see trained_on)
    coverage: list[str] = field(default_factory=list)  # θ outside the model's box, another grid (noa.coverage)
    # The one-step skill (noa.diagnostics.skill) per group ("all" and each update rule): pooled,
    # median over operators, their 90% intervals; on CNO states at steps 0, T/4, T/2, 3T/4.
    one_step_skill: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def assessments(self) -> dict[str, str | None]:
        sections = (self.reconstruction, self.diversity, self.alignment, self.consistency)
        return {name: (s.assessment if s is not None else None) for name, s in zip(SECTION_NAMES, sections)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (non-finite values become null); the text is left out."""
        data = asdict(self)
        data.pop("text")
        data["assessments"] = self.assessments
        data["ladders"] = {ladder.metric: ladder.describe() for ladder in guide.LADDERS}
        data["verdict_rule"] = rating.VERDICT_RULE
        return json_safe(data)


@dataclass
class _Collected:
    """What the evaluation pass keeps for the metrics and figures (CPU tensors)."""

    # Features, tokens and targets are None without a tokenizer.
    features_noa: dict[str, torch.Tensor] | None
    features_cno: dict[str, torch.Tensor] | None
    tokens_noa: torch.Tensor | None  # [N, E]
    tokens_cno: torch.Tensor | None
    tokens_cno_other: torch.Tensor | None
    tokens_persistence: torch.Tensor | None
    errors: StepErrors
    targets: torch.Tensor | None  # [N, D] cat(encode(features of the NOA rollout))
    projected: torch.Tensor | None  # [N, D] projector latents, mean over the sampled steps
    norms: torch.Tensor | None  # [N, T] projector latent norms at every step
    frames_cno: torch.Tensor  # [S, K, H, W] channel 0 at the plotted times
    frames_noa: torch.Tensor
    non_finite: int  # NOA rollouts with NaN/inf
    one_step_error: torch.Tensor  # [N] Σ‖NOA step − CNO noise-free step‖² over the sample's skill states
    one_step_reference: torch.Tensor  # [N] Σ‖CNO noise-free step − state‖² (persistence's error)


@dataclass
class Evaluation:
    """One diagnosis and what presenting it needs beyond the numbers."""

    result: DiagnosticsResult
    data: _Collected
    times: list[int]  # the rollout steps shown in the frames figure
    history: dict  # the checkpoint's training history
    frame_labels: list[str]  # per plotted operator: row, IC kind, channel, θ in physical units
    curves: TrainingCurves | None  # per-batch (metrics.jsonl) or per-epoch training curves


def evaluate(
    noa_checkpoint: str | Path,
    vqvae_path: str | Path | None,
    dataset: str | Path | None,
    *,
    n_samples: int = 100,
    timesteps: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    batch_size: int = 8,
    zero_theta: bool = False,
    rows: np.ndarray | None = None,
    no_tokens: bool = False,
    t_source: str = "--timesteps",
    vqvae_class: str | type | None = None,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Evaluate a checkpoint (``result.text`` is left empty for the report to fill).

    ``vqvae_path`` / ``dataset`` default (None) to the ones recorded in the checkpoint's args
    (no tokenizer for a checkpoint trained without one). ``timesteps`` defaults to the training
    run's T, else the dataset's. ``zero_theta`` feeds the NOA θ = 0 instead of each sample's θ
    (an ablation: how much the model uses θ); the CNO targets keep their own θ. ``rows``
    overrides the held-out choice with given dataset rows (benchmarks use it to compare
    training and held-out θ). The rollout measures run at any ``timesteps``; the token sections
    are skipped, with one line saying why, where the tokenizer was trained on another T or on
    ``no_tokens``. ``t_source`` names where a given ``timesteps`` came from, for the messages.
    ``vqvae_class`` loads a tokenizer of another class than noa's own (as ``noa.load_tokenizer``);
    the run's own tokenizer needs the class its checkpoint records, which is never imported unasked.
    """
    if n_samples < 1 or batch_size < 1:
        raise NoaError(f"--n-samples and --batch-size must be >= 1; got {n_samples} and {batch_size}")
    ckpt = load_checkpoint(noa_checkpoint)
    args = ckpt.get("args") or {}
    vqvae_path = input_path(vqvae_path, ckpt, noa_checkpoint, "vqvae_path")
    dataset = input_path(dataset, ckpt, noa_checkpoint, "dataset")
    if dataset is None:
        raise NoaError("the checkpoint does not record its dataset; pass --dataset")
    model, projector = build_model(ckpt, device)
    tokenizer = None
    if vqvae_path is not None and not no_tokens:
        _check_class(ckpt, noa_checkpoint, vqvae_path, vqvae_class)
        tokenizer = open_tokenizer(vqvae_path, vqvae_class, device)
    with h5.open_dataset(dataset) as f:
        info = h5.read_info(f)
        same_data = _is_training_data(f, dataset, ckpt, noa_checkpoint)
    if timesteps is None and args.get("timesteps") is not None:
        timesteps, t_source = int(args["timesteps"]), f"checkpoint {noa_checkpoint} (its training --timesteps)"
    elif timesteps is None:
        timesteps, t_source = info.timesteps, f"dataset {dataset}"
    if timesteps < 1:
        raise NoaError(f"--timesteps must be >= 1; got {timesteps}")
    no_tokens_reason, skip_note = _no_tokens_reason(tokenizer, vqvae_path, timesteps, t_source, no_tokens)
    if no_tokens_reason != NO_TOKENIZER:
        tokenizer = None  # the rollout measures need no tokenizer, at any horizon
    check_fit(model, projector, tokenizer, info, noa_checkpoint, vqvae_path)
    warnings = _other_tokenizer(ckpt, noa_checkpoint, tokenizer) if tokenizer is not None else []
    if tokenizer is None or warnings:
        projector = None  # its latents have nothing (or another tokenizer's) to be compared with

    if rows is None:
        pool, origin = lineage_pool(dataset, ckpt, noa_checkpoint, same_data)
        rows, chosen = choose_rows(pool, n_samples, seed)
        notes = [f"held-out pool: {origin}", *chosen]
    else:
        rows, notes = np.sort(np.asarray(rows)), [f"{len(rows)} rows chosen by the caller (not necessarily held out)"]
    if no_tokens_reason == NO_TOKENIZER and not warnings:
        notes += _tokenizer_notes(recorded_path(ckpt, noa_checkpoint, "vqvae_path"), vqvae_path)
    elif not warnings:
        notes.append(f"token sections skipped: {skip_note}")
        vqvae_path = None
    notes += _sibling_notes(Path(noa_checkpoint), ckpt)
    k = int(args.get("latent_sample_steps", DEFAULT_LATENT_SAMPLE_STEPS))
    steps = sample_steps(timesteps, k if k == -1 else min(k, timesteps))
    times = sorted({0, timesteps // 3, (2 * timesteps) // 3, timesteps})
    log(f"Diagnosing {noa_checkpoint} on {len(rows)} held-out samples of {dataset} (T={timesteps}, device {device})")
    source = SampleSource(dataset, rows)
    try:
        data = _evaluate(model, projector, tokenizer, source, timesteps, steps, times, batch_size, device, zero_theta)
    finally:
        source.close()
    if data.non_finite:
        notes.append(f"{data.non_finite} of {len(rows)} NOA rollouts hold NaN/inf; metrics that touch them are NaN")
    trained = trained_on(ckpt, noa_checkpoint, model.config)
    box_line = dataset_warning(model.config, info, rows)
    grid_line = grid_note(trained["grid"], info.grid, data=f"dataset {dataset}")
    coverage = [line for line in (box_line, grid_line) if line]

    run = run_summary(ckpt, info)
    rules = update_rules(dataset, info.space, [int(r) for r in rows])
    result = _result(
        noa_checkpoint,
        vqvae_path,
        dataset,
        timesteps,
        rows,
        notes,
        run,
        tokenizer,
        data,
        steps,
        rules,
        no_tokens_reason,
        OTHER_TOKENIZER if warnings else SKIP_REASON,
    )
    if warnings:
        result.warnings = warnings
        result.verdict += f" (WARNING: {OTHER_TOKENIZER_SHORT})"
    if tokenizer is not None and vqvae_path is not None:
        result.tokenizer_class = tokenizer.class_spec
    result.trained_on, result.coverage = trained, coverage
    if box_line:
        result.verdict += f" (WARNING: {OUTSIDE_BOX_SHORT})"
    labels = frame_labels(dataset, info, result.rows[: data.frames_cno.shape[0]])
    return Evaluation(result, data, times, ckpt.get("history") or {}, labels, training_curves_of(noa_checkpoint, ckpt))


def _no_tokens_reason(
    tokenizer: FrozenTokenizer | None, vqvae_path: Path | None, timesteps: int, t_source: str, no_tokens: bool
) -> tuple[str, str]:
    """Why the token sections are skipped, short (each section's line) and in full (the one note):
    NO_TOKENIZER when there is no tokenizer or they run (then ``tokenizer`` decides)."""
    if no_tokens and vqvae_path is not None:
        return "--no-tokens", "--no-tokens (the rollout measures need no tokenizer)"
    if tokenizer is not None and tokenizer.timesteps != timesteps:
        return (
            f"the tokenizer was trained on T={tokenizer.timesteps}, not T={timesteps} (see the note above)",
            f"tokenizer {vqvae_path} was trained on T={tokenizer.timesteps} and this evaluation runs "
            f"T={timesteps} ({t_source}); the rollout measures run at any T, the token sections at the tokenizer's",
        )
    return NO_TOKENIZER, NO_TOKENIZER


def input_path(given: str | Path | None, ckpt: dict, checkpoint: str | Path, key: str) -> Path | None:
    """The dataset or tokenizer to use: the one given, else the one the checkpoint records
    (found from any working directory; one clear error naming the flag when it is gone)."""
    if given is not None:
        return Path(given)
    path = recorded_path(ckpt, checkpoint, key)
    if path is not None and not path.exists():
        raise NoaError(
            f"checkpoint {checkpoint} was trained with {key.replace('_', ' ')} {ckpt['args'][key]}, which is not at "
            f"{path} any more; pass {RECORDED_PATHS[key]} with its new location"
        )
    return path


def _is_training_data(f: h5py.File, dataset: Path, ckpt: dict, checkpoint: str | Path) -> bool:
    """Whether ``f`` holds the samples the NOA was trained on: the recorded path, or a file
    with the same dataset fingerprint (a moved or copied training set)."""
    trained_on = recorded_path(ckpt, checkpoint, "dataset")
    if trained_on is not None and trained_on.resolve() == dataset.resolve():
        return True
    stored = (ckpt.get("fingerprints") or {}).get("dataset")
    return stored is not None and stored == h5.fingerprint_of(f)


def _check_class(ckpt: dict, checkpoint: str | Path, used: Path, vqvae_class: str | type | None) -> None:
    """The run's own tokenizer loads with the class it was trained with, which the user names:
    one message saying which, never an import of the name the checkpoint records."""
    trained_with = recorded_path(ckpt, checkpoint, "vqvae_path")
    if trained_with is None or trained_with.resolve() != used.resolve():
        return  # another tokenizer: the class given (if any) is its class
    given = None if vqvae_class is None else spec_of(vqvae_class)
    recorded = (ckpt.get("args") or {}).get("vqvae_class")
    recorded_file = (ckpt.get("fingerprints") or {}).get("vqvae_class")
    problem = class_problem(recorded, given, f"checkpoint {checkpoint}", recorded_file)
    if problem:
        raise NoaError(f"{problem} (or --no-tokens for the rollout measures alone)")


def _other_tokenizer(ckpt: dict, checkpoint: str | Path, tokenizer: FrozenTokenizer) -> list[str]:
    """The header's warning when the tokenizer is not the run's (by content where the checkpoint
    recorded its fingerprint, else by path): its latent projector was trained against another."""
    trained_with, used = recorded_path(ckpt, checkpoint, "vqvae_path"), tokenizer.path
    if trained_with is None:
        return []
    stored = (ckpt.get("fingerprints") or {}).get("tokenizer")
    if stored is not None:
        same = tokenizer.fingerprint == stored
    else:
        same = trained_with.resolve() == used.resolve()
    if same:
        return []
    return [
        f"tokenizer {used} is not the one the NOA was trained with ({trained_with}): {OTHER_TOKENIZER}; "
        "reconstruction, diversity and token agreement are this tokenizer's view of the rollouts. "
        "Leave --vqvae-path out to diagnose with the run's own tokenizer"
    ]


def _tokenizer_notes(trained_with: Path | None, used: Path | None) -> list[str]:
    """Notes when the tokenizer is not the one the NOA was trained with, or there is none."""
    if used is None:
        return [f"token sections skipped: {NO_TOKENIZER}"]
    if trained_with is None:
        return [f"the NOA was trained without a tokenizer (L_traj only); its rollouts are tokenized with {used}"]
    return []


def run_identity(ckpt: dict) -> tuple[Any, ...]:
    """What makes two checkpoints runs of one experiment: the training data (by content), how the
    run started (fresh, or a fine-tune of which checkpoint) and the architecture."""
    source = ckpt[SOURCE_KEY] if SOURCE_KEY in ckpt else (ckpt.get("args") or {}).get("init_from")
    return ((ckpt.get("fingerprints") or {}).get("dataset"), source, ckpt.get("config"))


def _sibling_notes(checkpoint: Path, ckpt: dict) -> list[str]:
    """One note when a sibling run directory (NAME-2, … beside this one) holds a newer checkpoint
    of a run of the same identity (a fine-tune there is not a newer version of this run)."""
    mine = run_identity(ckpt)
    newer = newer_sibling_checkpoint(checkpoint, lambda other: run_identity(load_checkpoint(other)) == mine)
    if newer is None:
        return []
    return [
        f"{newer} is newer than this checkpoint: a later run wrote to {newer.parent} (noa train without --checkpoint-dir "
        f"writes to the first free sibling); pass --noa-checkpoint {newer} to diagnose it"
    ]


OUTSIDE_BOX_SHORT = "θ outside the NOA's box: it extrapolates there (see the warning above)"


def trained_on(ckpt: dict, checkpoint: str | Path, config: UAFNOConfig) -> dict[str, Any]:
    """What the run was trained on, as far as it can be told: the family and grid of its
    recorded dataset (None each when that file is not there) and the family whose θ box its
    embedding reads (a fine-tune keeps its source's)."""
    path = recorded_path(ckpt, checkpoint, "dataset")
    family, grid = None, None
    if path is not None and path.is_file():
        with h5.open_dataset(path) as f:
            info = h5.read_info(f)
        family, grid = info.operator_family.name, info.grid
    return {
        "dataset": None if path is None else str(path),
        "family": family,
        "grid": grid,
        "theta_box": box_owner(config, family, "its training data's"),
    }


def run_summary(ckpt: dict, info: h5.DatasetInfo) -> dict[str, Any]:
    """What the report opens with: when, by which noa, which run (its args) and which data."""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "noa_version": noa.__version__,
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "args": dict(ckpt.get("args") or {}),
        "data": {
            "samples": info.n_samples,
            "grid": info.grid,
            "channels": info.channels,
            "timesteps": info.timesteps,
            IC_KINDS_KEY: list(info.ic_kinds),  # the recorded key of reports written before
            "operator_family": info.operator_family.as_dict(),
        },
    }


def frame_labels(dataset: str | Path, info: h5.DatasetInfo, rows: list[int]) -> list[str]:
    """Per plotted operator: its row, IC kind and the plotted channel, then θ in physical
    units (the parameter space's decode), a few parameters per line; a parameter its update
    rule does not read (dt of a convex operator, alpha of a residual one) is left out."""
    with h5.open_dataset(dataset) as f:
        thetas = f["parameters/params"][rows] if rows else []
        kinds = f[f"metadata/{IC_KIND_KEY}"][rows] if rows else []
    labels = []
    for row, theta, kind in zip(rows, thetas, kinds):
        decoded = info.space.decode(theta)
        inert = {name for name, (switch, option) in ACTS_ONLY_UNDER.items() if decoded.get(switch, option) != option}
        values = [f"{name}={_physical(value)}" for name, value in decoded.items() if name not in inert]
        lines = [", ".join(values[i : i + THETA_PER_LINE]) for i in range(0, len(values), THETA_PER_LINE)]
        labels.append("\n".join([f"row {row}: IC {info.ic_kinds[int(kind)]}, channel 0", *lines]))
    return labels


def update_rules(dataset: str | Path, space: ParameterSpace, rows: list[int]) -> list[str] | None:
    """Each row's update rule (θ's ``update_policy`` decoded); None when the space has no such dimension."""
    if RULE_DIMENSION not in space.names:
        return None
    with h5.open_dataset(dataset) as f:
        thetas = f["parameters/params"][sorted(rows)] if rows else []
    by_row = {row: str(space.decode(theta)[RULE_DIMENSION]) for row, theta in zip(sorted(rows), thetas)}
    return [by_row[row] for row in rows]


def _physical(value: Any) -> str:
    """A decoded parameter as text: floats to 3 significant digits, the rest as they are."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def check_fit(
    model: UAFNO,
    projector: LatentProjector | None,
    tokenizer: FrozenTokenizer | None,
    info: h5.DatasetInfo,
    checkpoint: str | Path,
    vqvae_path: str | Path | None,
) -> None:
    """One NoaError listing every way the checkpoint, tokenizer (when there is one) and dataset disagree."""
    cfg = model.config
    ck, tk, ds = f"checkpoint {checkpoint}", f"tokenizer {vqvae_path}", f"dataset {info.path}"
    problems = []
    if cfg.channels != info.channels:
        problems.append(f"channels: {ck} has {cfg.channels}, {ds} has {info.channels}")
    if cfg.param_dim != info.space.size:
        problems.append(f"operator parameters: {ck} takes {cfg.param_dim}, {ds} has {info.space.size}")
    factor = 2**cfg.encoder_levels
    if cfg.uses_uafno and (info.grid % factor or info.grid // factor < 2):  # the generated stack takes any grid
        problems.append(
            f"grid: {ck} needs a multiple of {factor} of at least {2 * factor} ({cfg.encoder_levels} encoder levels), "
            f"{ds} has {info.grid}"
        )
    if tokenizer is not None:
        problems += _tokenizer_problems(projector, tokenizer, info, ck, tk, ds)
    if projector is not None and projector.in_channels != cfg.bottleneck_channels:
        problems.append(
            f"bottleneck: {ck}'s latent projector takes {projector.in_channels} channels, "
            f"its model's bottleneck has {cfg.bottleneck_channels}"
        )
    if problems:
        raise NoaError(
            "the checkpoint, tokenizer and dataset do not fit each other:\n  - "
            + "\n  - ".join(problems)
            + "\nUse the tokenizer and data the NOA was trained with (and --timesteps equal to the tokenizer's T)."
        )


def _tokenizer_problems(
    projector: LatentProjector | None,
    tokenizer: FrozenTokenizer,
    info: h5.DatasetInfo,
    ck: str,
    tk: str,
    ds: str,
) -> list[str]:
    """The ways a tokenizer disagrees with the dataset and the checkpoint's projector (another T
    skips the token sections instead: see _no_tokens_reason)."""
    problems = []
    if tokenizer.grid != info.grid:
        grid = tokenizer.grid
        problems.append(f"grid: {tk} was trained on {grid}x{grid}, {ds} has {info.grid}x{info.grid}")
    if tokenizer.channels != info.channels:
        problems.append(f"channels: {tk} was trained on {tokenizer.channels}, {ds} has {info.channels}")
    if projector is not None and projector.latent_dim != tokenizer.latent_dim:
        problems.append(
            f"latent dim: {ck}'s latent projector outputs {projector.latent_dim}, {tk} has latent_dim {tokenizer.latent_dim}"
        )
    return problems


def held_out_rows(
    dataset: str | Path, args: dict, n_samples: int, seed: int, same_data: bool, trained_on: Path | None = None
) -> tuple[np.ndarray, list[str]]:
    """Sorted dataset rows to evaluate and notes saying where they come from; ``same_data``:
    the dataset holds the run's training samples (its split is then rebuilt and left out);
    otherwise rows holding a training sample of ``trained_on`` (by content) are left out."""
    candidates, origin = held_out_pool(dataset, args, same_data, trained_on)
    rows, notes = choose_rows(candidates, n_samples, seed)
    return rows, [f"held-out pool: {origin}", *notes]


def held_out_pool(
    dataset: str | Path, args: dict, same_data: bool, trained_on: Path | None = None
) -> tuple[np.ndarray, str]:
    """Every row of ``dataset`` held out from one run (see :func:`held_out_rows`), and where the
    pool comes from; NoaError when none is left."""
    candidates, origin, none_left = _one_runs_pool(dataset, args, same_data, trained_on)
    if not len(candidates):
        raise NoaError(f"no held-out samples: {none_left}")
    return candidates, origin


def _one_runs_pool(
    dataset: str | Path, args: dict, same_data: bool, trained_on: Path | None
) -> tuple[np.ndarray, str, str]:
    """:func:`held_out_pool`'s rows and origin, and what to say when there are none."""
    every = usable_rows(dataset, None)
    none_left = f"{dataset} has no valid samples; generate another dataset"
    if same_data:
        split = run_split(dataset, args)
        unseen = np.setdiff1d(every, np.union1d(split.train, split.val))
        candidates = np.union1d(split.val, unseen)
        origin = f"{len(split.val)} validation samples of the training run"
        if len(unseen):
            origin += f" and {len(unseen)} samples beyond its --n-samples"
        none_left = (
            f"the NOA was trained on every valid sample of {dataset} without a validation split; "
            "diagnose it on another dataset (e.g. `noa data generate` with another --seed)"
        )
    elif trained_on is None:
        candidates = every
        origin = f"{len(every)} valid samples; the checkpoint does not record its training data, so some may be training samples"
    elif not trained_on.is_file():
        candidates = every
        origin = f"{len(every)} valid samples; the training dataset {trained_on} is not there to compare with, so some may be training samples"
    else:
        copies = training_copies(dataset, every, trained_on, args)
        candidates = np.setdiff1d(every, copies)
        origin = f"{len(candidates)} valid samples that are none of the run's training samples (compared with {trained_on} by θ, IC and noise seed)"
        if len(copies):
            origin += f"; {len(copies)} rows that are training samples (as in files generated with the same --seed) are left out"
        none_left = (
            f"every valid sample of {dataset} is one the NOA was trained on (the same θ, IC and noise seed); "
            "diagnose it on data generated with another --seed"
        )
    return candidates, origin, none_left


def checkpoint_pool(checkpoint: str | Path, dataset: str | Path) -> tuple[np.ndarray, str]:
    """The rows of ``dataset`` held out from the run that wrote ``checkpoint`` (its training
    rows left out, whichever file they came from, and those of every run it was fine-tuned
    from), and where the pool comes from."""
    ckpt = load_checkpoint(checkpoint)
    dataset = Path(dataset)
    with h5.open_dataset(dataset) as f:
        same_data = _is_training_data(f, dataset, ckpt, checkpoint)
    return lineage_pool(dataset, ckpt, checkpoint, same_data)


def lineage_pool(
    dataset: Path, ckpt: dict, checkpoint: str | Path, same_data: bool, empty_ok: bool = False
) -> tuple[np.ndarray, str]:
    """The rows of ``dataset`` held out from the run that wrote ``checkpoint`` and from every run
    it descends from by fine-tuning (:mod:`noa.train.lineage`): a fine-tune's weights learned its
    source's training rows too. Where a source cannot be read, the pool says so. NoaError when
    no row is left, unless ``empty_ok`` (the Python API's split, which may hold none)."""
    trained_on = recorded_path(ckpt, checkpoint, "dataset")
    pool, origin, none_left = _one_runs_pool(dataset, ckpt.get("args") or {}, same_data, trained_on)
    if not len(pool) and not empty_ok:
        raise NoaError(f"no held-out samples: {none_left}")
    chain = ancestry(ckpt, checkpoint)
    if not chain.runs and chain.unknown is None:
        return pool, origin
    parts = [f"this run: {origin}"]
    for path, before in chain.runs:
        with h5.open_dataset(dataset) as f:
            theirs_too = _is_training_data(f, dataset, before, path)
        theirs, their_origin, _ = _one_runs_pool(
            dataset, before.get("args") or {}, theirs_too, recorded_path(before, path, "dataset")
        )
        pool = np.intersect1d(pool, theirs)
        parts.append(f"{path}, which it descends from by fine-tuning: {their_origin}")
    if not len(pool) and not empty_ok:
        raise NoaError(
            f"no held-out samples: every valid sample of {dataset} is a training sample of this run or of a run it "
            f"was fine-tuned from ({'; '.join(parts)}); diagnose it on data generated with another --seed"
        )
    if chain.unknown is None:
        return (
            pool,
            f"{len(pool)} rows held out from this run and every run it was fine-tuned from ({'; '.join(parts)})",
        )
    runs = "this run and the runs it descends from that can still be read" if chain.runs else "this run"
    return pool, (
        f"{len(pool)} rows held out from {runs} ({'; '.join(parts)}); WARNING: some of these rows may be training "
        f"samples: {chain.unknown}"
    )


def choose_rows(candidates: np.ndarray, n_samples: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n_samples`` of the ``candidates`` (all when fewer), chosen with ``seed``, sorted; and notes."""
    if len(candidates) < n_samples:
        return np.sort(candidates), [
            f"only {len(candidates)} held-out samples are available (asked for {n_samples}); using all of them"
        ]
    if len(candidates) > n_samples:
        pick = torch.randperm(len(candidates), generator=generator(seed, "diagnose/samples"))[:n_samples].numpy()
        return np.sort(candidates[pick]), [f"evaluating {n_samples} of them, chosen with --seed {seed}"]
    return np.sort(candidates), []


def training_copies(dataset: str | Path, rows: np.ndarray, trained_on: Path, args: dict) -> np.ndarray:
    """The ``rows`` of ``dataset`` that hold one of the run's training samples (the train split
    of ``trained_on`` rebuilt from the checkpoint's ``args``): the same θ, noise seed and IC seed,
    and the same IC field. Paths and fingerprints cannot tell this; the content can."""
    train_rows = run_split(trained_on, args).train

    def keys(f: h5py.File, wanted: np.ndarray) -> list[tuple[bytes, int]]:
        params, noise, ic_seed = (
            f[name][:] for name in ("parameters/params", "metadata/noise_seed", "metadata/ic_seed")
        )
        return [(params[r].tobytes() + noise[r].tobytes() + ic_seed[r].tobytes(), int(r)) for r in wanted]

    with h5.open_dataset(trained_on) as t, h5.open_dataset(dataset) as f:
        trained = dict(keys(t, train_rows))
        same = [
            r
            for key, r in keys(f, rows)
            if key in trained and np.array_equal(f["inputs/fields"][r], t["inputs/fields"][trained[key]])
        ]
    return np.asarray(sorted(same), dtype=np.int64)


def _tokenized(
    tokenizer: FrozenTokenizer, noa: torch.Tensor, cno: torch.Tensor, persistence: torch.Tensor
) -> dict[str, Any]:
    """One batch's features, tokens and L_latent targets (the tokenizer's side of the pass)."""
    feats_noa, feats_cno, feats_other = (compute_features(x) for x in (noa, cno[:, 0], cno[:, 1]))
    targets, tokens_noa = tokenizer.tokens(feats_noa)
    return {
        "features_noa": {k: v.cpu() for k, v in feats_noa.items()},
        "features_cno": {k: v.cpu() for k, v in feats_cno.items()},
        "targets": targets.cpu(),
        "tokens_noa": tokens_noa.cpu(),
        "tokens_cno": tokenizer.tokens(feats_cno)[1].cpu(),
        "tokens_cno_other": tokenizer.tokens(feats_other)[1].cpu(),
        "tokens_persistence": tokenizer.tokens(compute_features(persistence))[1].cpu(),
    }


@torch.no_grad()
def _evaluate(
    model: UAFNO,
    projector: LatentProjector | None,
    tokenizer: FrozenTokenizer | None,
    source: SampleSource,
    timesteps: int,
    steps: list[int],
    times: list[int],
    batch_size: int,
    device: str,
    zero_theta: bool = False,
) -> _Collected:
    parts: dict[str, list] = {name: [] for name in _Collected.__dataclass_fields__}
    for start in range(0, len(source), batch_size):
        batch = source.get_batch(list(range(start, min(start + batch_size, len(source)))))
        ic, params = batch["ic"].to(device), batch["params"].to(device)
        seeds = batch["seed"].tolist()
        cno = replay(params, ic, seeds, timesteps, realizations=2, device=device)
        # Another draw of the family at the same θ: the same replay under another noise seed.
        other = replay(params, ic, [derive_seed(s, FAMILY_DRAW) for s in seeds], timesteps, device=device)[:, 0]
        persistence = ic[:, None].expand(-1, timesteps + 1, -1, -1, -1)
        every_step = list(range(timesteps)) if projector is not None else None
        noa_params = torch.zeros_like(params) if zero_theta else params
        noa, projected = rollout_noa(model, ic, noa_params, timesteps, projector, steps=every_step)
        if tokenizer is not None:
            for name, value in _tokenized(tokenizer, noa, cno, persistence).items():
                parts[name].append(value)
        parts["errors"].append(step_errors(noa, cno, other))
        one_step_error, one_step_reference = one_step_sums(
            model, params, rollout_states(cno[:, 0], timesteps), noa_params
        )
        parts["one_step_error"].append(one_step_error)
        parts["one_step_reference"].append(one_step_reference)
        parts["non_finite"].append(int((~torch.isfinite(noa.flatten(1))).any(dim=1).sum()))
        if projected is not None:
            parts["projected"].append(projected[:, steps].mean(dim=1).cpu())
            parts["norms"].append(projected.norm(dim=-1).cpu())
        shown = max(0, min(PLOTTED_OPERATORS - start, noa.shape[0]))
        parts["frames_noa"].append(noa[:shown, times, 0].cpu())
        parts["frames_cno"].append(cno[:shown, 0, times, 0].cpu())
    return _Collected(
        features_noa=_cat_features(parts["features_noa"]),
        features_cno=_cat_features(parts["features_cno"]),
        tokens_noa=_cat(parts["tokens_noa"]),
        tokens_cno=_cat(parts["tokens_cno"]),
        tokens_cno_other=_cat(parts["tokens_cno_other"]),
        tokens_persistence=_cat(parts["tokens_persistence"]),
        errors=StepErrors.concat(parts["errors"]),
        targets=_cat(parts["targets"]),
        projected=_cat(parts["projected"]),
        norms=_cat(parts["norms"]),
        frames_cno=torch.cat(parts["frames_cno"]),
        frames_noa=torch.cat(parts["frames_noa"]),
        non_finite=sum(parts["non_finite"]),
        one_step_error=torch.cat(parts["one_step_error"]),
        one_step_reference=torch.cat(parts["one_step_reference"]),
    )


def _cat(parts: list[torch.Tensor]) -> torch.Tensor | None:
    """The batches' tensors joined along samples; None when the pass made none (no tokenizer or projector)."""
    return torch.cat(parts) if parts else None


def _cat_features(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor] | None:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else None


def _result(
    checkpoint: str | Path,
    vqvae_path: Path | None,
    dataset: str | Path,
    timesteps: int,
    rows: np.ndarray,
    notes: list[str],
    run: dict[str, Any],
    tokenizer: FrozenTokenizer | None,
    data: _Collected,
    steps: list[int],
    rules: list[str] | None = None,
    no_tokens_reason: str = NO_TOKENIZER,
    no_projector_reason: str = SKIP_REASON,
) -> DiagnosticsResult:
    sections: dict[str, Any] = {"reconstruction": None, "diversity": None, "alignment": None, "consistency": None}
    skipped: dict[str, str] = {}
    if tokenizer is None:
        skipped = {name: no_tokens_reason for name in SECTION_NAMES}
    else:
        assert data.tokens_noa is not None and data.features_noa is not None  # collected whenever there is a tokenizer
        counts = guide.code_counts(list(data.tokens_noa.T), tokenizer.codebook_sizes)
        sections["reconstruction"] = guide.reconstruction(tokenizer, data.features_noa)
        sections["diversity"] = guide.diversity(counts, tokenizer.entries)
    if data.projected is not None and data.targets is not None and data.norms is not None:
        sections["alignment"] = guide.alignment(data.projected, data.targets, steps)
        sections["consistency"] = guide.consistency(data.norms)
    elif tokenizer is not None:
        skipped = {name: no_projector_reason for name in SECTION_NAMES[2:]}
    assessed = [s.assessment for s in sections.values() if s is not None]
    alignment_verdict = (
        guide.final_verdict(assessed, aligned=data.projected is not None) if tokenizer is not None else None
    )
    categories = None if tokenizer is None else [category for category, _ in tokenizer.entries]
    rollout = summarize(
        data.errors,
        data.tokens_noa,
        data.tokens_cno,
        data.tokens_cno_other,
        data.tokens_persistence,
        categories=categories,
        rules=rules,
    )
    detail = rating.combine(
        [
            rating.alignment_criterion(alignment_verdict, no_tokens_reason),
            rating.rollout_criterion(rollout),
            rating.agreement_criterion(rollout, no_tokens_reason),
        ]
    )
    cno_reconstruction = None
    if tokenizer is not None and data.features_cno is not None:
        cno_reconstruction = tokenizer.reconstruction_mse(data.features_cno)["total"]
    return DiagnosticsResult(
        checkpoint=str(checkpoint),
        tokenizer=None if vqvae_path is None else str(vqvae_path),
        dataset=str(dataset),
        timesteps=timesteps,
        n_samples=len(rows),
        rows=[int(r) for r in rows],
        notes=notes,
        run=run,
        skipped=skipped,
        alignment_verdict=alignment_verdict,
        verdict=detail.line,
        verdict_detail=detail,
        rollout=rollout,
        cno_reconstruction=cno_reconstruction,
        one_step_skill=by_rule(data.one_step_error, data.one_step_reference, rules),
        **sections,
    )


def json_safe(value: Any) -> Any:
    """Non-finite floats -> None, recursively, so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
