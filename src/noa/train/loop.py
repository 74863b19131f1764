"""`noa train`: the NOA training loop, top to bottom.

setup (config, data, tokenizer, model, optimizer, schedule, starting point)
→ for each epoch: for each batch: CNO target → TBPTT step → update → log → maybe checkpoint
→ validation → history, best model, epoch checkpoint, early stopping.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from noa.data import h5
from noa.data.loader import EpochBatchSampler, SampleSource, split_rows, usable_rows
from noa.errors import NoaError
from noa.features import feature_names
from noa.model import LatentProjector, UAFNO, UAFNOConfig, check_grid
from noa.operators.replay import replay
from noa.runtime import resolve_device
from noa.seeding import derive_seed
from noa.train import config as config_module
from noa.train.checkpoint import FORMAT_VERSION, load_checkpoint, save_atomic
from noa.train.config import TrainConfig
from noa.train.resume import (
    OLD_PROJECTOR_WARNING,
    Cursor,
    Progress,
    cursor_of,
    find_latest,
    infer_global_step,
    locked_differences,
    progress_of,
)
from noa.train.rollout import sample_steps
from noa.train.schedule import WarmupCosine
from noa.train.step import BatchLosses, Objective, eval_batch, train_batch

ARCHITECTURE = ("base_channels", "encoder_levels", "modes", "afno_blocks")
LOSS_KEYS = ("total", "traj", "commit", "latent")


class TrainingInterrupted(NoaError):
    """SIGINT/SIGTERM: a checkpoint was written; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class TrainResult:
    checkpoint_dir: Path
    global_step: int
    history: dict[str, list[float]]
    best_val_loss: float
    last_losses: BatchLosses | None


def tokenizer_fingerprint(path: str | Path) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for name in ("config.json", "weights.pt"):
        digest.update((Path(path) / name).read_bytes())
    return digest.hexdigest()


@contextmanager
def _seeded_init(seed: int) -> Iterator[None]:
    """Module constructors draw from torch's global RNG; fork it so initialisation depends on
    ``seed`` alone and the caller's RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(seed)
        yield


class _StopFlag:
    """Turns SIGINT/SIGTERM into a request to stop at the next safe point."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._handle)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum


def _summary(losses: dict[str, float | None]) -> str:
    """The guide's epoch line: total=… traj=… commit=… latent=… (absent terms left out)."""
    specs = {"total": ".4f", "traj": ".4f", "commit": ".6f", "latent": ".3f"}
    return " ".join(f"{key}={format(losses[key], spec)}" for key, spec in specs.items() if losses[key] is not None)


