"""`noa train`: the NOA training loop, top to bottom.

A settled run (:mod:`noa.train.settle`) → the trainer builds data sources, tokenizer, model,
optimizer and schedule, and restores or initialises its state → for each epoch: for each
batch: CNO target → TBPTT step → update → log → maybe checkpoint → validation → history,
best model, epoch checkpoint, early stopping.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from noa import distributed, outputs
from noa.coverage import box_owner, dataset_warning
from noa.data.loader import MIN_VAL_SAMPLES, EpochBatches, EpochBatchSampler, SampleSource, batch_loader
from noa.errors import NoaError
from noa.model import UAFNO, LatentProjector
from noa.operators.replay import replay
from noa.seeding import derive_seed
from noa.train import finished, lineage, rundir
from noa.train.bundle import TrainingState
from noa.train.checkpoint import run_checkpoints, save_atomic, step_checkpoints
from noa.train.config import GUIDE_WARMUP
from noa.train.one_step import state_picks, train_one_step_batch
from noa.train.optim import build_optimizer
from noa.train.phases import ONE_STEP, PHASES, ROLLOUT, one_step_end, phase_of, teacher_forced, teacher_forcing_end
from noa.train.rollout import sample_steps
from noa.train.schedule import WarmupCosine, lr_at
from noa.train.settle import Run, settle
from noa.train.state import Cursor, EarlyStopping, Progress
from noa.train.step import BatchLosses, Objective, eval_batch, train_batch

log = logging.getLogger("noa.train")

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
    history: dict[str, list[float | None]]
    best_val_loss: float
    last_losses: BatchLosses | None
    next_validation: str = "it runs at the end of each epoch"  # said while no validation has run yet

    @property
    def validation(self) -> str:
        """The closing line's word on validation: the best loss, or when the first one runs."""
        if math.isfinite(self.best_val_loss):
            return f"best val loss {self.best_val_loss:.6f}"
        return f"no validation yet ({self.next_validation})"


@contextmanager
def _seeded_init(seed: int) -> Iterator[None]:
    """Module constructors draw from torch's global RNG; fork it so initialisation depends on
    ``seed`` alone and the caller's RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(seed)
        yield


class _StopFlag:
    """Turns SIGINT/SIGTERM into a request to stop at the next safe point.

    A second signal stops at once, except inside :meth:`writing` (a checkpoint being saved):
    there it waits for the file to be whole, so no stop ever leaves a torn checkpoint.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._writing = False
        self._now = False

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

    @contextmanager
    def writing(self) -> Iterator[None]:
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._now:
            raise KeyboardInterrupt

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            return
        if self._writing:  # a second signal: stop as soon as the checkpoint is whole
            self._now = True
            return
        raise KeyboardInterrupt


def _summary(losses: dict[str, float | None]) -> str:
    """The guide's epoch line: total=… traj=… commit=… latent=… (absent terms left out)."""
    specs = {"total": ".4f", "traj": ".4f", "commit": ".6f", "latent": ".3f"}
    return " ".join(f"{key}={format(losses[key], spec)}" for key, spec in specs.items() if losses[key] is not None)


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def _train_lines(progress: Progress, seconds: float) -> list[str]:
    """The epoch's train line(s): the guide's line for a rollout epoch; a one-step phase's
    means on a line of their own (a different loss: never averaged with the rollouts')."""
    means = progress.epoch_means(LOSS_KEYS)
    if not means:
        return [f"  Train: no batch updated the model [{seconds:.1f}s]"]
    if set(means) == {ROLLOUT}:
        return [f"  Train: {_summary(means[ROLLOUT])} [{seconds:.1f}s]"]
    both = len(means) > 1
    lines = [
        f"  Train ({phase} phase{f', {_batches(progress.batches(phase))}' if both else ''}): {_summary(means[phase])}"
        for phase in PHASES
        if phase in means
    ]
    lines[-1] += f" [{seconds:.1f}s]"
    return lines


