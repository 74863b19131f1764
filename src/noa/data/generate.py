"""`noa data generate`: θ, initial conditions and noise seeds, replayed and written to HDF5.

Generation writes into ``OUT.partial`` and renames it to ``OUT`` only when every sample is
replayed, so an existing file is never touched until its replacement is complete, and an
interrupted run leaves a ``.partial`` file that ``--resume`` continues from: samples whose
``/metadata/replayed`` flag is set are never recomputed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
from tqdm import tqdm

import noa
from noa import distributed, outputs
from noa.data import h5
from noa.data.ics import AMPLITUDE_LEVELS, IC_KIND_KEY, IC_KINDS, IC_KINDS_KEY, make_ics, validate_kinds
from noa.data.workers import Result, Task, Work, run_tasks, run_tasks_on_ranks
from noa.errors import NoaError
from noa.families import FULL, OperatorFamily, family_from_dict
from noa.features.registry import FEATURE_CATEGORIES
from noa.interruption import Interruption
from noa.model import UAFNOConfig
from noa.operators.space import CNO_SPACE
from noa.operators.weights import BANKS
from noa.seeding import derive_seed

MAX_GRID = 512

Runner = Callable[[Iterable[Task], Work], Iterator[Result]]

# GenerateConfig fields whose key in the recorded ``config`` is another name (what files
# written before call it): --resume compares, and the dataset fingerprint hashes, that JSON.
RECORDED_KEYS = {"ic_kinds": IC_KINDS_KEY}


@dataclass
class GenerateConfig:
    """Everything that determines a dataset's content (stored as the file's ``config``)."""

    n_samples: int
    grid: int = 64
    channels: int = 3
    timesteps: int = 256
    realizations: int = 1
    seed: int = 0
    ic_kinds: list[str] = field(default_factory=lambda: list(IC_KINDS))  # recorded as IC_KINDS_KEY
    store_trajectories: bool = False
    features: bool = True
    # The operator family θ is drawn from, as plain data (:meth:`OperatorFamily.as_dict`).
    family: dict = field(default_factory=FULL.as_dict)

    @property
    def operator_family(self) -> OperatorFamily:
        return family_from_dict(self.family, "the dataset's family")

    def recorded(self) -> dict:
        """The config as the file's ``config`` attribute records it: the field names, except
        ``ic_kinds`` under the name files written before use (same order, same JSON)."""
        return {RECORDED_KEYS.get(key, key): value for key, value in asdict(self).items()}

    def validate(self) -> None:
        if self.n_samples < 1:
            raise NoaError(f"--n-samples must be >= 1; got {self.n_samples}")
        if not 8 <= self.grid <= MAX_GRID:
            raise NoaError(f"--grid must be between 8 and {MAX_GRID} (the CNO's kernels span 7 cells); got {self.grid}")
        if self.grid % 2:
            raise NoaError(
                f"--grid {self.grid} is odd: the NOA's U-Net halves the grid at every encoder level, so noa train could not "
                f"use this dataset; use an even grid (a multiple of 8, e.g. {max(8, self.grid // 8 * 8)}, fits the default --encoder-levels 3)"
            )
        if self.timesteps < 1 or self.realizations < 1 or self.channels < 1:
            raise NoaError("--timesteps, --realizations and channels must all be >= 1")
        self.ic_kinds = list(validate_kinds(self.ic_kinds))
        self.family = self.operator_family.as_dict()  # canonical: what the file records and --resume compares


def _create(path: Path, cfg: GenerateConfig, feature_names: dict[str, list[str]] | None, chunk: int) -> None:
    """Write the layout, θ, ICs and per-sample metadata; rollouts follow batch by batch."""
    n, c, g, t, m = cfg.n_samples, cfg.channels, cfg.grid, cfg.timesteps, cfg.realizations
    family = cfg.operator_family
    with h5py.File(path, "w") as f:
        f.attrs.update(
            format=h5.FORMAT,
            format_version=h5.FORMAT_VERSION,
            complete=False,
            config=json.dumps(cfg.recorded()),
            grid=g,
            channels=c,
            timesteps=t,
            realizations=m,
            parameter_space=CNO_SPACE.to_json(),
            cno_family=BANKS.to_json(),
            operator_family=family.to_json(),
            **{IC_KINDS_KEY: json.dumps(cfg.ic_kinds)},
            amplitude_levels=json.dumps(list(AMPLITUDE_LEVELS)),
            noa_version=noa.__version__,
        )
        params = f.create_dataset("parameters/params", data=family.draw(n, cfg.seed))
        params.attrs["names"] = json.dumps(CNO_SPACE.names)
        fields = f.create_dataset("inputs/fields", (n, c, g, g), dtype="f4", chunks=(1, c, g, g))
        meta = f.create_group("metadata")
        ic_seeds = np.array([derive_seed(cfg.seed, "ic", i) for i in range(n)], dtype=np.int64)
        meta["ic_seed"] = ic_seeds
        meta["noise_seed"] = np.array([derive_seed(cfg.seed, "noise", i) for i in range(n)], dtype=np.int64)
        kind_index = np.arange(n) % len(cfg.ic_kinds)
        meta[IC_KIND_KEY] = kind_index.astype(np.int16)
        amplitude = meta.create_dataset("ic_amplitude", (n,), dtype="i2")
        length = meta.create_dataset("ic_length_scale", (n,), dtype="f4")
        for start in range(0, n, chunk):
            rows = range(start, min(n, start + chunk))
            ics, specs = make_ics([cfg.ic_kinds[kind_index[i]] for i in rows], [int(ic_seeds[i]) for i in rows], c, g)
            fields[start : rows.stop] = ics.numpy()
            amplitude[start : rows.stop] = [list(AMPLITUDE_LEVELS).index(s.amplitude_level) for s in specs]
            length[start : rows.stop] = [s.length_scale for s in specs]
        meta["replayed"] = np.zeros(n, dtype=bool)
        meta["valid"] = np.zeros(n, dtype=bool)
        meta["max_abs"] = np.zeros(n, dtype=np.float32)
        if cfg.store_trajectories:
            f.create_dataset("trajectories", (n, m, t + 1, c, g, g), dtype="f4", chunks=(1, 1, t + 1, c, g, g))
        if feature_names is not None:
            create_feature_datasets(f, feature_names, n, t)


def create_feature_datasets(f: h5py.File, names: dict[str, list[str]], n: int, timesteps: int) -> None:
    """The /features group, empty, with column names and a per-sample done flag."""
    group = f.require_group("features")
    for category in FEATURE_CATEGORIES:
        shape = (n, timesteps + 1, len(names[category])) if category == "temporal" else (n, len(names[category]))
        ds = group.create_dataset(category, shape, dtype="f4", chunks=(1, *shape[1:]))
        ds.attrs["names"] = json.dumps(names[category])
    group.create_dataset("done", data=np.zeros(n, dtype=bool))


def _write(f: h5py.File, result: Result) -> None:
    """Store one batch's results and flag its rows done (the flags are what resume reads).

    The results are flushed before the flags are set: HDF5 may write a flag to the file before
    data it still caches, and a process killed (SIGKILL) in between would leave rows flagged
    done whose data never reached the file, which a resume would then skip."""
    rows = result.rows
    if result.trajectories is not None:
        f["trajectories"][rows] = result.trajectories
    if result.features is not None:
        for category in FEATURE_CATEGORIES:
            f["features"][category][rows] = result.features[category]
    if result.replayed:
        f["metadata/valid"][rows] = result.valid
        f["metadata/max_abs"][rows] = result.max_abs
    f.flush()
    if result.features is not None:
        f["features/done"][rows] = True
    if result.replayed:
        f["metadata/replayed"][rows] = True
    f.flush()


def _tasks(f: h5py.File, pending: np.ndarray, batch_size: int, cached: bool) -> Iterator[Task]:
    """The pending rows, batch by batch, with their inputs (and cached rollouts when asked)."""
    for start in range(0, len(pending), batch_size):
        rows = pending[start : start + batch_size]
        yield Task(
            rows=rows,
            params=f["parameters/params"][rows],
            ics=f["inputs/fields"][rows],
            noise_seeds=f["metadata/noise_seed"][rows].tolist(),
            trajectories=f["trajectories"][rows] if cached else None,
        )


# How progress is shown: a bar (True), nothing (False), or a plain line per tenth of the work
# ("lines": for logs, where a bar's carriage returns are noise).
Progress = bool | Literal["lines"]


class _ProgressLines:
    """tqdm's ``update``/``close``, as one plain line per tenth of the samples (and the last)."""

    def __init__(self, total: int, initial: int, desc: str, log: Callable[[str], None]) -> None:
        self.total, self.done, self.desc, self.log = total, initial, desc, log
        self.step = max(1, total // 10)
        self.next = (initial // self.step + 1) * self.step
        self.started = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        if self.done >= self.next or self.done >= self.total:
            seconds = time.perf_counter() - self.started
            self.log(f"  {self.desc}: {self.done}/{self.total} samples ({self.done / self.total:.0%}), {seconds:.0f} s")
            self.next = (self.done // self.step + 1) * self.step

    def close(self) -> None:
        pass


def _progress(
    total: int, initial: int, desc: str, progress: Progress, log: Callable[[str], None]
) -> tqdm | _ProgressLines:
    if progress == "lines":
        return _ProgressLines(total, initial, desc, log)
    return tqdm(total=total, initial=initial, unit="sample", disable=not progress, desc=desc)


def _work_through(
    f: h5py.File,
    pending: np.ndarray,
    work: Work,
    batch_size: int,
    cached: bool,
    runner: Runner,
    bar: tqdm | _ProgressLines,
) -> None:
    for result in runner(_tasks(f, pending, batch_size, cached), work):
        _write(f, result)
        bar.update(len(result.rows))
    bar.close()


def _replay_pending(
    path: Path,
    cfg: GenerateConfig,
    batch_size: int,
    work: Work,
    runner: Runner,
    progress: Progress,
    log: Callable[[str], None],
) -> None:
    with h5py.File(path, "r+") as f:
        pending = np.flatnonzero(~f["metadata/replayed"][:])
        bar = _progress(cfg.n_samples, cfg.n_samples - len(pending), "replay", progress, log)
        _work_through(f, pending, work, batch_size, cached=False, runner=runner, bar=bar)
        f.attrs["complete"] = True


def generate(
    cfg: GenerateConfig,
    out: str | Path,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Create (or continue) the dataset ``out``; returns its path once complete.

    The replay runs here, in ``workers`` processes, or, under torchrun, on every rank (each
    on its own device) with rank 0 writing: the file is the same in every case.
    """
    cfg.validate()
    if batch_size < 1 or workers < 1:
        raise NoaError(f"--batch-size and --workers must be >= 1; got {batch_size} and {workers}")
    levels = _encoder_levels_that_fit(cfg.grid)
    if levels < UAFNOConfig.encoder_levels:
        log(
            f"Note: --grid {cfg.grid} is not a multiple of {2**UAFNOConfig.encoder_levels}: noa train on it needs "
            f"--encoder-levels {levels}{' or fewer' if levels > 1 else ''} (the default, {UAFNOConfig.encoder_levels}, halves the grid that often)"
        )
    work = Work(
        cfg.timesteps, cfg.realizations, keep_trajectories=cfg.store_trajectories, features=cfg.features, device=device
    )
    ranks = distributed.ranks_from_environment()
    if not ranks.distributed:
        return _generate(cfg, Path(out), batch_size, work, _pool(workers), resume, overwrite, progress, log)
    work = replace(work, device=distributed.rank_device(device, ranks))
    with distributed.process_group(ranks, work.device, backend="gloo"), _RankRounds(work) as rounds:
        if ranks.is_main:
            _generate(cfg, Path(out), batch_size, work, rounds, resume, overwrite, progress, log)
    return Path(out)


def _encoder_levels_that_fit(grid: int) -> int:
    """The most halvings a NOA's encoder can apply to ``grid`` (see noa.model.check_grid)."""
    levels = 0
    while grid % 2 ** (levels + 1) == 0 and grid // 2 ** (levels + 1) >= 2:
        levels += 1
    return levels


def _pool(workers: int) -> Runner:
    return lambda tasks, work: run_tasks(tasks, work, workers)


class _RankRounds:
    """The torchrun runner: rank 0 passes it as its runner; other ranks serve its rounds on
    entering the context. On leaving, rank 0 ends the rounds even if it stopped early (a
    refusal, a complete file), so no rank waits for work that will not come."""

    def __init__(self, work: Work) -> None:
        self.work, self.finished = work, False

    def __call__(self, tasks: Iterable[Task], work: Work) -> Iterator[Result]:
        yield from run_tasks_on_ranks(tasks, work)
        self.finished = True

    def __enter__(self) -> _RankRounds:
        import torch.distributed as dist

        if dist.get_rank() != 0:
            for _ in run_tasks_on_ranks(None, self.work):
                pass
            self.finished = True
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.finished:
            for _ in run_tasks_on_ranks(iter(()), self.work):
                pass


class GenerationInterrupted(NoaError):
    """SIGINT/SIGTERM during generation: what is done is kept; the message says how to resume."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def _generate(
    cfg: GenerateConfig,
    out: Path,
    batch_size: int,
    work: Work,
    runner: Runner,
    resume: bool,
    overwrite: bool,
    progress: Progress,
    log: Callable[[str], None],
) -> Path:
    named = outputs.named(out)
    partial = named.with_name(named.name + ".partial")
    outputs.check_writable(out, "--out", directory=False)
    with outputs.exclusive(out, "dataset"):
        if out.exists() and not (overwrite or resume):
            raise NoaError(
                f"{out} already exists; pass --overwrite to replace it (it is kept until the new file is complete) or choose another --out"
            )
        if out.exists() and overwrite:
            _check_is_dataset(out)
        if out.exists() and resume and not overwrite and not partial.exists():
            _check_resumable(out, cfg, complete=True)
            log(f"{out} is already complete; nothing to resume")
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists() and not resume and not overwrite:
            raise NoaError(
                f"an interrupted generation left {partial}; pass --resume to continue it or --overwrite to start again"
            )
        feature_names = None
        if cfg.features:
            from noa.features import feature_names as names_for

            feature_names = names_for(cfg.channels)
        resuming = partial.exists() and resume and not overwrite
        _check_sizes(cfg, batch_size, out, feature_names, on_disk=not resuming)
        if resuming:
            _check_resumable(partial, cfg)
            log(f"Resuming generation in {partial}")
        started = resuming
        creating = partial.with_name(partial.name + ".new")
        with Interruption().installed() as interruption:
            try:
                if not resuming:
                    # The layout is written under another name first: a partial file is always whole.
                    _create(creating, cfg, feature_names, chunk=256)
                    os.replace(creating, partial)
                    started = True
                _replay_pending(partial, cfg, batch_size, work, runner, progress, log)
            except KeyboardInterrupt:
                name = signal.Signals(interruption.signum).name
                if not started:
                    creating.unlink(missing_ok=True)
                    raise GenerationInterrupted(
                        f"generation interrupted by {name} before any sample was replayed; nothing was kept, run the command again",
                        interruption.signum,
                    ) from None
                raise GenerationInterrupted(
                    f"generation interrupted by {name}; the samples replayed so far are kept in {partial}. "
                    f"Continue it with the same flags plus --resume: noa data generate --out {out} ... --resume",
                    interruption.signum,
                ) from None
        os.replace(partial, out)
    return out


def _check_is_dataset(path: Path) -> None:
    """--overwrite replaces a noa dataset only, never another file that happens to be there."""
    try:
        with h5py.File(path, "r") as f:
            ours = f.attrs.get("format") == h5.FORMAT
    except OSError:
        ours = False
    if not ours:
        raise NoaError(
            f"--overwrite replaces a noa dataset, but {path} is not one; move it away or choose another --out"
        )


def _estimated_bytes(cfg: GenerateConfig, feature_names: dict[str, list[str]] | None) -> int:
    n, c, g, t, m = cfg.n_samples, cfg.channels, cfg.grid, cfg.timesteps, cfg.realizations
    per_sample = c * g * g + 64
    if cfg.store_trajectories:
        per_sample += m * (t + 1) * c * g * g
    if feature_names is not None:
        per_sample += (
            len(feature_names["initial"]) + len(feature_names["summary"]) + (t + 1) * len(feature_names["temporal"])
        )
    return 4 * n * per_sample


def _check_sizes(
    cfg: GenerateConfig, batch_size: int, out: Path, feature_names: dict[str, list[str]] | None, on_disk: bool
) -> None:
    """Refuse up front what cannot fit: the file on disk and one batch of rollouts in memory."""
    c, g, t, m = cfg.channels, cfg.grid, cfg.timesteps, cfg.realizations
    if on_disk:
        outputs.check_writable(out, "--out", directory=False, needed_bytes=_estimated_bytes(cfg, feature_names))
    # A batch's rollouts, the CNO's hidden activations (up to 64 channels) and the features' working copies.
    batch = min(batch_size, cfg.n_samples)
    outputs.check_memory(
        4 * batch * m * ((t + 1) * c * g * g * 3 + 64 * g * g * 4),
        f"replaying a batch of {batch} samples (M={m}, T={t}, grid {g})",
        "lower --batch-size, --timesteps, --realizations or --grid",
    )


def _check_resumable(path: Path, cfg: GenerateConfig, complete: bool = False) -> None:
    with h5.open_dataset(path) as f:
        stored = json.loads(f.attrs["config"])
    asked = cfg.recorded()
    if stored != asked:
        field_of = {recorded: name for name, recorded in RECORDED_KEYS.items()}
        diff = ", ".join(
            f"{field_of.get(k, k)}: file has {stored.get(k)!r}, you asked {v!r}"
            for k, v in asked.items()
            if stored.get(k) != v
        )
        if complete:
            raise NoaError(
                f"{path} is a complete dataset made with other settings ({diff}), so there is nothing of this "
                "generation to resume; pass --overwrite to replace it or choose another --out"
            )
        raise NoaError(
            f"cannot resume {path}: its configuration differs ({diff}); repeat the original flags or pass --overwrite"
        )


def add_features(
    path: str | Path,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    workers: int = 1,
    overwrite: bool = False,
    progress: Progress = True,
    log: Callable[[str], None] = print,
) -> None:
    """Replay a dataset's samples and store their features (`noa data features`).

    Resumable: rows whose ``/features/done`` flag is set are skipped. Existing complete
    features are kept unless ``overwrite``. ``workers`` processes share the replay.
    """
    if batch_size < 1 or workers < 1:
        raise NoaError(f"--batch-size and --workers must be >= 1; got {batch_size} and {workers}")
    from noa.features import feature_names as names_for

    with h5.open_dataset(path) as f:
        info = h5.read_info(f)
        h5.check_inputs(f, np.arange(info.n_samples))
    names = names_for(info.channels)
    with outputs.exclusive(path, "dataset"), _open_for_update(path) as f, Interruption().installed() as interruption:
        if "features" in f:
            stored_done = f["features/done"][:] if "done" in f["features"] else np.zeros(info.n_samples, bool)
            same_names = all(
                category in f["features"] and json.loads(f["features"][category].attrs["names"]) == names[category]
                for category in FEATURE_CATEGORIES
            )
            if not same_names and not overwrite:
                raise NoaError(
                    f"{path} holds features with other names than this noa computes; pass --overwrite to recompute them"
                )
            if stored_done.all() and not overwrite:
                log(f"{path} already has complete features; pass --overwrite to recompute them")
                return
            if overwrite:
                del f["features"]
        if "features" not in f:
            create_feature_datasets(f, names, info.n_samples, info.timesteps)
        pending = np.flatnonzero(~f["features/done"][:])
        bar = _progress(info.n_samples, info.n_samples - len(pending), "features", progress, log)
        work = Work(info.timesteps, info.realizations, keep_trajectories=False, features=True, device=device)
        try:
            _work_through(f, pending, work, batch_size, cached="trajectories" in f, runner=_pool(workers), bar=bar)
        except KeyboardInterrupt:
            raise GenerationInterrupted(
                f"feature computation interrupted by {signal.Signals(interruption.signum).name}; the features computed "
                f"so far are kept in {path}. Continue with: noa data features {path}",
                interruption.signum,
            ) from None


def _open_for_update(path: str | Path) -> h5py.File:
    try:
        return h5py.File(path, "r+")
    except OSError as err:
        raise NoaError(
            f"cannot open {path} for writing ({err}); check its permissions and that no other program has it open"
        ) from err
