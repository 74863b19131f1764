"""Settle a run before it starts: flags + config file + checkpoint -> one typed run, all checked.

:func:`settle` decides what run this is (fresh, resumed or fine-tuned), resolves every setting
with the precedence of :mod:`noa.train.config`, opens the dataset once, and checks every lock
and every flag against the data and the tokenizer. Only then is a trainer built from the
result, so a mistake costs no model construction, no file written and no file deleted.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from noa import outputs
from noa.data import h5
from noa.data.loader import Split, split_rows, usable_rows_of
from noa.distributed import Ranks, rank_device
from noa.errors import NoaError
from noa.model import UAFNOConfig
from noa.model.generated import family_fields
from noa.model.update_rule import UpdateRule
from noa.presets import Preset, train_preset
from noa.run_siblings import checkpoints_in, close_run, free_sibling
from noa.runtime import resolve_device
from noa.tokenizer.frozen import FrozenTokenizer, open_tokenizer
from noa.tokenizer.user_class import absolute, class_problem
from noa.train import config as flags_module
from noa.train import rundir
from noa.train.checkpoint import find_latest, load_checkpoint, recorded_path
from noa.train.config import ARCHITECTURE, GENERATED_SIZES, TrainConfig, flag_name
from noa.train.execution import Execution, resolve_execution
from noa.train.fit import check_fit, origin

log = logging.getLogger("noa.train")


@dataclass(frozen=True)
class StartingPoint:
    """Where training starts: ``fresh``, ``resume`` (exactly) or ``finetune`` (weights only)."""

    kind: str
    path: Path | None = None
    checkpoint: dict[str, Any] | None = None
    auto: bool = False  # chosen by --resume auto (a fresh start there: no checkpoint yet)

    @property
    def file(self) -> Path:
        """The checkpoint file a resume or fine-tune starts from (a fresh run has none)."""
        if self.path is None:
            raise ValueError("a fresh run starts from no checkpoint")
        return self.path

    @property
    def saved(self) -> dict[str, Any]:
        """The checkpoint a resume or fine-tune starts from."""
        if self.checkpoint is None:
            raise ValueError("a fresh run starts from no checkpoint")
        return self.checkpoint


@dataclass(frozen=True)
class DatasetView:
    """What training needs to know about the dataset before reading samples."""

    info: h5.DatasetInfo
    rows: np.ndarray  # the first ``n_samples`` valid rows
    split: Split
    fingerprint: str


@dataclass(frozen=True)
class Run:
    """A settled run: its config, starting point, data and device, all checked."""

    config: TrainConfig
    start: StartingPoint
    data: DatasetView
    device: str
    tokenizer: FrozenTokenizer | None  # loaded on the CPU; the trainer moves it to its device
    ranks: Ranks = Ranks()
    execution: Execution = Execution()
    followed: tuple[str, ...] = ()  # settings whose default followed the data or the run's length

    @property
    def tokenizer_fingerprint(self) -> str | None:
        """What the checkpoints record of the tokenizer, so that a resume can tell it is the same one."""
        return self.tokenizer.fingerprint if self.tokenizer is not None else None

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all ranks (``--batch-size`` is per rank)."""
        return self.config.batch_size * self.ranks.world_size