def _start_warnings(run: Run, batches_per_epoch: int) -> list[str]:
    """Settings that quietly spoil a whole run, said at its start rather than found in its curves."""
    cfg, lines = run.config, []
    total = cfg.epochs * batches_per_epoch
    if run.start.kind != "resume" and cfg.warmup_steps > total:  # a resume cannot change its warmup
        peak = lr_at(total - 1, cfg.lr, cfg.warmup_steps, total, cfg.lr_schedule)
        lines.append(
            f"Warning: --warmup-steps {cfg.warmup_steps} is longer than the whole run ({total} batches): the LR stays in "
            f"warmup and peaks at {peak:.2e}, not --lr {cfg.lr:.2e}; lower --warmup-steps (e.g. {max(1, total // 10)})"
        )
    if 0 < one_step_end(cfg) >= total:
        lines.append(
            f"Warning: the one-step phase (--one-step-steps {cfg.one_step_steps}) covers the whole run ({total} batches): "
            "no batch rolls out, so L_commit, L_latent and the projector never train"
            f"{' and teacher forcing never starts' if cfg.teacher_forcing_steps else ''}; "
            "lower --one-step-steps or raise --epochs"
        )
    if cfg.teacher_forcing_steps and cfg.bptt_window >= cfg.timesteps:
        lines.append(
            f"Warning: --teacher-forcing-steps {cfg.teacher_forcing_steps} does nothing with one window (--bptt-window "
            f"{cfg.bptt_window} >= --timesteps {cfg.timesteps}): the only window starts from the IC; use a smaller --bptt-window"
        )
    box = dataset_warning(cfg.model, run.data.info, run.data.rows)
    lines += [f"Warning: {box}"] if box else []
    n_val = len(run.data.split.val)
    if n_val < MIN_VAL_SAMPLES:
        lines.append(
            f"Warning: only {n_val} validation sample{'s' if n_val != 1 else ''}: validation losses and best_model.pt "
            f"follow noise; raise --val-split or --n-samples for at least {MIN_VAL_SAMPLES}"
        )
    return lines


def _lr_line(run: Run, batches_per_epoch: int) -> str:
    """The header's LR line: the peak, the schedule and the warmup, and why the warmup is what it is."""
    cfg = run.config
    total = cfg.epochs * batches_per_epoch
    if "warmup_steps" not in run.followed:
        given = "--warmup-steps" + (f" or --preset {cfg.preset}" if cfg.preset else "")
        why = given if run.start.kind != "resume" else "kept by the resume"
    elif cfg.warmup_steps < GUIDE_WARMUP:
        why = f"default: a tenth of this run's {total} batches, the guide's {GUIDE_WARMUP} being too long for it; --warmup-steps sets it"
    else:
        why = "default: the guide's; --warmup-steps sets it"
    return f"LR: peak {cfg.lr:.2e}, {cfg.lr_schedule} schedule; warmup {_batches(cfg.warmup_steps)} ({why})"