class Trainer:
    """One training run; see the module docstring for its shape."""

    def __init__(self, cli_values: dict[str, Any], log: Callable[[str], None] = print):
        self.log = log
        self._setup(cli_values)

    # ---------------------------------------------------------------- setup

    def _setup(self, cli: dict[str, Any]) -> None:
        cfg, mode, ckpt_path, ckpt = self._starting_point(cli)
        self._setup_data(cfg)
        if mode == "resume" and ckpt.get("args") is not None:
            diffs = locked_differences(ckpt["args"], cfg.to_dict(), config_module.RESUME_LOCKED)
            if diffs:
                raise NoaError(
                    "cannot resume with settings that change the optimisation path: " + "; ".join(diffs)
                    + ". Drop these flags to continue the run, or fine-tune from its weights with --init-from"
                )
        self.checkpoint_dir = Path(cfg.checkpoint_dir)
        self._setup_tokenizer(cfg)
        self._setup_model(cfg, ckpt)
        self.cursor, self.progress = Cursor(), Progress()
        if mode == "resume":
            self._restore(ckpt_path, ckpt)
        elif mode == "finetune":
            self._init_from(ckpt_path, ckpt)
        if mode != "resume":
            self._claim_checkpoint_dir(cfg.overwrite)
        if cfg.bptt_window < cfg.timesteps and cfg.timesteps % cfg.bptt_window:
            self.log(f"Note: --bptt-window {cfg.bptt_window} does not divide --timesteps {cfg.timesteps}; the last window has {cfg.timesteps % cfg.bptt_window} steps.")

    def _starting_point(self, cli: dict[str, Any]) -> tuple[TrainConfig, str, Path | None, dict[str, Any] | None]:
        """The effective config and where training starts: fresh, resume or fine-tune."""
        file_values = config_module.read_config_file(cli["config"]) if cli.get("config") else {}
        requested = {**file_values, **{k: v for k, v in cli.items() if v is not None}}
        ckpt, ckpt_path, mode = None, None, "fresh"
        if requested.get("resume") and requested.get("init_from"):
            raise NoaError("give either --resume or --init-from, not both")
        if requested.get("resume"):
            mode = "resume"
            if requested["resume"] == "auto":
                directory = requested.get("checkpoint_dir", TrainConfig.checkpoint_dir)
                ckpt_path, ckpt = find_latest(directory, self.log)
            else:
                ckpt_path = Path(requested["resume"])
                ckpt = load_checkpoint(ckpt_path)
        elif requested.get("init_from"):
            mode, ckpt_path = "finetune", Path(requested["init_from"])
            ckpt = load_checkpoint(ckpt_path)
        inherited = ckpt.get("args") if (ckpt is not None and mode == "resume") else None
        if inherited is not None and self._is_other_dataset(requested.get("dataset", inherited.get("dataset")), ckpt):
            mode = "finetune"
            inherited = {k: v for k, v in inherited.items() if k not in config_module.NOT_INHERITED_BY_FINETUNE}
            self.log(f"The dataset differs from the one {ckpt_path.name} was trained on: fine-tuning (weights only).")
        cfg, explicit = config_module.merge(cli, file_values, inherited)
        if ckpt is not None and "config" in ckpt:  # the architecture is the checkpoint's
            stored = ckpt["config"]
            clash = [f"--{k.replace('_', '-')}: checkpoint {stored[k]}, asked {getattr(cfg, k)}" for k in ARCHITECTURE if k in explicit and stored.get(k) != getattr(cfg, k)]
            if clash:
                raise NoaError("the checkpoint's architecture differs from the flags: " + "; ".join(clash))
            for k in ARCHITECTURE:
                setattr(cfg, k, stored.get(k, getattr(cfg, k)))
        config_module.validate(cfg)
        self.device = resolve_device(cfg.device)
        return cfg, mode, ckpt_path, ckpt

    def _setup_data(self, cfg: TrainConfig) -> None:
        rows = usable_rows(cfg.dataset, cfg.n_samples)
        split = split_rows(rows, cfg.val_split, cfg.seed)
        with h5.open_dataset(cfg.dataset) as f:
            self.info = h5.read_info(f)
        if cfg.timesteps > self.info.timesteps:
            raise NoaError(f"--timesteps {cfg.timesteps} is more than the dataset's T={self.info.timesteps}; lower it or generate a longer dataset")
        if len(split.val) == 0:
            raise NoaError("the validation split is empty; raise --val-split or --n-samples")
        use_cache = self.info.has_trajectories and self.info.realizations >= cfg.n_realizations
        self.train_source = SampleSource(cfg.dataset, split.train, with_trajectories=use_cache)
        self.val_source = SampleSource(cfg.dataset, split.val, with_trajectories=use_cache)
        self.train_sampler = EpochBatchSampler(len(split.train), cfg.batch_size, cfg.seed)
        self.val_sampler = EpochBatchSampler(len(split.val), cfg.batch_size, cfg.seed, shuffle=False, drop_last=False)
        self.batches_per_epoch = len(self.train_sampler)
        self.dataset_fingerprint = h5.fingerprint(cfg.dataset)

    def _setup_tokenizer(self, cfg: TrainConfig) -> None:
        self.tokenizer, self.tokenizer_fp = None, None
        if cfg.vqvae_path:
            from noa.tokenizer import check_compatible, load_tokenizer

            self.tokenizer = load_tokenizer(cfg.vqvae_path, device=self.device)
            check_compatible(
                self.tokenizer.config,
                feature_names=feature_names(self.info.channels),
                timesteps=cfg.timesteps,
                channels=self.info.channels,
                grid=self.info.grid,
                source=f"dataset {cfg.dataset} at --timesteps {cfg.timesteps}",
            )
            self.tokenizer_fp = tokenizer_fingerprint(cfg.vqvae_path)

    def _setup_model(self, cfg: TrainConfig, ckpt: dict[str, Any] | None) -> None:
        """Model, projector, optimizer, schedule and the objective they are trained on."""
        model_cfg = UAFNOConfig(
            channels=self.info.channels,
            param_dim=self.info.space.size,
            base_channels=cfg.base_channels,
            encoder_levels=cfg.encoder_levels,
            modes=cfg.modes,
            afno_blocks=cfg.afno_blocks,
        )
        if ckpt is not None and "config" in ckpt:
            model_cfg = UAFNOConfig.from_dict(ckpt["config"])
            if (model_cfg.channels, model_cfg.param_dim) != (self.info.channels, self.info.space.size):
                raise NoaError(
                    f"the checkpoint's model takes {model_cfg.channels} channels and {model_cfg.param_dim} parameters; "
                    f"dataset {cfg.dataset} has {self.info.channels} channels and {self.info.space.size} parameters"
                )
        check_grid(model_cfg, self.info.grid)
        with _seeded_init(derive_seed(cfg.seed, "init-model")):
            self.model = UAFNO(model_cfg).to(self.device)
        self.projector = None
        if cfg.enable_latent_loss:
            with _seeded_init(derive_seed(cfg.seed, "init-projector")):
                self.projector = LatentProjector(self.model.bottleneck_channels, self.tokenizer.latent_dim, cfg.projector_hidden).to(self.device)
        params = list(self.model.parameters()) + (list(self.projector.parameters()) if self.projector else [])
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = WarmupCosine(self.optimizer, cfg.lr, cfg.warmup_steps, cfg.epochs * self.batches_per_epoch, cfg.lr_schedule)
        self.cfg, self.model_cfg = cfg, model_cfg
        self.objective = Objective(
            model=self.model,
            projector=self.projector,
            tokenizer=self.tokenizer,
            lambda_commit=cfg.lambda_commit,
            lambda_latent=cfg.lambda_latent,
            bptt_window=cfg.bptt_window,
            latent_steps=sample_steps(cfg.timesteps, cfg.latent_sample_steps) if cfg.enable_latent_loss else [],
        )
    @staticmethod
    def _is_other_dataset(dataset: str | None, ckpt: dict[str, Any]) -> bool:
        stored = ckpt.get("fingerprints", {}).get("dataset")
        return dataset is not None and stored is not None and h5.fingerprint(dataset) != stored

    def _claim_checkpoint_dir(self, overwrite: bool) -> None:
        """A new run never mixes its checkpoints with another run's, nor deletes them unasked."""
        existing = sorted(p.name for p in self.checkpoint_dir.glob("*.pt"))
        if not existing:
            return
        if not overwrite:
            raise NoaError(
                f"--checkpoint-dir {self.checkpoint_dir} already holds checkpoints ({', '.join(existing[:4])}"
                f"{', …' if len(existing) > 4 else ''}); continue that run with --resume auto, choose another "
                "--checkpoint-dir, or pass --overwrite to delete them"
            )
        for name in [*existing, "latest.json", "metrics.jsonl"]:
            (self.checkpoint_dir / name).unlink(missing_ok=True)

    def _load_weights(self, ckpt: dict[str, Any]) -> bool:
        """Model and (when both sides have one) projector weights; True if the projector loaded."""
        self.model.load_state_dict(ckpt["model_state_dict"])
        self.log("  ✓ Loaded model weights")
        align = ckpt.get("alignment_state")
        if self.projector is not None and align:
            if int(align["latent_dim"]) != self.projector.latent_dim:
                raise NoaError(
                    f"the checkpoint's projector outputs {align['latent_dim']} dims but tokenizer "
                    f"{self.cfg.vqvae_path} has latent_dim {self.projector.latent_dim}"
                )
            self.projector.load_state_dict(align["state_dict"])
            return True
        return False

    def _restore(self, path: Path, ckpt: dict[str, Any]) -> None:
        self.log(f"Resuming from checkpoint: {path}")
        projector_loaded = self._load_weights(ckpt)
        if "optimizer_state_dict" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer_state_dict"])
            self.log("  ✓ Loaded optimizer state")
        else:
            self.log("  ⚠ No optimizer state in the checkpoint: Adam moments restart from zero")
        step = infer_global_step(path, ckpt, self.batches_per_epoch, self.log)
        if "scheduler_state_dict" in ckpt:
            self.scheduler.load_state_dict(ckpt["scheduler_state_dict"])
            self.log("  ✓ Loaded scheduler state")
        else:
            self.log(f"  ⚠ Syncing scheduler to step {step}...")
            self.scheduler.sync_to(step)
            self.log(f"  ✓ Scheduler synced to step {step}, lr={self.scheduler.lr:.2e}")
        self.cursor = cursor_of(ckpt, step, self.batches_per_epoch)
        self.progress = progress_of(ckpt)
        self.log(f"  ✓ Resuming from epoch {self.cursor.epoch + 1}, step {step}")
        if self.cursor.batch:
            self.log(f"    (Will skip first {self.cursor.batch} batches of epoch {self.cursor.epoch + 1})")
        if math.isfinite(self.progress.best_val_loss):
            self.log(f"  ✓ Best val loss so far: {self.progress.best_val_loss:.6f}")
        else:
            self.log("  ✓ No validation history (first epoch incomplete)")
        if self.projector is not None:
            self.log("  ✓ Loaded latent projector weights" if projector_loaded else OLD_PROJECTOR_WARNING)

    def _init_from(self, path: Path, ckpt: dict[str, Any]) -> None:
        self.log(f"Fine-tuning from {path}:")
        projector_loaded = self._load_weights(ckpt)
        if self.projector is not None:
            self.log("  ✓ Loaded latent projector weights" if projector_loaded else "  ⚠ The checkpoint has no projector weights: the projector starts from random initialization")
        self.log("  ✓ Fresh optimizer, LR schedule (with warmup) and epoch count")

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "format_version": FORMAT_VERSION,
            "model_state_dict": self.model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict(),
            "epoch": self.cursor.epoch,
            "batch_in_epoch": self.cursor.batch,
            "global_step": self.cursor.global_step,
            "history": self.progress.history,
            "best_val_loss": self.progress.best_val_loss,
            "progress": self.progress.state_dict(),
            "alignment_state": None if self.projector is None else {
                "state_dict": self.projector.state_dict(),
                "in_channels": self.projector.in_channels,
                "latent_dim": self.projector.latent_dim,
                "hidden": cfg.projector_hidden,
            },
            "config": self.model_cfg.to_dict(),
            "args": {k: v for k, v in cfg.to_dict().items()},
            "fingerprints": {"dataset": self.dataset_fingerprint, "tokenizer": self.tokenizer_fp},
            "rng": {"scheme": "stateless: data order = f(seed, epoch), init = f(seed)", "torch_cpu_state": torch.get_rng_state()},
        }

    def save(self, name: str) -> Path:
        path = self.checkpoint_dir / name
        save_atomic(self.state_dict(), path)
        (self.checkpoint_dir / "latest.json").write_text(json.dumps({"path": name, "global_step": self.cursor.global_step}))
        if name.startswith("step_") and self.cfg.keep_last:
            steps = sorted(self.checkpoint_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
            for old in steps[: -self.cfg.keep_last]:
                old.unlink()
        return path

    # ---------------------------------------------------------------- running

    def _target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The CNO ground truth [B, T+1, C, H, W]: the mean over M realizations."""
        t, m = self.cfg.timesteps, self.cfg.n_realizations
        if "trajectory" in batch:
            traj = batch["trajectory"][:, :m, : t + 1].to(self.device)
        else:
            traj = replay(batch["params"], batch["ic"].to(self.device), batch["seed"].tolist(), t, m)
        return traj.mean(dim=1)

    def _metrics_file(self) -> Path:
        return self.checkpoint_dir / "metrics.jsonl"

    def _record(self, record: dict[str, Any]) -> None:
        with open(self._metrics_file(), "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record.get("global_step", 0)
            for key, value in record.items():
                if isinstance(value, float) and key not in ("sec",):
                    self._tb.add_scalar(f"{record['kind']}/{key}", value, step)

    def _open_tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            return None
        return SummaryWriter(log_dir=str(self.checkpoint_dir / "tensorboard"))

    def validate(self) -> dict[str, float | None]:
        sums: dict[str, float] = {}
        count = 0
        self.model.eval()
        for positions in self.val_sampler.batches(0):
            batch = self.val_source.get_batch(positions)
            losses = eval_batch(self.objective, batch["ic"].to(self.device), batch["params"].to(self.device), self._target(batch))
            for key, value in losses.as_dict().items():
                if value is not None:
                    sums[key] = sums.get(key, 0.0) + value * len(positions)
            count += len(positions)
        self.model.train()
        return {key: (sums[key] / count if key in sums else None) for key in LOSS_KEYS}

    def _update(self, losses: BatchLosses) -> bool:
        """Clip and apply the accumulated gradient unless it is non-finite; True if applied."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf"))
        if math.isfinite(losses.total) and bool(torch.isfinite(norm)):
            self.optimizer.step()
            self.progress.nan_skips_in_a_row = 0
            return True
        self.progress.nan_skips_total += 1
        self.progress.nan_skips_in_a_row += 1
        self.log(f"Warning: NaN/Inf gradients at batch {self.cursor.global_step + 1}, skipping update")
        if self.progress.nan_skips_in_a_row >= self.cfg.max_nan_skips:
            self.save(f"step_{self.cursor.global_step}.pt")
            raise NoaError(
                f"stopped after {self.progress.nan_skips_in_a_row} consecutive batches with NaN/Inf gradients "
                f"({self.progress.nan_skips_total} in all); reduce --lr (e.g. {self.cfg.lr / 3:.1e}) or check the dataset for NaN"
            )
        return False

    def fit(self) -> TrainResult:
        cfg, stop = self.cfg, _StopFlag()
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._tb = self._open_tensorboard()
        last: BatchLosses | None = None
        steps_this_run = 0
        tty = sys.stdout.isatty()
        self.model.train()
        with stop.installed():
            for epoch in range(self.cursor.epoch, cfg.epochs):
                first = self.cursor.batch if epoch == self.cursor.epoch else 0
                self.cursor.epoch, self.cursor.batch = epoch, first
                self.log(f"\nEpoch {epoch + 1}/{cfg.epochs}")
                if first:
                    self.log(f"  Skipping first {first} batches (already processed)...")
                else:
                    self.progress.epoch_sums = {}
                epoch_start = time.perf_counter()
                bar = tqdm(total=self.batches_per_epoch, initial=first, disable=not tty, leave=False, unit="b")
                for positions in self.train_sampler.batches(epoch, first):
                    if cfg.max_steps is not None and steps_this_run >= cfg.max_steps:
                        bar.close()
                        self._stop_early()
                        return self._result(last)
                    t0 = time.perf_counter()
                    batch = self.train_source.get_batch(positions)
                    self.optimizer.zero_grad(set_to_none=True)
                    lr = self.scheduler.lr
                    last = train_batch(self.objective, batch["ic"].to(self.device), batch["params"].to(self.device), self._target(batch))
                    applied = self._update(last)
                    self.scheduler.step()
                    self.cursor.batch += 1
                    self.cursor.global_step += 1
                    steps_this_run += 1
                    if applied:
                        for key, value in last.as_dict().items():
                            if value is not None:
                                self.progress.epoch_sums[key] = self.progress.epoch_sums.get(key, 0.0) + value
                        self.progress.epoch_sums["count"] = self.progress.epoch_sums.get("count", 0.0) + 1
                    seconds = time.perf_counter() - t0
                    line = self._batch_line(last, lr, seconds)
                    self._record({"kind": "train_batch", "epoch": epoch + 1, "batch": self.cursor.batch, "global_step": self.cursor.global_step, **last.as_dict(), "lr": lr, "sec": seconds})
                    if tty:
                        bar.update(1)
                        bar.set_postfix_str(line.split("] ", 1)[1])
                    elif self.cursor.batch % cfg.log_every == 0 or self.cursor.batch == self.batches_per_epoch:
                        self.log(line)
                    if cfg.save_every and self.cursor.global_step % cfg.save_every == 0:
                        self.save(f"step_{self.cursor.global_step}.pt")
                    if stop.signum is not None:
                        bar.close()
                        self._interrupted(stop.signum)
                bar.close()
                if self._end_epoch(epoch, time.perf_counter() - epoch_start):
                    break
        return self._result(last)

    def _batch_line(self, losses: BatchLosses, lr: float, seconds: float) -> str:
        parts = [f"  [{self.cursor.batch}/{self.batches_per_epoch}] loss={losses.total:.4g} traj={losses.traj:.4g}"]
        if losses.commit is not None:
            parts.append(f"commit={losses.commit:.3g}")
        if losses.latent is not None:
            parts.append(f"latent={losses.latent:.3g}")
        parts.append(f"lr={lr:.2e} {seconds:.1f}s/b")
        return " ".join(parts)

    def _end_epoch(self, epoch: int, seconds: float) -> bool:
        """Validation, history, best/epoch checkpoints; True when early stopping triggers."""
        sums = self.progress.epoch_sums
        count = max(1.0, sums.get("count", 0.0))
        train = {key: (sums[key] / count if key in sums else None) for key in LOSS_KEYS}
        val = self.validate()
        self.log(f"  Train: {_summary(train)} [{seconds:.1f}s]")
        self.log(f"  Val:   {_summary(val)}")
        history = self.progress.history
        history.setdefault("train_loss", []).append(train["total"])
        history.setdefault("val_loss", []).append(val["total"])
        for key in ("traj", "commit", "latent"):
            history.setdefault(f"train_{key}", []).append(train[key])
            history.setdefault(f"val_{key}", []).append(val[key])
        history.setdefault("lr", []).append(self.scheduler.lr)
        history.setdefault("epoch_seconds", []).append(seconds)
        self._record({"kind": "epoch", "epoch": epoch + 1, "global_step": self.cursor.global_step, **{f"train_{k}": v for k, v in train.items()}, **{f"val_{k}": v for k, v in val.items()}, "sec": seconds})
        improved = val["total"] is not None and val["total"] < self.progress.best_val_loss
        if improved:
            self.progress.best_val_loss = val["total"]
            self.progress.epochs_without_improvement = 0
        else:
            self.progress.epochs_without_improvement += 1
        self.cursor.batch = self.batches_per_epoch
        self.save(f"epoch_{epoch + 1}.pt")
        if improved:
            self.save("best_model.pt")
            self.log(f"  ✓ New best val loss {val['total']:.6f} -> {self.checkpoint_dir / 'best_model.pt'}")
        patience = self.cfg.early_stop_patience
        if patience is not None and self.progress.epochs_without_improvement >= patience:
            self.log(f"Early stopping: no validation improvement for {patience} epochs")
            return True
        return False

    def _stop_early(self) -> None:
        name = f"step_{self.cursor.global_step}.pt"
        if not (self.checkpoint_dir / name).exists():
            self.save(name)
        self.log(f"Stopped after {self.cfg.max_steps} batches as asked (--max-steps); checkpoint {self.checkpoint_dir / name}")

    def _interrupted(self, signum: int) -> None:
        path = self.save(f"step_{self.cursor.global_step}.pt")
        raise TrainingInterrupted(
            f"training interrupted by {signal.Signals(signum).name} at epoch {self.cursor.epoch + 1}, "
            f"batch {self.cursor.batch}/{self.batches_per_epoch}; checkpoint written to {path}. "
            f"Resume with: noa train --resume {path}  (or --resume auto --checkpoint-dir {self.checkpoint_dir})",
            signum,
        )

    def _result(self, last: BatchLosses | None) -> TrainResult:
        if self._tb is not None:
            self._tb.close()
        self.train_source.close()
        self.val_source.close()
        return TrainResult(self.checkpoint_dir, self.cursor.global_step, self.progress.history, self.progress.best_val_loss, last)


def train(cli_values: dict[str, Any], log: Callable[[str], None] = print) -> TrainResult:
    """Run `noa train` with the given flag values (None = not given)."""
    return Trainer(cli_values, log=log).fit()