def settle(cli: dict[str, Any], ranks: Ranks = Ranks()) -> Run:
    """The run asked for by ``cli`` (flag name -> value, None = not given; ``config`` = file)
    on this process's ``ranks``."""
    file_values = flags_module.read_config_file(cli["config"]) if cli.get("config") else {}
    explicit = flags_module.requested_flags(cli, file_values)
    start = _starting_point(explicit)
    saved_args = (start.checkpoint or {}).get("args") or {}
    dataset_path = (
        explicit.get("dataset")
        or (saved_args.get("dataset") if start.kind == "resume" else None)
        or TrainConfig.dataset
    )
    if start.kind == "resume" and "dataset" not in explicit and not Path(dataset_path).exists():
        raise NoaError(
            f"the dataset {start.file.name} was trained on, {dataset_path}, is not there any more (moved or deleted); "
            "pass its new path with --dataset PATH (the same data, recognised by its content, continues the run exactly)"
        )
    with h5.open_dataset(dataset_path) as f:
        info = h5.read_info(f)
        fingerprint = h5.fingerprint_of(f)
        start = _fine_tune_if_other_dataset(start, fingerprint, Path(dataset_path))

        def batches_per_epoch(values: dict[str, Any]) -> int:
            train = split_rows(usable_rows_of(f, info, values["n_samples"]), values["val_split"], values["seed"]).train
            return len(train) // max(1, values["batch_size"] * ranks.world_size)

        cfg, followed, tokenizer = _resolve(explicit, start, info, ranks, batches_per_epoch)
        rows = usable_rows_of(f, info, cfg.n_samples)
    split = split_rows(rows, cfg.val_split, cfg.seed)
    data = DatasetView(info=info, rows=rows, split=split, fingerprint=fingerprint)
    resumed = start.file if start.kind == "resume" else None
    check_fit(
        cfg,
        info,
        t_origin=origin("timesteps", cli, file_values, resumed if "timesteps" not in followed else None),
        tokenizer_origin=_tokenizer_origin(cli, file_values, start),
        tokenizer=tokenizer,
    )
    _check_data(cfg, data, ranks)
    _check_same_tokenizer(tokenizer, start)
    # The device and how the step runs are checked before the directory is chosen (which says where the run writes).
    device = rank_device(resolve_device(cfg.device), ranks)
    execution = resolve_execution(
        device, cfg.precision, cfg.compile, cfg.cuda_graphs, cfg.activation_checkpointing, ranks.world_size
    )
    cfg = replace(
        cfg,
        checkpoint_dir=rundir.choose(
            cfg.checkpoint_dir,
            kind=start.kind,
            explicit="checkpoint_dir" in explicit,
            overwrite=cfg.overwrite,
            resume_from=start.path,
            resume_ckpt=start.checkpoint,
            auto=start.auto,
        ),
    )
    _check_outputs(cfg)
    return Run(
        config=cfg,
        start=start,
        data=data,
        device=device,
        tokenizer=tokenizer,
        ranks=ranks,
        execution=execution,
        followed=followed,
    )


def _starting_point(explicit: dict[str, Any]) -> StartingPoint:
    if explicit.get("resume") and explicit.get("init_from"):
        raise NoaError("give either --resume or --init-from, not both")
    if explicit.get("resume") == "auto":
        directory = Path(explicit.get("checkpoint_dir", TrainConfig.checkpoint_dir))
        if not checkpoints_in(directory):
            _refuse_a_likely_typo(directory, confirmed=bool(explicit.get("new_ok")))
            # One command line for the first start and every restart (torchrun --max-restarts).
            log.info(f"--resume auto: no checkpoint in {directory} yet; starting a fresh run there")
            return StartingPoint("fresh", auto=True)
        path, ckpt = find_latest(directory)
        return StartingPoint("resume", path, ckpt, auto=True)
    if explicit.get("resume"):
        path = Path(explicit["resume"])
        return StartingPoint("resume", path, load_checkpoint(path))
    if explicit.get("init_from"):
        path = Path(explicit["init_from"])
        return StartingPoint("finetune", path, load_checkpoint(path))
    return StartingPoint("fresh")


def _refuse_a_likely_typo(directory: Path, confirmed: bool) -> None:
    """``--resume auto`` starts fresh where no run is yet (elastic restarts), but a directory that
    does not exist beside a run of a close name is more likely a typo than a new run."""
    if confirmed or directory.exists():
        return
    close = close_run(directory)
    if close is not None:
        raise NoaError(
            f"--checkpoint-dir {directory} does not exist, and {close} beside it holds a run: did you mean {close}? "
            f"To start a new run in {directory}, confirm it with --resume auto --new-ok"
        )


def _fine_tune_if_other_dataset(start: StartingPoint, fingerprint: str, dataset: Path) -> StartingPoint:
    """The guide's fine-tune: ``--resume`` on another dataset loads the weights only. Not with
    ``--resume auto``, which restarts a run on its own data (a fine-tune there would start anew at
    every restart): that is refused, naming both datasets."""
    if start.kind != "resume":
        return start
    stored = start.saved.get("fingerprints", {}).get("dataset")
    if stored is None or stored == fingerprint:
        return start
    if start.auto:
        raise NoaError(_other_data_at_auto(start, dataset))
    log.info(f"The dataset differs from the one {start.file.name} was trained on: fine-tuning (weights only).")
    return replace(start, kind="finetune")


