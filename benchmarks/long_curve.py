"""What compute buys on the full family: the ladder's one-step probe run for two decades of updates.

A sibling of ``learnability.py`` (its family rung, its candidates, its skill): one candidate per
run learns g ≈ O_θ(x) on noise-free targets, the update rule applied outside the network, with
batch 32 states and AdamW at a constant lr 1e-3 (no schedule: the curve shows what updates buy,
not what an annealed schedule would add at its end). Runs are long (hours on a CPU), so a run
lives in its own folder (``--out``) and survives being stopped:

* a checkpoint (model, optimizer, update count, curve so far, the run's settings, accumulated
  wall seconds) is written atomically every ``--checkpoint-minutes`` and after each evaluation;
  SIGTERM or Ctrl-C finishes the update in flight, saves and exits 0;
* re-running the same command resumes where it stopped, exactly: the batch of update k is a pure
  function of (seed, k) (generators seeded from both, never a running stream), so a stopped and
  resumed run equals an uninterrupted one bit for bit on the same device and thread count
  (``tests/test_long_curve.py``); other settings against an existing folder are refused.

Two skills are measured (:mod:`noa.diagnostics.skill` defines both). The headline is the **skill
on O**: 1 − Σ‖g − O_θ(x)‖² / Σ‖O_θ(x)‖² per operator on ``--skill-per-rule`` (192) held-out
operators of each update rule (θ from their own seed, noise-free targets), as the median over
operators and pooled, each with a bootstrap 90% interval, binned by gain third and activation
(``skill_on_o`` in each curve point; its training figure is on the training operators below).
Beside it, labelled *drift skill*, the ladder's earlier figure: held-out skill on the update Δ
(``--n-test`` = 48 θ of the family, fixed by the seed) and training skill (the
pool's first 48 operators; with fresh data, the 48 operators of the stream's first batches) per
update rule, both measured at 10, 20, 30, 50, 100, 200, …, 1k, 2k, 3k, 5k, 10k, … updates (and where an
invocation ends at its target or its ``--minutes`` cap) and appended to ``curve.jsonl`` with the
training wall seconds (evaluation excluded), split into making batches and updating. Held-out
states are the CNO's at steps 0, T/4, T/2, 3T/4 of the training horizon T (the ladder's held-out
pool used T = 32 whatever the training T), so held-out skill measures new θ, not new steps.

Data (``--data``): ``pool`` (default) is the ladder's: ``--n-train`` 4096 θ × ``--timesteps`` 8
states, made once per invocation (minutes on a CPU). ``fresh`` draws every batch anew: 32 θ of the
family and 32 initial conditions (seeded by the run's seed and the update index), the CNO
replayed once to the batch's largest step and each row's state taken at its own random step in
[0, T), with its noise-free target O_θ(x); the replay's cost is logged apart from the update's.
The replay costs about as much as a θ-generated model's update (it is the CNO's own network),
so ``--prefetch DEPTH`` makes batches ahead in one worker process at the run's thread count: the
same batches, the same run bit for bit, with the replay on another core beside the updates (what
is then logged as making batches is the wait for them).

Candidates (``--model``; each prints its parameter count; the research ones are
:mod:`noa.model.candidates`):

* ``uafno``: the ladder's UAFNOBranch, the NOA's U-AFNO at the quickstart's widths (0.26 M);
* ``uafno4x``: the same with base_channels 32 (about 4× the parameters, 1.0 M);
* ``hyper``: the ladder's θ-generated depthwise-separable stack (0.25 M);
* ``oracle``: the CNO's own computation with learnable banks (:mod:`noa.model.oracle`), the
  ceiling: how much of the family a perfectly shaped model learns per update. Its levers:
  ``--lr``, ``--near-zero-output`` (output banks start at 1e-2, f ≈ 0), ``--oracle-banks K``
  (K > 4 over-parameterises the generator's four banks) and, for any candidate on fresh data,
  ``--gain-curriculum UPDATES`` (gains start in the family's low third and widen to its range);
* ``hybrid``: ``noa train --backbone hybrid`` at ``uafno``'s widths: the θ-generated stack
  (:mod:`noa.model.generated`, sized for the whole space's largest operator: 64 channels,
  5 layers, 7×7) beside the U-AFNO, f = f_generated + f_uafno;
* ``uafno-local``: the change for rough maps, ``uafno`` plus a full-resolution local path of
  four ConvNeXt-style blocks (periodic 7×7 depthwise conv, GroupNorm, FiLM from θ, 1×1 MLP;
  0.34 M in all). Not
  "AFNO with untruncated modes": at grid 32 the quickstart U-AFNO's AFNO acts on an 8×8
  bottleneck, where modes = 8 already keeps every rfft2 mode (``noa.model.afno.kept_modes``
  clamps rows to 4 + 4 and columns to 5, the whole 8×5 spectrum), so that candidate would be
  ``uafno`` itself. What the U-AFNO lacks for a rough map is work at full resolution: one 3×3
  stem block and one decoder block there, against the CNO's 2–5 layers of 3–7-wide depthwise
  convolutions whose output carries high wavenumbers (the README's rung-*one* table).

``--device cuda`` puts the model, the data and the evaluation on the GPU: the replay and O_θ run
there; the initial conditions are drawn on the CPU (``make_ics`` draws in float64 on the host by
design, for bytes that are the same on every machine) and the operators' weights are built on the
host and moved (``build_operators``), so a fresh batch has a host-side part on any device.
Exact resume is promised on a CPU; CUDA kernels need not be bit-reproducible.

    python benchmarks/long_curve.py --model uafno --updates 20000 --out benchmarks/.work/curve_uafno_pool --threads 1
    python benchmarks/long_curve.py --model uafno --data fresh --updates 10000 --out benchmarks/.work/curve_uafno_fresh
    python benchmarks/long_curve.py report benchmarks/.work/curve_* --out benchmarks/.work/curves.png
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from learnability import skill
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from noa.data.ics import make_ics
from noa.diagnostics.held_out import StateSet, cycled_ic_kinds, held_out_operators, ic_seeds, rollouts, skill_steps
from noa.diagnostics.skill import headline, median, skill_on_o
from noa.families import FULL, OperatorFamily, load_family
from noa.interruption import Interruption
from noa.model.candidates import HyperStack, LocalUAFNO, UAFNOBranch, WideUAFNOBranch
from noa.model.generated import family_fields
from noa.model.oracle import GENERATOR_BANKS, OracleConfig, OracleStudent
from noa.operators.cno import apply_operator, build_operators
from noa.operators.replay import replay
from noa.operators.space import CNO_SPACE
from noa.seeding import derive_seed, generator
from noa.torchfile import load_pt

MODELS = ("uafno", "uafno4x", "hyper", "uafno-local", "oracle", "hybrid")
CHANNELS = 3
CHECKPOINT, CURVE, RUN, SUMMARY = "checkpoint.pt", "curve.jsonl", "run.json", "summary.json"
POOL = "pool.pt"  # the pool and held-out states of a --data pool run, so a resume skips the replay
SKILL_SET = "skill_set.pt"  # the skill-on-O held-out operators, so a resume skips their replay
# The settings a run's numbers depend on; the rest (target, caps, threads) may change on resume.
IDENTITY = ("model", "data", "family", "seed", "n_train", "timesteps", "n_test", "grid", "batch_size", "lr", "device")
# Settings added later, recorded only where they differ from these defaults, so the runs made
# before them keep their identity (and resume).
LATER_IDENTITY = {
    "skill_per_rule": 192,
    "oracle_banks": GENERATOR_BANKS,
    "near_zero_output": False,
    "gain_curriculum": 0,
}


# ----------------------------------------------------------------------------- candidates


def build_model(name: str, seed: int, banks: int = GENERATOR_BANKS, near_zero_output: bool = False) -> nn.Module:
    """The candidate, initialised from ``seed`` (a benchmark may seed the global RNG for this);
    ``banks`` and ``near_zero_output`` are the oracle's levers."""
    if name == "oracle":
        return OracleStudent(OracleConfig(CHANNELS, banks, near_zero_output, seed))
    torch.manual_seed(seed)
    if name == "hybrid":  # noa train --backbone hybrid at the quickstart's U-AFNO widths, sized for the whole space
        return UAFNOBranch(None, "hybrid", family_fields(CNO_SPACE, FULL.unit_box()))
    builders = {"uafno": UAFNOBranch, "uafno4x": WideUAFNOBranch, "hyper": HyperStack, "uafno-local": LocalUAFNO}
    return builders[name]()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- data