class Trainer:
    """One settled training run; see the module docstring for its shape."""

    def __init__(self, run: Run):
        self.run, self.cfg, self.device, self.ranks = run, run.config, run.device, run.ranks
        self.checkpoint_dir = Path(self.cfg.checkpoint_dir)
        self._build_data(run)
        self._build_model(run)
        start = run.start
        if start.kind == "resume":
            self.state.restore(start.file, start.saved, self.batches_per_epoch)
        elif start.kind == "finetune":
            self.state.init_from(start.file, start.saved)
        cfg = self.cfg
        if cfg.bptt_window < cfg.timesteps and cfg.timesteps % cfg.bptt_window:
            log.info(
                f"Note: --bptt-window {cfg.bptt_window} does not divide --timesteps {cfg.timesteps}; the last window has {cfg.timesteps % cfg.bptt_window} steps."
            )
        for line in _start_warnings(run, self.batches_per_epoch):
            log.info(line)
        self._metrics: Any = None
        self._tb: Any = None
        self._stop = _StopFlag()

    # ---------------------------------------------------------------- setup

    def _build_data(self, run: Run) -> None:
        cfg, info, split = run.config, run.data.info, run.data.split
        use_cache = info.has_trajectories and info.realizations >= cfg.n_realizations
        self.train_source = SampleSource(cfg.dataset, split.train, with_trajectories=use_cache, info=info)
        self.val_source = SampleSource(cfg.dataset, split.val, with_trajectories=use_cache, info=info)
        rank, world = run.ranks.rank, run.ranks.world_size
        self.train_sampler = EpochBatchSampler(len(split.train), cfg.batch_size, cfg.seed, rank=rank, world_size=world)
        self.val_sampler = EpochBatchSampler(
            len(split.val), cfg.batch_size, cfg.seed, shuffle=False, drop_last=False, rank=rank, world_size=world
        )
        self.batches_per_epoch = len(self.train_sampler)
        pin = self.device.startswith("cuda")
        self.train_batches, self.val_batches = EpochBatches(self.train_sampler), EpochBatches(self.val_sampler)
        self.train_loader = batch_loader(self.train_source, self.train_batches, cfg.num_workers, pin)
        self.val_loader = batch_loader(self.val_source, self.val_batches, cfg.num_workers, pin)

    def _build_model(self, run: Run) -> None:
        """Tokenizer, model, projector, optimizer, schedule, the objective and the run's state."""
        cfg = run.config
        self.tokenizer = run.tokenizer.to(self.device) if run.tokenizer is not None else None
        with _seeded_init(derive_seed(cfg.seed, "init-model")):
            model = UAFNO(cfg.model).to(self.device)
        projector = None
        if cfg.enable_latent_loss:
            assert self.tokenizer is not None  # settle's validate: L_latent needs --vqvae-path
            with _seeded_init(derive_seed(cfg.seed, "init-projector")):
                projector = LatentProjector(
                    model.bottleneck_channels, self.tokenizer.latent_dim, cfg.projector_hidden
                ).to(self.device)
        parts = {"model": model, **({"projector": projector} if projector is not None else {})}
        optimizer = build_optimizer(parts, cfg.lr, cfg.weight_decay)
        schedule = WarmupCosine(
            optimizer, cfg.lr, cfg.warmup_steps, cfg.epochs * self.batches_per_epoch, cfg.lr_schedule
        )
        self.state = TrainingState(
            config=cfg,
            model=model,
            projector=projector,
            optimizer=optimizer,
            schedule=schedule,
            cursor=Cursor(global_batch=run.global_batch),
            progress=Progress(),
            early_stopping=EarlyStopping(cfg.early_stop_patience),
            fingerprints={
                "dataset": run.data.fingerprint,
                "tokenizer": run.tokenizer_fingerprint,
                "vqvae_class": run.tokenizer.class_fingerprint if run.tokenizer is not None else None,
            },
            source=lineage.source_at_start(run.start.kind, run.start.path, run.start.checkpoint),
        )
        self.model, self.projector, self.optimizer, self.scheduler = model, projector, optimizer, schedule
        self.objective = Objective(
            model=model,
            projector=projector,
            tokenizer=self.tokenizer,
            lambda_commit=cfg.lambda_commit,
            lambda_latent=cfg.lambda_latent,
            bptt_window=cfg.bptt_window,
            latent_steps=sample_steps(cfg.timesteps, cfg.latent_sample_steps) if cfg.enable_latent_loss else [],
            execution=run.execution,
            **self._ddp_wrappers(model, projector),
        )

    def _ddp_wrappers(self, model: UAFNO, projector: LatentProjector | None) -> dict[str, torch.nn.Module | None]:
        """DistributedDataParallel around the trained parts when several ranks train (the
        tokenizer is frozen and stays unwrapped). DDP broadcasts rank 0's weights at wrapping."""
        if not self.ranks.distributed:
            return {}
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        wrap = lambda module: DistributedDataParallel(module, device_ids=ids)  # noqa: E731
        return {"ddp_model": wrap(model), "ddp_projector": wrap(projector) if projector is not None else None}

    def _log_header(self) -> None:
        cfg, run = self.cfg, self.run
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(
            f"noa train: {run.start.kind} run{f' (preset {cfg.preset})' if cfg.preset else ''} on {self.device}"
            f"{f' x {self.ranks.world_size} ranks' if self.ranks.distributed else ''}; "
            f"global batch {run.global_batch} ({cfg.batch_size} per rank); {self.batches_per_epoch} batches per epoch; "
            f"{len(run.data.split.train)} train / {len(run.data.split.val)} validation samples; "
            f"{cfg.model.backbone_label} {n_params / 1e6:.2f} M parameters"
            f"{f', θ scaled to {box_owner(cfg.model, run.data.info.operator_family.name)}' if cfg.model.theta_box is not None else ''}; "
            f"step: {run.execution.describe()}; threads {torch.get_num_threads()}"
            f"{f'; validation every {cfg.val_every} epochs and after the last' if cfg.val_every > 1 else ''}"
        )
        log.info(_lr_line(run, self.batches_per_epoch))
        step = self.state.cursor.global_step
        if step < one_step_end(cfg):  # not at a resume after it ended
            scale = "divided by dt² or (1-α)²: every operator at unit scale" if self.model.rule else "plain"
            k = self._states_per_sample()
            which = "each state" if k is None else f"{k} of the {cfg.timesteps} states (drawn per epoch)"
            log.info(
                f"One-step phase for the first {cfg.one_step_steps} batches: {which} of each CNO realization is advanced one "
                f"step and scored against the CNO's noise-free step ({scale}; total = that loss, traj = its plain MSE); "
                "then rollouts under L_total. Validation scores free rollouts throughout."
            )
        if step < teacher_forcing_end(cfg) and cfg.teacher_forcing_steps:  # not at a resume after it ended
            after = f" (batches {one_step_end(cfg) + 1}-{teacher_forcing_end(cfg)}, after the one-step phase)"
            log.info(
                f"Teacher forcing for the first {cfg.teacher_forcing_steps} batches of the rollout phase"
                f"{after if one_step_end(cfg) else ''}: each {cfg.bptt_window}-step window starts "
                "from the CNO's state; then windows chain the NOA's own rollout. Validation scores free rollouts throughout."
            )

    def _prepare_output(self) -> None:
        """Create the checkpoint directory; with --overwrite, remove what an earlier run wrote
        there (its checkpoints, pointer, metrics and TensorBoard events), nothing else. A killed
        attempt's temporary files and its metrics beyond the starting point go too (they are
        trained again). Rank 0 alone writes, holding the directory's lock."""
        if not self.ranks.is_main:
            return
        directory, start = self.checkpoint_dir, self.run.start
        directory.mkdir(parents=True, exist_ok=True)
        for name in outputs.remove_stale_temporaries(directory):
            log.info(f"Removed {name}, a temporary file an interrupted writer left")
        if self.cfg.overwrite and start.kind != "resume":
            for path in run_checkpoints(directory):
                path.unlink()
            for name in ("latest.json", "metrics.jsonl"):
                (directory / name).unlink(missing_ok=True)
            for path in (directory / "tensorboard").glob("events.out.tfevents.*"):
                path.unlink()
        dropped = 0
        if start.kind == "resume":
            dropped = rundir.trim_metrics(directory, *rundir.position(start.saved, start.file))
        elif start.auto:
            dropped = rundir.trim_metrics(directory, 0, 0)
        if dropped:
            log.info(
                f"Dropped {dropped} lines of metrics.jsonl logged after the starting point by an interrupted attempt (trained again now)"
            )

    # ---------------------------------------------------------------- state

    def save(self, name: str) -> Path:
        """Rank 0 writes ``name``; every rank holds the same state, so one file serves all."""
        path = self.checkpoint_dir / name
        if not self.ranks.is_main:
            return path
        with self._stop.writing():
            save_atomic(self.state.checkpoint(), path)
            outputs.write_text_atomic(
                self.checkpoint_dir / "latest.json",
                json.dumps({"path": name, "global_step": self.state.cursor.global_step}),
            )
            if name.startswith("step_") and self.cfg.keep_last:
                for old in step_checkpoints(self.checkpoint_dir)[: -self.cfg.keep_last]:
                    old.unlink()
        return path

    # ---------------------------------------------------------------- running

    def _realizations(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The CNO's M realizations of each sample, [B, M, T+1, C, H, W] (stored or replayed)."""
        t, m = self.cfg.timesteps, self.cfg.n_realizations
        if "trajectory" in batch:
            return batch["trajectory"][:, :m, : t + 1].to(self.device)
        return replay(batch["params"], batch["ic"].to(self.device), batch["seed"].tolist(), t, m)

    def _states_per_sample(self) -> int | None:
        """K of --one-step-states K when it takes fewer than all T states; None when it takes every one."""
        k = self.cfg.one_step_states
        return None if k is None or k >= self.cfg.timesteps else k

    def _picks(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """With --one-step-states K, the K states per sample and realization of a one-step batch."""
        k = self._states_per_sample()
        if k is None:
            return None
        rows = batch["index"].tolist()
        return state_picks(self.cfg.seed, self.state.cursor.epoch, rows, self.cfg.n_realizations, self.cfg.timesteps, k)

    def _target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The rollouts' ground truth [B, T+1, C, H, W]: the mean over M realizations."""
        return self._realizations(batch).mean(dim=1)

    def _record(self, record: dict[str, Any]) -> None:
        if self._metrics is None:  # not rank 0
            return
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            step = record.get("global_step", 0)
            # A one-step batch's losses are other quantities than a rollout batch's: their own series.
            mark = "one_step_" if record.get("phase") == ONE_STEP else ""
            for key, value in record.items():
                if isinstance(value, float) and key != "sec":
                    self._tb.add_scalar(f"{record['kind']}/{mark if key in LOSS_KEYS else ''}{key}", value, step)

    def validate(self) -> dict[str, float | None]:
        """Mean losses over the validation samples of all ranks (a rank may hold none)."""
        sums = torch.zeros(2, len(LOSS_KEYS), dtype=torch.float64)  # per key: sum of values, samples
        self.model.eval()
        for batch in self.val_loader:
            n = len(batch["index"])
            losses = eval_batch(
                self.objective, batch["ic"].to(self.device), batch["params"].to(self.device), self._target(batch)
            )
            values = losses.as_dict()
            for k, key in enumerate(LOSS_KEYS):
                value = values[key]
                if value is not None:
                    sums[0, k] += value * n
                    sums[1, k] += n
        self.model.train()
        totals = distributed.sum_over_ranks(sums.to(self.device)).cpu()
        return {
            key: (float(totals[0, k] / totals[1, k]) if totals[1, k] > 0 else None) for k, key in enumerate(LOSS_KEYS)
        }

    def _update(self, losses: BatchLosses) -> bool:
        """Clip and apply the accumulated gradient unless it is non-finite; True if applied."""
        progress = self.state.progress
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf"))
        if math.isfinite(losses.total) and bool(torch.isfinite(norm)):
            self.optimizer.step()
            progress.nan_skips_in_a_row = 0
            return True
        progress.nan_skips_total += 1
        progress.nan_skips_in_a_row += 1
        log.info(f"Warning: NaN/Inf gradients at batch {self.state.cursor.global_step + 1}, skipping update")
        if progress.nan_skips_in_a_row >= self.cfg.max_nan_skips:
            self.save(f"step_{self.state.cursor.global_step}.pt")
            raise NoaError(
                f"stopped after {progress.nan_skips_in_a_row} consecutive batches with NaN/Inf gradients "
                f"({progress.nan_skips_total} in all); reduce --lr (e.g. {self.cfg.lr / 3:.1e}) or check the dataset for NaN"
            )
        return False

    def fit(self) -> TrainResult:
        """Train to the end (or the stop asked for); every file handle is closed on every exit."""
        stop = self._stop
        with ExitStack() as stack:
            stack.callback(self.train_source.close)
            stack.callback(self.val_source.close)
            self._prepare_output()
            distributed.barrier()
            self._log_header()
            if self.ranks.is_main:
                self._metrics = stack.enter_context(open(self.checkpoint_dir / "metrics.jsonl", "a"))
            if self.cfg.tensorboard and self.ranks.is_main:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.checkpoint_dir / "tensorboard"))
                stack.callback(self._tb.close)
            stack.enter_context(stop.installed())
            try:
                last = self._epochs(stop)
            except KeyboardInterrupt:
                raise TrainingInterrupted(
                    f"training stopped at once by a second {signal.Signals(stop.signum or signal.SIGINT).name}; checkpoints are "
                    f"only ever written whole, so the newest one in {self.checkpoint_dir} resumes the run: "
                    f"noa train --resume auto --checkpoint-dir {self.checkpoint_dir}",
                    stop.signum or signal.SIGINT,
                ) from None
            except RuntimeError as err:
                if not (self.ranks.distributed and distributed.lost_peer(err)):
                    raise
                raise NoaError(
                    f"a training process was lost (another rank died or was killed: {str(err).splitlines()[0][:200]}); "
                    f"the newest checkpoint in {self.checkpoint_dir} resumes the run: "
                    f"noa train --resume auto --checkpoint-dir {self.checkpoint_dir}"
                ) from err
        return TrainResult(
            self.checkpoint_dir,
            self.state.cursor.global_step,
            self.state.progress.history,
            self.state.early_stopping.best,
            last,
            self._next_validation(),
        )

    def _epochs(self, stop: _StopFlag) -> BatchLosses | None:
        cfg, cursor, progress = self.cfg, self.state.cursor, self.state.progress
        last: BatchLosses | None = None
        steps_this_run = 0
        tty = sys.stderr.isatty()  # the bar is drawn on stderr (tqdm), as the data commands decide
        self.model.train()
        while cursor.epoch < cfg.epochs:
            epoch = cursor.epoch
            log.info(f"\nEpoch {epoch + 1}/{cfg.epochs}")
            if cursor.batch:
                log.info(f"  Skipping first {cursor.batch} batches (already processed)...")
            else:
                progress.epoch_sums, progress.epoch_seconds = {}, 0.0
            epoch_start = (
                time.perf_counter() - progress.epoch_seconds
            )  # a resumed epoch counts its time before the resume
            bar = tqdm(total=self.batches_per_epoch, initial=cursor.batch, disable=not tty, leave=False, unit="b")
            self.train_batches.set_epoch(epoch, cursor.batch)
            for batch in self.train_loader:
                if cfg.max_steps is not None and steps_this_run >= cfg.max_steps:
                    bar.close()
                    self._stop_early()
                    return last
                t0 = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.scheduler.lr
                phase = phase_of(cfg, cursor.global_step)
                if phase == ONE_STEP:
                    last = train_one_step_batch(
                        self.objective, batch["params"].to(self.device), self._realizations(batch), self._picks(batch)
                    )
                else:
                    last = train_batch(
                        self.objective,
                        batch["ic"].to(self.device),
                        batch["params"].to(self.device),
                        self._target(batch),
                        teacher_forced(cfg, cursor.global_step),
                    )
                last, stopping = self._over_ranks(last, stop.signum is not None)
                if self._update(last):
                    progress.add_batch(phase, last.as_dict())
                self.scheduler.step()
                cursor.batch += 1
                cursor.global_step += 1
                steps_this_run += 1
                seconds = time.perf_counter() - t0
                progress.epoch_seconds = time.perf_counter() - epoch_start
                line = self._batch_line(last, phase, lr, seconds)
                self._record(
                    {
                        "kind": "train_batch",
                        "epoch": epoch + 1,
                        "batch": cursor.batch,
                        "global_step": cursor.global_step,
                        **last.as_dict(),
                        "phase": phase,
                        "lr": lr,
                        "sec": seconds,
                    }
                )
                if tty:
                    bar.update(1)
                    bar.set_postfix_str(line.split("] ", 1)[1])
                elif cursor.batch % cfg.log_every == 0 or cursor.batch == self.batches_per_epoch:
                    log.info(line)
                if cfg.save_every and cursor.global_step % cfg.save_every == 0:
                    self.save(f"step_{cursor.global_step}.pt")
                if stopping:
                    bar.close()
                    self._interrupted(stop.signum or signal.SIGTERM)
            bar.close()
            if self._end_epoch(epoch, time.perf_counter() - epoch_start):
                break
            cursor.next_epoch()
        return last

    def _over_ranks(self, losses: BatchLosses, stop_asked: bool) -> tuple[BatchLosses, bool]:
        """The batch's losses as means over all ranks' samples, and whether any rank was asked
        to stop; one collective, so every rank logs, skips and stops alike."""
        if not self.ranks.distributed:
            return losses, stop_asked
        values = losses.as_dict()
        present = [key for key in LOSS_KEYS if values[key] is not None]
        packed = torch.tensor(
            [values[key] for key in present] + [float(stop_asked)], dtype=torch.float64, device=self.device
        )
        reduced = distributed.sum_over_ranks(packed).tolist()
        means = {key: value / self.ranks.world_size for key, value in zip(present, reduced)}
        total, traj = means["total"], means["traj"]
        return BatchLosses(total, traj, means.get("commit"), means.get("latent")), reduced[-1] > 0

    def _batch_line(self, losses: BatchLosses, phase: str, lr: float, seconds: float) -> str:
        marked = "one-step " if phase == ONE_STEP else ""
        parts = [
            f"  [{self.state.cursor.batch}/{self.batches_per_epoch}] {marked}loss={losses.total:.4g} traj={losses.traj:.4g}"
        ]
        if losses.commit is not None:
            parts.append(f"commit={losses.commit:.3g}")
        if losses.latent is not None:
            parts.append(f"latent={losses.latent:.3g}")
        parts.append(f"lr={lr:.2e} {seconds:.1f}s/b")
        return " ".join(parts)

    def _end_epoch(self, epoch: int, seconds: float) -> bool:
        """Validation, history, best/epoch checkpoints; True when early stopping triggers."""
        state, progress = self.state, self.state.progress
        means = progress.epoch_means(LOSS_KEYS)
        # train_* are the rollout phase's, the quantities validation scores; the one-step
        # phase's are train_one_step_*; a phase without batches this epoch has None.
        train = means.get(ROLLOUT, dict.fromkeys(LOSS_KEYS))
        one_step = means.get(ONE_STEP, dict.fromkeys(LOSS_KEYS))
        validated = self._validates(epoch)
        val = self.validate() if validated else dict.fromkeys(LOSS_KEYS)
        for line in _train_lines(progress, seconds):
            log.info(line)
        log.info(
            f"  Val:   {_summary(val)}" if validated else f"  Val:   not this epoch (--val-every {self.cfg.val_every})"
        )
        progress.append(
            {
                "train_loss": train["total"],
                "val_loss": val["total"],
                **{
                    f"{split}_{key}": losses[key]
                    for key in ("traj", "commit", "latent")
                    for split, losses in (("train", train), ("val", val))
                },
                "train_one_step_loss": one_step["total"],
                "train_one_step_traj": one_step["traj"],
                "lr": self.scheduler.lr,
                "epoch_seconds": seconds,
            }
        )
        self._record(
            {
                "kind": "epoch",
                "epoch": epoch + 1,
                "global_step": state.cursor.global_step,
                **{f"train_{k}": v for k, v in train.items()},
                "train_one_step_total": one_step["total"],
                "train_one_step_traj": one_step["traj"],
                "train_rollout_batches": progress.batches(ROLLOUT),
                "train_one_step_batches": progress.batches(ONE_STEP),
                **{f"val_{k}": v for k, v in val.items()},
                "sec": seconds,
            }
        )
        improved = validated and state.early_stopping.update(val["total"])
        state.cursor.epoch_ended = True
        state.early_stopping.stopped = state.early_stopping.should_stop  # recorded: a restart must not train on
        self.save(f"epoch_{epoch + 1}.pt")
        if improved:
            self.save("best_model.pt")
            log.info(f"  ✓ New best val loss {val['total']:.6f} -> {self.checkpoint_dir / 'best_model.pt'}")
        if state.early_stopping.should_stop:
            n = self.cfg.early_stop_patience
            unit = "epoch" if self.cfg.val_every == 1 else "validation"
            log.info(f"Early stopping: no validation improvement for {n} {unit}{'s' if n != 1 else ''}")
            return True
        return False

    def _validates(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` ends with a validation: every ``--val-every``-th and the last."""
        return (epoch + 1) % self.cfg.val_every == 0 or epoch + 1 == self.cfg.epochs

    def _next_validation(self) -> str:
        """When the next validation runs, said in the terms of --val-every."""
        every = self.cfg.val_every
        if every == 1:
            return "it runs at the end of each epoch"
        upcoming = next((e for e in range(self.state.cursor.epoch, self.cfg.epochs) if self._validates(e)), None)
        if upcoming is None:
            return f"--val-every {every}: it runs every {every} epochs and after the last"
        return f"--val-every {every}: the first runs at the end of epoch {upcoming + 1}"

    def _stop_early(self) -> None:
        # Written even when a step_N.pt of this step exists: an epoch may have ended since, and
        # the file named here must resume from where the run stands (in place, not as a branch).
        name = f"step_{self.state.cursor.global_step}.pt"
        self.save(name)
        log.info(
            f"Stopped after {self.cfg.max_steps} batches as asked (--max-steps); checkpoint {self.checkpoint_dir / name}"
        )

    def _interrupted(self, signum: int) -> None:
        cursor = self.state.cursor
        path = self.save(f"step_{cursor.global_step}.pt")
        distributed.barrier()  # every rank exits after the one checkpoint is whole
        raise TrainingInterrupted(
            f"training interrupted by {signal.Signals(signum).name} at epoch {cursor.epoch + 1}, "
            f"batch {cursor.batch}/{self.batches_per_epoch}; checkpoint written to {path}. "
            f"Resume with: noa train --resume {path}  (or --resume auto --checkpoint-dir {self.checkpoint_dir})",
            signum,
        )


def train(flags: dict[str, Any]) -> TrainResult:
    """Run `noa train` with the given flag values (None or absent = not given), on the ranks
    torchrun started (one process without torchrun)."""
    ranks = distributed.ranks_from_environment()
    run = settle(flags, ranks)
    # One run per checkpoint directory: rank 0 (the writer) holds its lock until the run ends.
    held = outputs.exclusive(run.config.checkpoint_dir, "--checkpoint-dir") if ranks.is_main else nullcontext()
    # A restart or requeue of a run that ended (all its epochs, or early stopping): success.
    if finished.plan_done(run.start, run.config.epochs, run.config.early_stop_patience):
        return _already_complete(run, held)
    with held, distributed.process_group(ranks, run.device):
        return Trainer(run).fit()


def _already_complete(run: Run, held: Any) -> TrainResult:
    saved, directory = run.start.saved, Path(run.config.checkpoint_dir)
    with held:
        repaired = finished.settle_the_ending(directory, run.start) if run.ranks.is_main else []
    log.info(finished.message(run.start, run.config.epochs))
    if repaired:
        log.info(f"  (wrote {' and '.join(repaired)}, which a kill after the last epoch's checkpoint had left out)")
    best = saved.get("best_val_loss")
    return TrainResult(
        directory, int(saved["global_step"]), saved.get("history", {}), math.inf if best is None else float(best), None
    )