def _other_data_at_auto(start: StartingPoint, dataset: Path) -> str:
    """The refusal of ``--resume auto`` on a run trained on other data than ``--dataset``."""
    trained_on = recorded_path(start.saved, start.file, "dataset")
    same_path = trained_on is not None and trained_on.resolve() == dataset.resolve()
    given = shlex.quote(str(dataset))
    if same_path:
        differs = f"--dataset {dataset} is the path it was trained on, but the file's content has changed since (regenerated?)"
        keep = f"to continue it, restore the data it was trained on at {dataset}"
    else:
        differs = f"--dataset {dataset} holds other data than the one it was trained on, {trained_on or 'unrecorded'}"
        keep = f"to continue it, drop --dataset{f' (or pass {trained_on})' if trained_on else ''}"
    return (
        f"--resume auto continues the run in {start.file.parent} on its own data, and {differs}; {keep}; to fine-tune "
        f"it on {dataset}, start a new run from its weights: noa train --init-from {shlex.quote(str(start.file))} "
        f"--dataset {given} --checkpoint-dir {shlex.quote(str(free_sibling(start.file.parent)))}"
    )


def _resolve(
    explicit: dict[str, Any],
    start: StartingPoint,
    info: h5.DatasetInfo,
    ranks: Ranks,
    batches_per_epoch: Callable[[dict[str, Any]], int],
) -> tuple[TrainConfig, tuple[str, ...], FrozenTokenizer | None]:
    """The effective config (precedence, architecture from the checkpoint, locks, flag checks),
    the settings whose defaults followed the data or the run, and the tokenizer (loaded)."""
    saved_args = (start.checkpoint or {}).get("args")
    if saved_args is not None:  # a checkpoint from before a flag existed ran without it
        saved_args = {**flags_module.LEGACY_ARGS, **saved_args}
    if start.kind == "resume":
        inherited = saved_args
    elif start.kind == "finetune":  # --init-from, or --resume on other data
        kept = {k: v for k, v in (saved_args or {}).items() if k not in flags_module.NOT_INHERITED_BY_FINETUNE}
        inherited = {**kept, **flags_module.FINETUNE_DEFAULTS}
    else:
        inherited = None
    preset = _preset(explicit, start)
    values = flags_module.resolve_flags(explicit, inherited, dict(preset.values) if preset else None)
    if start.kind == "finetune":  # recorded however the fine-tune was asked for, from any working directory
        values["init_from"] = os.path.abspath(start.file)
    if preset is not None:
        _check_preset_needs(preset, values, explicit)
    tokenizer = _open_tokenizer(values, explicit, start)
    followed = _follow_the_data(values, explicit, inherited or {}, info, batches_per_epoch, tokenizer, preset)
    rule = UpdateRule.from_space(info.space) if values["rule_head"] else None
    box = _theta_box(info)
    model = UAFNOConfig(
        channels=info.channels,
        param_dim=info.space.size,
        update_rule=rule.to_dict() if rule else None,
        theta_box=box,
        theta_family=None if box is None else info.operator_family.name,
        # The generated stack (when --backbone asks for it) holds the family's largest operator
        # and reads its discrete dimensions as one-hot codes; flags override the sizes.
        **(family_fields(info.space, info.operator_family.unit_box()) if values["backbone"] != "uafno" else {}),
    )
    if start.checkpoint is not None and "config" in start.checkpoint:
        model = _beside_a_trained_uafno(UAFNOConfig.from_dict(start.checkpoint["config"]), start, explicit, info)
        values["rule_head"] = model.update_rule is not None
        clash = [
            f"{flag_name(k)}: checkpoint {getattr(model, k)}, asked {explicit[k]}"
            for k in ARCHITECTURE
            if k in explicit and explicit[k] != getattr(model, k)
        ]
        if "rule_head" in explicit and explicit["rule_head"] != values["rule_head"]:
            clash.append(f"--rule-head: checkpoint {values['rule_head']}, asked {explicit['rule_head']}")
        if clash:
            raise NoaError("the checkpoint's architecture differs from the flags: " + "; ".join(clash))
        if (model.channels, model.param_dim) != (info.channels, info.space.size):
            raise NoaError(
                f"the checkpoint's model takes {model.channels} channels and {model.param_dim} parameters; "
                f"dataset {info.path} has {info.channels} channels and {info.space.size} parameters"
            )
        values.update({k: getattr(model, k) for k in ARCHITECTURE})
    if start.kind == "resume" and saved_args:
        values["batch_size"], batch_change = _per_rank_batch(start.saved, explicit, ranks)
        _check_resume_locks(saved_args, values, explicit, [batch_change] if batch_change else [])
    cfg = TrainConfig.from_flags(values, model=model)
    flags_module.validate(cfg)
    if "one_step_states" in explicit and not cfg.one_step_steps:
        log.info(_no_one_step_phase(cfg, start, explicit))
    if start.kind == "finetune":
        log.info(_kept_by_finetune(cfg, start, explicit))
    return cfg, followed, tokenizer