@dataclass
class Batch:
    """One update's rows: θ, a CNO state and the noise-free O_θ of it."""

    theta: Tensor
    x: Tensor
    target: Tensor


def progress(line: str) -> None:
    print(line, flush=True)


def training_pool(
    family: OperatorFamily, seed: int, n: int, grid: int, timesteps: int, device: torch.device
) -> StateSet:
    """The ladder's training pool (its family rung with ``--family``): n θ, T states each."""
    theta = torch.from_numpy(family.draw(n, seed))
    return rollouts(theta, ic_seeds(seed, n), cycled_ic_kinds(n), CHANNELS, grid, timesteps, device, progress)


def held_out_set(
    family: OperatorFamily, seed: int, n: int, grid: int, timesteps: int, device: torch.device
) -> StateSet:
    """The ladder's held-out operators (drawn with seed + 1), on the training horizon T."""
    return training_pool(family, seed + 1, n, grid, timesteps, device)


class PoolSource:
    """Batches from a fixed pool; batch k is a function of (seed, k) alone."""

    def __init__(self, pool: StateSet, seed: int, size: int) -> None:
        self.pool, self.seed, self.size = pool, seed, size

    def batch(self, k: int) -> Batch:
        draw = generator(self.seed, "long-curve-batch", k)
        n, t = self.pool.states.shape[:2]
        device = self.pool.states.device
        rows = torch.randint(0, n, (self.size,), generator=draw).to(device)
        steps = torch.randint(0, t, (self.size,), generator=draw).to(device)
        return Batch(self.pool.theta[rows], self.pool.states[rows, steps], self.pool.maps[rows, steps])