def _preset(explicit: dict[str, Any], start: StartingPoint) -> Preset | None:
    """The --preset this start applies (None: none given, or a resume, which keeps its run's
    settings: there a preset other than the one the run recorded is refused)."""
    if not explicit.get("preset"):
        return None
    preset = train_preset(explicit["preset"])
    if start.kind != "resume":
        return preset
    recorded = (start.saved.get("args") or {}).get("preset")
    if recorded != preset.name:
        ran = f"--preset {recorded}" if recorded else "no preset"
        raise NoaError(
            f"--preset {preset.name}: {start.file.name}'s run started with {ran}, and a resume keeps the settings its "
            "run recorded; drop --preset to continue the run, or fine-tune from its weights with --init-from CHECKPOINT "
            "and a new --checkpoint-dir (the preset then sets what the fine-tune does not keep)"
        )
    return None


def _check_preset_needs(preset: Preset, values: dict[str, Any], explicit: dict[str, Any]) -> None:
    """A preset that turns L_latent on needs a tokenizer: said in the preset's terms, since the
    user never typed --enable-latent-loss."""
    if values["enable_latent_loss"] and not values.get("vqvae_path") and "enable_latent_loss" not in explicit:
        raise NoaError(
            f"--preset {preset.name} trains with L_commit and L_latent, which need a tokenizer: pass --vqvae-path DIR "
            f"(e.g. one from `noa vqvae train --preset {preset.name}`), or --no-enable-latent-loss for L_traj alone"
        )


def _open_tokenizer(values: dict[str, Any], explicit: dict[str, Any], start: StartingPoint) -> FrozenTokenizer | None:
    """The run's tokenizer, loaded by the class the user named (none: noa's own). A resume, or a
    fine-tune that keeps its checkpoint's tokenizer, must name the class the checkpoint records."""
    path, given = values.get("vqvae_path"), values.get("vqvae_class")
    if not path:
        if given:
            raise NoaError(
                "--vqvae-class names the class of a tokenizer directory; give the directory with --vqvae-path"
            )
        return None
    keeps_tokenizer = start.kind == "resume" or (start.kind == "finetune" and "vqvae_path" not in explicit)
    if keeps_tokenizer:
        recorded = (start.saved.get("args") or {}).get("vqvae_class")
        recorded_file = (start.saved.get("fingerprints") or {}).get("vqvae_class")
        problem = class_problem(recorded, given, start.file.name, recorded_file)
        if problem:
            raise NoaError(problem)
    if given:
        values["vqvae_class"] = absolute(given)
    return open_tokenizer(path, given)


def _theta_box(info: h5.DatasetInfo) -> list[list[float]] | None:
    """The box of the dataset's recorded family, which a new model's θ embedding is scaled to;
    None for the whole space (nothing to rescale)."""
    box = info.operator_family.unit_box()
    return None if all(pair == [0.0, 1.0] for pair in box) else box


def _beside_a_trained_uafno(
    model: UAFNOConfig, start: StartingPoint, explicit: dict[str, Any], info: h5.DatasetInfo
) -> UAFNOConfig:
    """A fine-tune of a U-AFNO that asks ``--backbone hybrid`` adds the θ-generated stack beside
    the trained U-AFNO (its output starts near zero, so the hybrid starts as the U-AFNO),
    sized from the new data's family unless flags size it; any other change is a clash."""
    if start.kind != "finetune" or model.backbone != "uafno" or explicit.get("backbone") != "hybrid":
        return model
    sizes = {k: explicit[k] for k in GENERATED_SIZES if k in explicit}
    return replace(model, **{**family_fields(info.space, info.operator_family.unit_box()), **sizes}, backbone="hybrid")