@dataclass
class FreshRows:
    """What fresh batch k is made of: θ, initial-condition (and noise) seeds and kinds, steps."""

    theta: Tensor
    ic_seeds: list[int]
    ic_kinds: list[str]
    steps: Tensor


def gain_curriculum(family: OperatorFamily, theta: Tensor, k: int, ramp: int) -> Tensor:
    """θ with its weight_gain narrowed to the low end of the family's range at update k: the gain's
    unit coordinate u in the family's box [lo, hi] becomes lo + (u − lo)·w, w growing linearly from
    1/3 (the low third) at update 0 to 1 (the whole range) at update ``ramp``; 0 = no curriculum."""
    if ramp <= 0:
        return theta
    width = min(1.0, 1 / 3 + (2 / 3) * k / ramp)
    position = family.space.position("weight_gain")
    lo = family.unit_box()[position][0]
    out = theta.clone()
    out[:, position] = lo + (theta[:, position] - lo) * width
    return out


def fresh_rows(family: OperatorFamily, seed: int, k: int, size: int, timesteps: int, curriculum: int = 0) -> FreshRows:
    """Batch k's draws, each from a generator seeded by (seed, k): reproducible and resumable;
    ``curriculum`` > 0 narrows the gains of the first updates (:func:`gain_curriculum`)."""
    theta = torch.from_numpy(family.draw(size, derive_seed(seed, "long-curve-theta", k)))
    theta = gain_curriculum(family, theta, k, curriculum)
    ic_seeds = [derive_seed(seed, "long-curve-ic", k, i) for i in range(size)]
    steps = torch.randint(0, timesteps, (size,), generator=generator(seed, "long-curve-step", k))
    return FreshRows(theta, ic_seeds, cycled_ic_kinds(size), steps)


class FreshSource:
    """Every batch new operators and new initial conditions, replayed to each row's step."""

    def __init__(
        self,
        family: OperatorFamily,
        seed: int,
        size: int,
        grid: int,
        timesteps: int,
        device: torch.device,
        curriculum: int = 0,
    ):
        self.family, self.seed, self.size, self.grid, self.timesteps = family, seed, size, grid, timesteps
        self.device, self.curriculum = device, curriculum

    @torch.no_grad()
    def batch(self, k: int) -> Batch:
        """One replay of the batch's operators to its largest step (frames are kept, not recomputed
        per row), each row's state picked at its own step, and O_θ applied once to the picks."""
        rows = fresh_rows(self.family, self.seed, k, self.size, self.timesteps, self.curriculum)
        ics, _ = make_ics(rows.ic_kinds, rows.ic_seeds, CHANNELS, self.grid)
        last = max(1, int(rows.steps.max()))  # replay needs at least one step
        frames = replay(rows.theta, ics, rows.ic_seeds, last, device=self.device)[:, 0]
        x = frames[torch.arange(self.size, device=self.device), rows.steps.to(self.device)]
        ops = build_operators(rows.theta, rows.ic_seeds, CHANNELS, self.grid, self.device)
        return Batch(rows.theta.to(self.device), x, apply_operator(ops, x))

    def seen(self, n: int) -> StateSet:
        """The first n operators of the stream with the initial conditions they were trained on,
        at steps 0..T-1 (the training skill's set)."""
        draws = [
            fresh_rows(self.family, self.seed, k, self.size, self.timesteps, self.curriculum)
            for k in range(-(-n // self.size))
        ]
        theta = torch.cat([d.theta for d in draws])[:n]
        seeds = [s for d in draws for s in d.ic_seeds][:n]
        kinds = [kind for d in draws for kind in d.ic_kinds][:n]
        return rollouts(theta, seeds, kinds, CHANNELS, self.grid, self.timesteps, self.device)


Source = PoolSource | FreshSource


class _Indexed(torch.utils.data.Dataset):
    """A source seen as a dataset whose item k is batch k."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def __getitem__(self, k: int) -> Batch:
        return self.source.batch(k)


class Prefetched:
    """Batches ``start``, ``start`` + 1, … made ahead by one worker process, so a CPU run's replay
    overlaps its updates instead of adding to them. The worker runs the caller's thread count and
    makes the source's own batches (each a function of (seed, k)), so the run is the same bit for
    bit; only the wall clock changes, and what it then logs as making batches is the wait for them."""

    def __init__(self, source: Source, start: int, stop: int, depth: int) -> None:
        threads = torch.get_num_threads()
        loader = torch.utils.data.DataLoader(
            _Indexed(source),
            batch_size=None,
            sampler=range(start, stop),
            num_workers=1,
            prefetch_factor=depth,
            worker_init_fn=lambda _worker: torch.set_num_threads(threads),
        )
        self._batches, self._next = iter(loader), start

    def batch(self, k: int) -> Batch:
        if k != self._next:
            raise RuntimeError(f"prefetched batches arrive in order: asked for {k}, next is {self._next}")
        self._next += 1
        return next(self._batches)


# ----------------------------------------------------------------------------- a run's state on disk


@dataclass
class Progress:
    """Everything that grows during a run; saved in the checkpoint."""

    updates: int = 0
    train_seconds: float = 0.0  # wall seconds of batches and updates (evaluation excluded)
    batch_seconds: float = 0.0  # of which making batches (the fresh mode's replay)
    update_seconds: float = 0.0  # of which forward, backward and the optimizer step
    eval_seconds: float = 0.0
    curve: list[dict[str, Any]] = field(default_factory=list)


def fail(message: str) -> NoReturn:
    """A refusal: one line on stderr, exit status 2, no traceback."""
    print(f"long_curve: {message}", file=sys.stderr)
    raise SystemExit(2)


def identity(args: argparse.Namespace, family: OperatorFamily) -> dict[str, Any]:
    """The settings a run's numbers depend on, as plain JSON data (the family by definition too)."""
    settings = {name: getattr(args, name) for name in IDENTITY}
    settings |= {
        name: getattr(args, name) for name, default in LATER_IDENTITY.items() if getattr(args, name) != default
    }
    if args.data == "fresh":
        settings["n_train"] = None  # no pool: its size does not matter
    settings["family_definition"] = family.as_dict()
    return json.loads(json.dumps(settings))


def short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


def check_out_dir(out: Path, settings: dict[str, Any]) -> None:
    """Refuse an ``--out`` that holds anything but a run with these same settings."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / RUN).exists():
        fail(f"{out} is not empty and has no {RUN}: not a long_curve run; give another --out")
    stored = json.loads((out / RUN).read_text())["identity"]
    diffs = [
        f"{key} {short(stored.get(key))} there, {short(settings.get(key))} asked"
        for key in sorted(set(stored) | set(settings))
        if stored.get(key) != settings.get(key)
    ]
    if diffs:
        fail(
            f"{out} holds a run with other settings ({'; '.join(diffs)}); "
            "continue it with its own settings or give another --out"
        )


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress, settings: dict):
    """Written to a temporary file, then renamed over the old one: a kill mid-write keeps the old."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": asdict(progress),
        "args": settings,
    }
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out / CHECKPOINT)