def _follow_the_data(
    values: dict[str, Any],
    explicit: dict[str, Any],
    inherited: dict[str, Any],
    info: h5.DatasetInfo,
    batches_per_epoch: Callable[[dict[str, Any]], int],
    tokenizer: FrozenTokenizer | None,
    preset: Preset | None = None,
) -> tuple[str, ...]:
    """Every default that follows the data (config.DATA_DEFAULTS), here alone, when neither
    given nor inherited: T is the tokenizer's (which must match) with one, else the dataset's;
    a window longer than T becomes T; the one-step phase is the run's first half; the warmup is
    the guide's 500 batches, or a tenth of a shorter run (500 in a 40-batch run would keep the
    LR below the peak asked for). A ``preset``'s values count as given, but for the window,
    which shrinks to a shorter T as the default's does, and its one-step rule applies. Returns
    the keys that followed."""
    given = {**(preset.values if preset else {}), **explicit}
    followed = [k for k in ("timesteps", "warmup_steps") if k not in given and k not in inherited]
    if "timesteps" not in explicit and "timesteps" not in inherited:
        if tokenizer is not None:
            values["timesteps"] = tokenizer.timesteps
        else:
            values["timesteps"] = info.timesteps
    if "bptt_window" not in explicit and values["bptt_window"] > values["timesteps"]:
        values["bptt_window"] = values["timesteps"]
    if values.get("one_step_steps") is None:
        total = values["epochs"] * batches_per_epoch(values)
        asked = preset.one_step_steps(total) if preset else None
        values["one_step_steps"] = total // 2 if asked is None else asked
    if "warmup_steps" in followed:
        values["warmup_steps"] = min(flags_module.GUIDE_WARMUP, values["epochs"] * batches_per_epoch(values) // 10)
    return tuple(followed)


def _no_one_step_phase(cfg: TrainConfig, start: StartingPoint, explicit: dict[str, Any]) -> str:
    """The warning for --one-step-states in a run that has no one-step phase to apply it to."""
    why = "--one-step-steps 0" if "one_step_steps" in explicit or start.kind != "finetune" else "a fine-tune has none"
    return (
        f"Warning: --one-step-states {cfg.one_step_states} does nothing: this run has no one-step phase ({why}); "
        "drop it, or give --one-step-steps N for a one-step phase of N batches"
    )


def _kept_by_finetune(cfg: TrainConfig, start: StartingPoint, explicit: dict[str, Any]) -> str:
    """The start-up line of a fine-tune: which objective and architecture it kept, which flags changed."""
    flat = cfg.flags()

    def shown(key: str) -> str:
        value = flat[key]
        if isinstance(value, bool):
            return flag_name(key) if value else f"--no-{flag_name(key)[2:]}"
        return f"{flag_name(key)} {value}"

    unused = GENERATED_SIZES if not cfg.model.uses_generated else ()  # a U-AFNO alone has no generated stack
    kept = [
        shown(k)
        for k in (*flags_module.OBJECTIVE, *ARCHITECTURE)
        if k not in explicit and flat[k] is not None and k not in unused
    ]
    changed = [shown(k) for k in (*flags_module.OBJECTIVE, *ARCHITECTURE) if k in explicit]
    losses = "L_traj" + (" + L_commit" if cfg.vqvae_path else "") + (" + L_latent" if cfg.enable_latent_loss else "")
    line = f"The fine-tune keeps {start.file.name}'s objective and architecture unless flags change them: {losses}; kept: {', '.join(kept)}"
    line += f"; changed by flags: {', '.join(changed)}" if changed else ""
    if cfg.one_step_steps:
        return line + f"; one-step phase: the first {cfg.one_step_steps} batches (--one-step-steps)"
    asked = " (--one-step-steps 0)" if "one_step_steps" in explicit else ""
    return line + f"; no one-step phase{asked or ': the model already knows the map (--one-step-steps N asks for one)'}"


def _per_rank_batch(ckpt: dict[str, Any], explicit: dict[str, Any], ranks: Ranks) -> tuple[int, str | None]:
    """A resume keeps the global batch (per-rank batch x ranks), so N ranks can resume on M:
    the per-rank batch follows from it unless given, and must then agree with it (else the
    second value says how it differs, for the one list of refused changes)."""
    saved_global = int(ckpt.get("parts", {}).get("cursor", {}).get("global_batch", ckpt["args"]["batch_size"]))
    world = ranks.world_size
    if "batch_size" in explicit:
        asked = int(explicit["batch_size"])
        if asked * world != saved_global:
            return asked, (
                f"--batch-size {asked} on {world} rank(s) is a global batch of {asked * world}, "
                f"but the run was trained with a global batch of {saved_global}"
            )
        return asked, None
    if saved_global % world:
        raise NoaError(
            f"the run's global batch {saved_global} does not split over {world} ranks; resume on a number of ranks "
            f"that divides it, or fine-tune with --init-from"
        )
    return saved_global // world, None


def _check_resume_locks(
    saved: dict[str, Any], values: dict[str, Any], explicit: dict[str, Any], other_changes: list[str]
) -> None:
    """One refusal naming every locked setting the flags change (``other_changes``: the batch's)."""
    diffs = other_changes + [
        f"{flag_name(k)}: checkpoint {saved[k]!r}, now {values[k]!r}"
        for k in flags_module.RESUME_LOCKED
        if k in explicit and k in saved and saved[k] != values[k]
    ]
    if diffs:
        raise NoaError(
            "cannot resume with settings that change the data split, the batches, the target or the LR schedule: "
            + "; ".join(diffs)
            + ". Drop these flags to continue the run, or start a fine-tune from its weights with --init-from CHECKPOINT "
            "(fresh optimizer and schedule) and a new --checkpoint-dir"
        )


def _tokenizer_origin(cli: dict[str, Any], file_values: dict[str, Any], start: StartingPoint) -> str | None:
    """Where --vqvae-path came from when the user did not type it: the config file or the checkpoint."""
    if cli.get("vqvae_path") is not None:
        return None
    if "vqvae_path" in file_values:
        return f"from --config {cli['config']}"
    return f"kept from {start.file.name}" if start.path is not None else None


def _check_data(cfg: TrainConfig, data: DatasetView, ranks: Ranks) -> None:
    """The split and the batch (the shapes are check_fit's)."""
    if len(data.split.val) == 0:
        raise NoaError("the validation split is empty; raise --val-split or --n-samples")
    if len(data.split.train) < cfg.batch_size * ranks.world_size:
        raise NoaError(
            f"--batch-size {cfg.batch_size} (x {ranks.world_size} ranks) is larger than the {len(data.split.train)} "
            "training samples; lower the batch size or use more samples"
        )


def _check_same_tokenizer(tokenizer: FrozenTokenizer | None, start: StartingPoint) -> None:
    """A resume keeps the tokenizer it was trained with, told by content (whether it fits the
    data is check_fit's; whether it is of the same class, _open_tokenizer's)."""
    if tokenizer is None:
        return
    stored = (start.checkpoint or {}).get("fingerprints", {}).get("tokenizer")
    if start.kind == "resume" and stored is not None and stored != tokenizer.fingerprint:
        raise NoaError(
            f"tokenizer {tokenizer.path} is not the one {start.file.name} was trained with (its config or weights "
            "differ), so L_commit and L_latent would change meaning mid-run. Resume with the original tokenizer, or "
            "start a fine-tune with --init-from CHECKPOINT and a new --checkpoint-dir"
        )


def _check_outputs(cfg: TrainConfig) -> None:
    """The outputs can be written (which directory is :func:`noa.train.rundir.choose`'s call)."""
    if cfg.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError as err:
            raise NoaError(
                "--tensorboard needs the tensorboard package: pip install tensorboard (or drop --tensorboard)"
            ) from err
    directory = Path(cfg.checkpoint_dir)
    # Two checkpoints (the new one beside its temporary copy) of weights and two Adam moments.
    outputs.check_writable(
        directory, "--checkpoint-dir", directory=True, needed_bytes=2 * 3 * 4 * _parameter_count(cfg)
    )


def _parameter_count(cfg: TrainConfig) -> int:
    """The NOA's parameter count, from a model built on the meta device (no memory, no init)."""
    import torch

    from noa.model import UAFNO

    with torch.device("meta"):
        return sum(p.numel() for p in UAFNO(cfg.model).parameters())