def load_checkpoint(
    out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, settings: dict, device: torch.device
) -> Progress:
    """The saved progress, with the model and optimizer restored in place."""
    state = load_pt(out / CHECKPOINT, "long_curve checkpoint", f"remove {out} to start the run over", device)
    if state["args"] != settings:
        fail(
            f"{out / CHECKPOINT} was written by a run with other settings than {out / RUN} records; give another --out"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return Progress(**state["progress"])


def write_curve(out: Path, curve: list[dict[str, Any]]) -> None:
    """curve.jsonl as the checkpoint has it (drops points evaluated after the last checkpoint)."""
    write_atomic(out / CURVE, "".join(json.dumps(entry) + "\n" for entry in curve))


# ----------------------------------------------------------------------------- training


def evaluation_points(target: int) -> set[int]:
    """10, 20, 30, 50, 100, 200, … up to ``target``: even in log(updates), for the fit (which starts
    at ``--min-updates``) and the plot (whose first decade shows the fast start)."""
    points, scale = set(), 10
    while scale <= target:
        points |= {m * scale for m in (1, 2, 3, 5) if m * scale <= target}
        scale *= 10
    return points


def synchronize(device: torch.device) -> None:
    """Wait for the GPU, so wall clocks split batch and update time honestly."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def update(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> Tensor:
    """One AdamW step on the plain MSE between g(x, θ) and O_θ(x); the loss, detached."""
    loss = F.mse_loss(model(batch.x, batch.theta), batch.target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def count_flops(model: nn.Module, source: Source) -> dict[str, int]:
    """torch's FLOP count (convolutions and matrix products; FFTs and elementwise work not
    counted) of making batch 0 and of one forward and backward on it: the H100 estimate's basis.
    Nothing is stepped and the gradients are dropped, so the run is unchanged."""
    with FlopCounterMode(display=False) as making:
        batch = source.batch(0)
    with FlopCounterMode(display=False) as stepping:
        F.mse_loss(model(batch.x, batch.theta), batch.target).backward()
    model.zero_grad(set_to_none=True)
    return {"batch": int(making.get_total_flops()), "update": int(stepping.get_total_flops())}


class StopSignal:
    """SIGTERM and SIGINT ask the loop to stop after the update in flight (a checkpoint, exit 0)."""

    def __init__(self) -> None:
        self.name: str | None = None

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        def handle(signum: int, _frame: object) -> None:
            self.name = signal.Signals(signum).name

        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


@dataclass
class Run:
    """A run in memory: what it trains, on what, and how far it is."""

    args: argparse.Namespace
    out: Path
    settings: dict[str, Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    source: Source
    held_out: StateSet
    training: StateSet
    skill_set: StateSet  # the skill-on-O held-out operators (--skill-per-rule of each rule)
    family: OperatorFamily
    progress: Progress
    device: torch.device
    loss_sum: Tensor | None = None  # since the last curve point, on the device (no per-update sync)
    loss_count: int = 0
    invocation: dict[str, float] = field(default_factory=lambda: {"updates": 0, "seconds": 0.0, "batch_seconds": 0.0})

    def save(self) -> None:
        save_checkpoint(self.out, self.model, self.optimizer, self.progress, self.settings)


def timed_update(run: Run, batches: Source | Prefetched) -> None:
    """Take batch k (k = updates so far) from ``batches`` and step on it, timing the two apart."""
    p = run.progress
    started = time.perf_counter()
    batch = batches.batch(p.updates)
    synchronize(run.device)
    made = time.perf_counter()
    loss = update(run.model, run.optimizer, batch)
    synchronize(run.device)
    done = time.perf_counter()
    p.updates += 1
    p.batch_seconds += made - started
    p.update_seconds += done - made
    p.train_seconds += done - started
    run.invocation["updates"] += 1
    run.invocation["seconds"] += done - started
    run.invocation["batch_seconds"] += made - started
    run.loss_sum = loss if run.loss_sum is None else run.loss_sum + loss
    run.loss_count += 1


def median_skill(model: nn.Module, theta: Tensor, states: Tensor, maps: Tensor) -> dict[str, float]:
    """The median over operators of each one's own drift skill, per rule, on the states
    :func:`learnability.skill` pools: the pooled figure listens most to the few operators with the
    largest updates (one held-out residual operator carried 28% of the pool's Σ|Δ|²)."""
    return skill(model, theta, states, maps, statistic=median)


def evaluate(run: Run) -> None:
    """Held-out and training skill per rule now: a curve point, logged, appended and checkpointed."""
    p = run.progress
    started = time.perf_counter()
    run.model.eval()
    held_out = skill(run.model, run.held_out.theta, run.held_out.states, run.held_out.maps)
    training = skill(run.model, run.training.theta, run.training.states, run.training.maps)
    medians = {
        "held_out": median_skill(run.model, run.held_out.theta, run.held_out.states, run.held_out.maps),
        "training": median_skill(run.model, run.training.theta, run.training.states, run.training.maps),
    }
    seen = run.training.picked(skill_steps(run.training.states.shape[1]))
    on_o = {
        "held_out": skill_on_o(run.model, run.skill_set, run.family, seed=run.args.seed),
        "training": headline(skill_on_o(run.model, seen, run.family, seed=run.args.seed)),
    }
    run.model.train()
    spent = time.perf_counter() - started
    p.eval_seconds += spent
    entry = {
        "updates": p.updates,
        "seconds": round(p.train_seconds, 3),
        "batch_seconds": round(p.batch_seconds, 3),
        "update_seconds": round(p.update_seconds, 3),
        "eval_seconds": round(spent, 3),
        "loss": round(float(run.loss_sum) / run.loss_count, 6) if run.loss_sum is not None else None,
        "held_out": held_out,
        "training": training,
        "median_over_operators": medians,
        "skill_on_o": on_o,
    }
    run.loss_sum, run.loss_count = None, 0
    p.curve.append(entry)
    with open(run.out / CURVE, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    print(json.dumps({k: v for k, v in entry.items() if k != "skill_on_o"}), flush=True)
    print(f"    skill on O, held out: {json.dumps(headline(on_o['held_out']))}", flush=True)
    run.save()


def train(run: Run, stop: StopSignal) -> str:
    """Update until the target, the ``--minutes`` cap or a signal; evaluate on schedule and where
    an invocation ends on its own; checkpoint on the clock and at the end. Returns why it stopped."""
    args, p = run.args, run.progress
    points = evaluation_points(args.updates)
    batches: Source | Prefetched = run.source
    if args.prefetch and p.updates < args.updates:
        batches = Prefetched(run.source, p.updates, args.updates, args.prefetch)
    started = last_save = time.monotonic()
    while True:
        if p.updates >= args.updates:
            reason = f"reached the target of {args.updates} updates"
            break
        if stop.name:
            reason = f"stopped by {stop.name}"
            break
        if args.minutes is not None and time.monotonic() - started >= 60 * args.minutes:
            reason = f"stopped at the --minutes cap ({args.minutes:g} min)"
            break
        timed_update(run, batches)
        if p.updates in points:
            evaluate(run)
            last_save = time.monotonic()
        elif time.monotonic() - last_save >= 60 * args.checkpoint_minutes:
            run.save()
            last_save = time.monotonic()
    if not stop.name and p.updates and (not p.curve or p.curve[-1]["updates"] != p.updates):
        evaluate(run)
    run.save()
    return reason


# ----------------------------------------------------------------------------- setup and report


def per_update(seconds: float, updates: float) -> float | None:
    return round(seconds / updates, 5) if updates else None


def summary(run: Run, meta: dict[str, Any], reason: str) -> dict[str, Any]:
    """The run's figures so far, as summary.json holds them (gpu_quality.sh reports this)."""
    p, inv = run.progress, run.invocation
    return {
        "identity": run.settings,
        "meta": meta,
        "stopped": reason,
        "updates": p.updates,
        "seconds_per_update": per_update(p.train_seconds, p.updates),
        "batch_seconds_per_update": per_update(p.batch_seconds, p.updates),
        "update_seconds_per_update": per_update(p.update_seconds, p.updates),
        "eval_seconds": round(p.eval_seconds, 2),
        "this_invocation": {
            "updates": inv["updates"],
            "seconds_per_update": per_update(inv["seconds"], inv["updates"]),
            "batch_seconds_per_update": per_update(inv["batch_seconds"], inv["updates"]),
            "threads": torch.get_num_threads(),
            "prefetch": run.args.prefetch,
        },
        "curve": p.curve,
    }


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"cpu ({torch.get_num_threads()} threads), torch {torch.__version__}"


def make_run(args: argparse.Namespace, family: OperatorFamily, settings: dict, device: torch.device) -> Run:
    """The data, the model and its optimizer, before any checkpoint is read."""
    started = time.perf_counter()
    cached = Path(args.out) / POOL
    source: Source
    if args.data == "pool":
        if cached.exists():  # written by this run (check_out_dir checked the folder is it)
            cached_sets = load_pt(cached, "long_curve pool cache", f"remove {cached} to replay it anew", device)
            held_out, pool = (StateSet(**sets) for sets in cached_sets)
        else:
            held_out = held_out_set(family, args.seed, args.n_test, args.grid, args.timesteps, device)
            pool = training_pool(family, args.seed, args.n_train, args.grid, args.timesteps, device)
        source, training = PoolSource(pool, args.seed, args.batch_size), pool.head(args.n_test)
    else:
        held_out = held_out_set(family, args.seed, args.n_test, args.grid, args.timesteps, device)
        source = FreshSource(
            family, args.seed, args.batch_size, args.grid, args.timesteps, device, args.gain_curriculum
        )
        training = source.seen(args.n_test)
    skill_set = skill_on_o_set(args, family, device)
    print(f"data ({args.data}): {time.perf_counter() - started:.0f} s", flush=True)
    model = build_model(args.model, args.seed, args.oracle_banks, args.near_zero_output).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    return Run(
        args,
        Path(args.out),
        settings,
        model,
        optimizer,
        source,
        held_out,
        training,
        skill_set,
        family,
        Progress(),
        device,
    )


def skill_on_o_set(args: argparse.Namespace, family: OperatorFamily, device: torch.device) -> StateSet:
    """The skill-on-O held-out operators (``--skill-per-rule`` of each rule, θ from their own seed,
    states at steps 0, T/4, T/2, 3T/4), read back from the run's folder where it was made before."""
    cached = Path(args.out) / SKILL_SET
    if cached.exists():  # written by this run (check_out_dir checked the folder is it)
        return StateSet(**load_pt(cached, "long_curve skill-set cache", f"remove {cached} to replay it anew", device))
    seed = derive_seed(args.seed, "long-curve-skill-on-o")
    return held_out_operators(family, args.skill_per_rule, seed, CHANNELS, args.grid, args.timesteps, device, progress)


def start_or_resume(run: Run, command: str) -> dict[str, Any]:
    """Restore the checkpoint if there is one; otherwise count FLOPs and record the run. Its meta."""
    out = run.out
    if (out / CHECKPOINT).exists():
        run.progress = load_checkpoint(out, run.model, run.optimizer, run.settings, run.device)
        write_curve(out, run.progress.curve)
        print(f"resuming at update {run.progress.updates}", flush=True)
        return json.loads((out / RUN).read_text())["meta"]
    meta = {
        "parameters": parameter_count(run.model),
        "flops": count_flops(run.model, run.source),
        "device_name": describe_device(run.device),
        "command": command,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / RUN, json.dumps({"identity": run.settings, "meta": meta}, indent=2) + "\n")
    write_curve(out, [])
    return meta


def save_sets(out: Path, name: str, sets: dict[str, Any] | list[dict[str, Any]]) -> None:
    """Replayed states kept beside the checkpoint (written to a temporary file, then renamed): a
    4096-operator pool takes ~8 minutes of one CPU thread to replay, and every resume would pay it again."""
    tmp = out / (name + ".tmp")
    torch.save(sets, tmp)
    os.replace(tmp, out / name)


def tensors_of(s: StateSet) -> dict[str, Tensor]:
    return {name: getattr(s, name).cpu() for name in ("theta", "states", "maps")}


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="report: long_curve.py report DIR [DIR ...] --out FILE.png"
    )
    p.add_argument("--out", required=True, help="the run's folder (created; an existing one is resumed)")
    p.add_argument("--model", choices=MODELS, default="uafno")
    p.add_argument("--data", choices=("pool", "fresh"), default="pool")
    p.add_argument("--family", default="full", help="a shipped family's name or a family file")
    p.add_argument("--updates", type=int, default=20000, help="target update count (raise it to extend a run)")
    p.add_argument("--minutes", type=float, default=None, help="also stop after this many minutes of this invocation")
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--n-train", type=int, default=4096, help="operators in the pool (--data pool)")
    p.add_argument("--timesteps", type=int, default=8, help="T: states at steps 0..T-1 are learned from")
    p.add_argument("--n-test", type=int, default=48, help="held-out operators, and training operators evaluated")
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW, constant")
    p.add_argument(
        "--skill-per-rule",
        type=int,
        default=LATER_IDENTITY["skill_per_rule"],
        help="held-out operators of each update rule for the skill on O",
    )
    p.add_argument(
        "--oracle-banks", type=int, default=GENERATOR_BANKS, help="oracle: learnable banks K (>= the generator's 4)"
    )
    p.add_argument("--near-zero-output", action="store_true", help="oracle: output banks start near 0 (f ≈ 0)")
    p.add_argument(
        "--gain-curriculum",
        type=int,
        default=0,
        metavar="UPDATES",
        help="fresh data: gains start in the family's low third and widen to its range over UPDATES (0: off)",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=0,
        metavar="DEPTH",
        help="make up to DEPTH batches ahead in one worker process (CPU only; the same run, less wall time; 0: off)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def check_levers(args: argparse.Namespace) -> None:
    """Refuse a lever the run's model or data cannot use, rather than ignore it."""
    if args.model != "oracle" and (args.oracle_banks != GENERATOR_BANKS or args.near_zero_output):
        fail("--oracle-banks and --near-zero-output are the oracle's levers; use them with --model oracle")
    if args.oracle_banks < GENERATOR_BANKS:
        fail(f"--oracle-banks {args.oracle_banks}: the oracle needs at least the generator's {GENERATOR_BANKS} banks")
    if args.gain_curriculum and args.data != "fresh":
        fail("--gain-curriculum draws each batch's θ anew: use it with --data fresh")
    if args.prefetch and args.device != "cpu":
        fail("--prefetch makes batches in a CPU worker process: use it with --device cpu")
    if args.gain_curriculum < 0 or args.skill_per_rule < 1 or args.prefetch < 0:
        fail("--gain-curriculum and --prefetch must be >= 0 and --skill-per-rule >= 1")


def run_training(argv: list[str]) -> None:
    """Start, resume or extend one run, then write its summary."""
    args = train_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device}: torch sees no CUDA device here")
    device = torch.device(args.device)
    check_levers(args)
    family = load_family(args.family)
    settings = identity(args, family)
    out = Path(args.out)
    check_out_dir(out, settings)
    command = f"python benchmarks/long_curve.py {shlex.join(argv)}"
    interruption = Interruption()
    try:
        with interruption.installed():
            run = make_run(args, family, settings, device)
            meta = start_or_resume(run, command)
            if isinstance(run.source, PoolSource) and not (out / POOL).exists():
                save_sets(out, POOL, [tensors_of(run.held_out), tensors_of(run.source.pool)])
            if not (out / SKILL_SET).exists():
                save_sets(out, SKILL_SET, tensors_of(run.skill_set))
    except KeyboardInterrupt:
        print(f"stopped by {interruption.signum.name} while making the data; no update was lost", file=sys.stderr)
        raise SystemExit(0) from None
    flops = meta["flops"]
    print(
        f"{args.model}: {meta['parameters']:,} parameters; {flops['update'] / 1e9:.2f} GFLOP per update, "
        f"{flops['batch'] / 1e9:.2f} GFLOP per batch made (torch's count); {meta['device_name']}",
        flush=True,
    )
    with StopSignal().installed() as stop:
        reason = train(run, stop)
    figures = summary(run, meta, reason)
    write_atomic(out / SUMMARY, json.dumps(figures, indent=2) + "\n")
    s = figures["this_invocation"]
    print(
        f"{reason} at update {run.progress.updates}; this invocation {s['updates']} updates, "
        f"{s['seconds_per_update']} s per update ({s['batch_seconds_per_update']} s of it making the batch)",
        flush=True,
    )
    if run.progress.updates < args.updates:
        print(f"to continue, run the same command again: {command}", flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        from long_curve_report import report_main

        report_main(argv[1:])
        return
    run_training(argv)


if __name__ == "__main__":
    main()
