"""Seconds per training batch and peak memory of `noa train`'s step, per loss term.

    python benchmarks/train_step.py --ablation --window-scan 4 8 16        # the README's CPU table
    python benchmarks/train_step.py --with-tokenizer --enable-latent-loss  # one configuration
    python benchmarks/train_step.py --preset guide --device cuda           # the README's GPU tables

``--preset guide`` takes the guide's sizes (64x64, T 256, window 32, batch 4, base 32, 3 levels,
16 modes, 4 AFNO blocks, K = 3) and measures, in one process, every way the step can execute
(fp32/bf16, eager/compiled, CUDA graphs) for L_traj alone and for all three losses, with the
achieved TFLOP/s against torch's FLOP count of the same batch (FFTs not counted); then a batch
sweep (4, 8, 16) as sample-rollouts per second, and a memory table for the guide's OOM advice.
On CUDA, peak memory is ``max_memory_allocated`` after a reset, so one process serves all rows.

One configuration = the sizes given by the flags (they mirror `noa train`'s) and a set of
loss terms. ``--ablation`` measures (a) L_traj only, (b) + L_commit, (c) + L_latent with 3
and (d) with 8 sampled steps, so each term's overhead is read against (a); ``--window-scan``
measures L_traj alone at several ``--bptt-window`` values at fixed T, to show that truncated
BPTT bounds activation memory by the window rather than by T.

A batch is what the training loop does per batch minus the target: zero_grad,
``train_batch`` (TBPTT, scout pass when a tokenizer is present), gradient clipping and an
AdamW step. The CNO target is replayed once per batch of the dataset before timing (its cost
is printed separately: `noa train` pays it per batch unless trajectories are cached).

Every configuration runs in a fresh subprocess so its memory peak is its own. Peak memory is
the growth over the resident set after setup (model, optimizer, data, targets): on CUDA
``max_memory_allocated`` after a reset, on Linux the VmHWM high-water mark of
``/proc/self/status`` after resetting it through ``/proc/self/clear_refs``. The CPU figure is
RSS, so it includes allocator slack; compare rows, not absolute bytes.

Time is reported as wall and as process CPU time per batch. On a shared CPU the CPU time is
the steadier figure (other jobs' load inflates wall time); on CUDA read the wall time. On a
small, busy CPU also try ``--threads 1``: torch's intra-op threads spin-wait on each other
when the cores are oversubscribed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from noa.data.generate import GenerateConfig, generate
from noa.data.loader import SampleSource, usable_rows
from noa.model import LatentProjector, UAFNO, UAFNOConfig, check_grid
from noa.operators.replay import replay
from noa.operators.space import CNO_SPACE
from noa.runtime import resolve_device
from noa.seeding import derive_seed
from noa.tokenizer import load_tokenizer
from noa.tokenizer.job import train_tokenizer_on_dataset
from noa.train.execution import Execution
from noa.train.rollout import sample_steps
from noa.train.step import BatchLosses, Objective, train_batch

WORK = Path(__file__).resolve().parent / ".work"
MIB = 2**20
# The guide's training configuration (docs/user-guide.md, "Training the NOA").
GUIDE = dict(
    grid=64,
    timesteps=256,
    bptt_window=32,
    batch_size=4,
    base_channels=32,
    encoder_levels=3,
    modes=16,
    afno_blocks=4,
    latent_sample_steps=3,
    warmup=3,
    repeats=5,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=32)
    p.add_argument("--bptt-window", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--encoder-levels", type=int, default=3)
    p.add_argument("--modes", type=int, default=16)
    p.add_argument("--afno-blocks", type=int, default=4)
    p.add_argument("--projector-hidden", type=int, default=512)
    p.add_argument("--lambda-commit", type=float, default=0.5)
    p.add_argument("--lambda-latent", type=float, default=0.5)
    p.add_argument(
        "--vqvae-path", default=None, help="tokenizer for L_commit/L_latent (must match --grid and --timesteps)"
    )
    p.add_argument(
        "--with-tokenizer", action="store_true", help="train a throwaway tokenizer on the benchmark data (timing only)"
    )
    p.add_argument("--enable-latent-loss", action="store_true")
    p.add_argument("--latent-sample-steps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    p.add_argument("--repeats", type=int, default=3, help="timed batches (the median is reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="autocast precision of the step (noa train --precision)",
    )
    p.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each step's activations (noa train --activation-checkpointing)",
    )
    p.add_argument(
        "--ablation", action="store_true", help="measure (a) traj, (b) +commit, (c) +latent K=3, (d) +latent K=8"
    )
    p.add_argument(
        "--window-scan", type=int, nargs="*", default=[], metavar="W", help="L_traj memory/time at these windows"
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON result (used for the per-configuration subprocesses)"
    )
    p.add_argument(
        "--preset",
        choices=["guide"],
        default=None,
        help="the guide's sizes and the GPU tables (flags given explicitly still win)",
    )
    p.add_argument(
        "--budget-s", type=float, default=None, help="with --preset: stop starting new rows after this many seconds"
    )
    p.add_argument(
        "--execution",
        default=None,
        help=f"with --preset: modes to measure, comma-separated, of: {', '.join(MODES)} (default: all on CUDA, the eager ones on a CPU)",
    )
    p.add_argument(
        "--rows",
        default="modes,sweep,memory",
        help="with --preset: which tables, comma-separated (modes, sweep, memory)",
    )
    p.add_argument("--results", default=None, help="with --preset: also append each row as a JSON line to this file")
    args = p.parse_args(argv)
    if args.preset == "guide":
        given = {
            a.split("=")[0][2:].replace("-", "_")
            for a in (argv if argv is not None else sys.argv[1:])
            if a.startswith("--")
        }
        for key, value in GUIDE.items():
            if key not in given:
                setattr(args, key, value)
    if args.enable_latent_loss and not (args.with_tokenizer or args.vqvae_path or args.ablation):
        p.error("--enable-latent-loss needs --vqvae-path or --with-tokenizer")
    return args


# ------------------------------------------------------------------ inputs


def ensure_dataset(grid: int, timesteps: int, n_samples: int, seed: int) -> Path:
    """A small toolkit-made dataset in benchmarks/.work, generated once and reused."""
    path = WORK / f"step_g{grid}_t{timesteps}_n{n_samples}_s{seed}.h5"
    if not path.exists():
        generate(
            GenerateConfig(n_samples=n_samples, grid=grid, timesteps=timesteps, seed=seed),
            path,
            progress=False,
            log=lambda _: None,
        )
    return path


def ensure_tokenizer(dataset: Path) -> Path:
    """A throwaway tokenizer (2 epochs): encode/quantize cost does not depend on its quality."""
    out = WORK / f"tok_{dataset.stem}"
    if not (out / "weights.pt").exists():
        train_tokenizer_on_dataset(
            dataset, out, epochs=2, codebook_size=8, val_split=0.25, overwrite=True, log=lambda _: None, progress=False
        )
    return out


# ------------------------------------------------------------------ memory


def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


class PeakMemory:
    """Growth of memory over a baseline taken at ``start()``: CUDA allocator or Linux RSS."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.method = "cuda max_memory_allocated" if self.cuda else "VmHWM - VmRSS (/proc/self)"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0): the peak is this run's own.
        Path("/proc/self/clear_refs").write_text("5")
        self.base = _proc_status_kib("VmRSS") * 1024

    def peak_growth(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return _proc_status_kib("VmHWM") * 1024 - self.base


# ------------------------------------------------------------------ shared by both paths


def _model_config(args: argparse.Namespace) -> UAFNOConfig:
    """The U-AFNO of the flags, checked against the grid before any data is made for it."""
    config = UAFNOConfig(
        channels=GenerateConfig.channels,
        param_dim=CNO_SPACE.size,
        base_channels=args.base_channels,
        encoder_levels=args.encoder_levels,
        modes=args.modes,
        afno_blocks=args.afno_blocks,
    )
    check_grid(config, args.grid)
    return config


def _build_objective(
    args: argparse.Namespace,
    model_cfg: UAFNOConfig,
    device: str,
    tokenizer: torch.nn.Module | None,
    with_projector: bool,
    execution: Execution,
    window: int,
    k: int,
) -> tuple[Objective, list[torch.nn.Parameter]]:
    """A freshly initialised (seeded) model, projector when L_latent is on, their objective and parameters."""
    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(derive_seed(args.seed, "bench-init"))
        model = UAFNO(model_cfg).to(device)
        projector = (
            LatentProjector(model.bottleneck_channels, tokenizer.latent_dim, args.projector_hidden).to(device)
            if with_projector
            else None
        )
    objective = Objective(
        model=model,
        projector=projector,
        tokenizer=tokenizer,
        lambda_commit=args.lambda_commit,
        lambda_latent=args.lambda_latent,
        bptt_window=window,
        latent_steps=sample_steps(args.timesteps, k) if with_projector else [],
        execution=execution,
    )
    return objective, list(model.parameters()) + (list(projector.parameters()) if projector is not None else [])


def _training_batch(objective: Objective, params: list, optimizer: torch.optim.Optimizer, batch: tuple) -> BatchLosses:
    """What the training loop does per batch, less the target: zero_grad, TBPTT, clip, AdamW step."""
    optimizer.zero_grad(set_to_none=True)
    losses = train_batch(objective, *batch)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return losses


# ------------------------------------------------------------------ one configuration


def measure(args: argparse.Namespace) -> dict:
    """Time and memory of ``args.repeats`` training batches of one configuration."""
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model_cfg = _model_config(args)
    # One dataset for every configuration of these sizes (16 samples: enough to fit the tokenizer).
    dataset = ensure_dataset(args.grid, args.timesteps, max(16, 2 * args.batch_size), args.seed)
    tokenizer = None
    if args.with_tokenizer or args.vqvae_path:
        tokenizer = load_tokenizer(args.vqvae_path or ensure_tokenizer(dataset), device=device)

    source = SampleSource(dataset, usable_rows(dataset, None))
    batches, replay_seconds = [], []
    for start in range(0, len(source) - args.batch_size + 1, args.batch_size):
        b = source.get_batch(list(range(start, start + args.batch_size)))
        t0 = time.perf_counter()
        target = replay(b["params"], b["ic"].to(device), b["seed"].tolist(), args.timesteps).mean(dim=1)
        replay_seconds.append(time.perf_counter() - t0)
        batches.append((b["ic"].to(device), b["params"].to(device), target))
    source.close()

    execution = Execution(device.split(":")[0], args.precision, activation_checkpointing=args.activation_checkpointing)
    objective, params = _build_objective(
        args,
        model_cfg,
        device,
        tokenizer,
        args.enable_latent_loss,
        execution,
        args.bptt_window,
        args.latent_sample_steps,
    )
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    memory = PeakMemory(device)
    memory.start()
    seconds, cpu_seconds = [], []
    for i in range(args.warmup + args.repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        _training_batch(objective, params, optimizer, batches[i % len(batches)])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= args.warmup:
            seconds.append(time.perf_counter() - t0)
            cpu_seconds.append(time.process_time() - c0)
    return {
        "sec_per_batch": statistics.median(seconds),
        "sec_all": seconds,
        "cpu_sec_per_batch": statistics.median(cpu_seconds),
        "peak_mib": memory.peak_growth() / MIB,
        "memory_method": memory.method,
        "replay_sec_per_batch": statistics.median(replay_seconds),
        "model_params": sum(p.numel() for p in objective.model.parameters()),
        "latent_steps": objective.latent_steps,
        "device": device,
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------ tables


def _child_argv(args: argparse.Namespace, **changes: object) -> list[str]:
    """This script's command line for one configuration of the same sizes."""
    values = {**vars(args), "ablation": False, "window_scan": [], "json": True, **changes}
    argv = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, list):
            argv += [flag, *map(str, value)] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def run_child(args: argparse.Namespace, **changes: object) -> dict:
    out = subprocess.run([sys.executable, __file__, *_child_argv(args, **changes)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the measurement of {changes or 'this configuration'} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _versus(value: float, base: dict | None, key: str) -> str:
    return f"{100 * (value / base[key] - 1):+.0f}%" if base else "-"


def _row(label: str, r: dict, a: dict | None, b: dict | None) -> str:
    """One table row; overheads on CPU time (robust to other load) and peak memory."""
    cpu, mem = r["cpu_sec_per_batch"], r["peak_mib"]
    return (
        f"| {label} | {r['sec_per_batch']:.2f} | {cpu:.2f} | {_versus(cpu, a, 'cpu_sec_per_batch')} | {_versus(cpu, b, 'cpu_sec_per_batch')} "
        f"| {mem:.0f} | {_versus(mem, a, 'peak_mib')} | {_versus(mem, b, 'peak_mib')} |"
    )


# ------------------------------------------------------------------ --preset guide (one process)

# Every way `noa train` can run the step; a CPU measures the eager ones unless asked.
MODES: dict[str, dict] = {
    "fp32 eager": dict(precision="fp32"),
    "bf16 eager": dict(precision="bf16"),
    "fp32 compiled": dict(precision="fp32", compile=True),
    "bf16 compiled": dict(precision="bf16", compile=True),
    "bf16 compiled + CUDA graphs": dict(precision="bf16", compile=True, cuda_graphs=True),
}
DEFAULT_CUDA_MODE = "bf16 eager"  # what `noa train` runs on CUDA by default


class GuideBench:
    """The guide preset's measurements, in one process so that compiled graphs are reused."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.device = args, resolve_device(args.device)
        self.started = time.perf_counter()
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        self.model_cfg = _model_config(args)
        dataset = ensure_dataset(args.grid, args.timesteps, 32, args.seed)
        self.tokenizer = load_tokenizer(args.vqvae_path or ensure_tokenizer(dataset), device=self.device)
        source = SampleSource(dataset, usable_rows(dataset, None))
        rows = source.get_batch(list(range(32)))
        source.close()
        self.ic, self.params = rows["ic"].to(self.device), rows["params"].to(self.device)
        first = slice(0, args.batch_size)
        self._sync()
        t0 = time.perf_counter()
        replay(rows["params"][first], self.ic[first], rows["seed"][first].tolist(), args.timesteps)
        self._sync()
        self.replay_seconds = time.perf_counter() - t0  # includes the first call's warm-up
        self.target = replay(rows["params"], self.ic, rows["seed"].tolist(), args.timesteps).mean(dim=1)
        self.results: list[dict] = []

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def over_budget(self) -> bool:
        return self.args.budget_s is not None and time.perf_counter() - self.started > self.args.budget_s

    def _batch(self, size: int, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Two disjoint sets of rows, alternated: no timing of a cache-warm repeat of one batch."""
        rows = slice((i % 2) * 16, (i % 2) * 16 + size)
        return self.ic[rows], self.params[rows], self.target[rows]

    def _objective(self, execution: Execution, all_losses: bool, window: int, k: int) -> tuple[Objective, list]:
        tokenizer = self.tokenizer if all_losses else None
        return _build_objective(self.args, self.model_cfg, self.device, tokenizer, all_losses, execution, window, k)

    def flops(self, all_losses: bool, batch: int) -> float:
        """torch's FLOP count of one fp32 eager training batch (convolutions and matrix products)."""
        from torch.utils.flop_counter import FlopCounterMode

        objective, _ = self._objective(
            Execution(self.device.split(":")[0]), all_losses, self.args.bptt_window, self.args.latent_sample_steps
        )
        counter = FlopCounterMode(display=False)
        with counter:
            train_batch(objective, *self._batch(batch, 0))
        return float(counter.get_total_flops())

    def measure(
        self,
        label: str,
        mode: str,
        all_losses: bool,
        batch: int | None = None,
        window: int | None = None,
        k: int | None = None,
        checkpointing: bool = False,
    ) -> dict:
        """Median seconds per batch (zero_grad, train_batch, clip, AdamW) and peak memory."""
        args = self.args
        batch, window, k = batch or args.batch_size, window or args.bptt_window, k or args.latent_sample_steps
        execution = Execution(self.device.split(":")[0], **{**MODES[mode], "activation_checkpointing": checkpointing})
        row = {
            "table": label,
            "mode": execution.describe(),
            "losses": "all three" if all_losses else "L_traj",
            "batch": batch,
            "window": window,
            "latent_steps": k if all_losses else None,
        }
        if self.over_budget():
            self.results.append({**row, "skipped": "time budget"})
            return self.results[-1]
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        memory = PeakMemory(self.device)
        memory.start()
        t_setup = time.perf_counter()
        objective, params = self._objective(execution, all_losses, window, k)
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        seconds = []
        for i in range(args.warmup + args.repeats):
            self._sync()
            t0 = time.perf_counter()
            losses = _training_batch(objective, params, optimizer, self._batch(batch, i))
            self._sync()
            if i >= args.warmup:
                seconds.append(time.perf_counter() - t0)
            else:
                warm_seconds = time.perf_counter() - t_setup
        sec = statistics.median(seconds)
        row.update(
            sec_per_batch=sec,
            sec_all=seconds,
            first_batches_sec=warm_seconds,
            peak_mib=memory.peak_growth() / MIB,
            rollouts_per_sec=batch / sec,
            loss=losses.total,
        )
        self.results.append(row)
        if args.results:
            with open(args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(
            f"  {label}: {row['mode']}, {row['losses']}, batch {batch}, window {window}: {sec:.3f} s/batch, "
            f"peak {row['peak_mib']:.0f} MiB (warm-up {warm_seconds:.0f} s)",
            flush=True,
        )
        return row


def guide_tables(args: argparse.Namespace) -> None:
    """The guide preset's tables: modes x losses, batch sweep, memory."""
    bench = GuideBench(args)
    cuda = bench.device.startswith("cuda")
    modes = (
        [m for m in args.execution.split(",")]
        if args.execution
        else (list(MODES) if cuda else ["fp32 eager", "bf16 eager"])
    )
    default = DEFAULT_CUDA_MODE if cuda else "fp32 eager"
    tables = set(args.rows.split(","))
    flops = {all_losses: bench.flops(all_losses, args.batch_size) for all_losses in (False, True)}
    print(
        f"# guide preset on {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}; "
        f"grid {args.grid}, T {args.timesteps}, window {args.bptt_window}, batch {args.batch_size}, base {args.base_channels}, "
        f"levels {args.encoder_levels}, modes {args.modes}, AFNO blocks {args.afno_blocks}, K {args.latent_sample_steps}; "
        f"median of {args.repeats} batches after {args.warmup} warm-up",
        flush=True,
    )
    print(
        f"# FLOP per batch (torch's count, FFTs not counted): L_traj {flops[False] / 1e12:.2f} T, all three {flops[True] / 1e12:.2f} T; "
        f"CNO target replay {bench.replay_seconds:.2f} s per batch of {args.batch_size} (first call)",
        flush=True,
    )
    # Eager rows first: compiling costs minutes, so a time budget cuts the compiled rows, not these.
    order = sorted(modes, key=lambda m: (m != default, "compiled" in m, "graphs" in m))
    if "modes" in tables:
        for mode in order:
            for all_losses in (False, True):
                bench.measure("modes", mode, all_losses)
    if "memory" in tables:
        w = args.bptt_window
        bench.measure("memory", default, True, window=max(1, w // 2))
        bench.measure("memory", default, True, window=max(1, w // 4))
        bench.measure("memory", default, True, batch=max(1, args.batch_size // 2))
        bench.measure("memory", default, True, k=8)  # the guide's training command
        for window in (w, 2 * w, 4 * w):
            if window <= args.timesteps:
                bench.measure("memory", default, True, window=window, checkpointing=True)
    if "sweep" in tables:
        for batch in (4, 8, 16):
            bench.measure("sweep", default, True, batch=batch)
    _print_guide_tables(bench.results, flops, args)


def _print_guide_tables(results: list[dict], flops: dict[bool, float], args: argparse.Namespace) -> None:
    """Markdown tables of the rows measured (a table with no rows is left out)."""
    modes = [r for r in results if r["table"] == "modes"]
    if modes:
        print("\n| mode | losses | s/batch | TFLOP/s | peak MiB | first batches s |\n|---|---|---|---|---|---|")
        for r in modes:
            if "skipped" in r:
                print(f"| {r['mode']} | {r['losses']} | not measured ({r['skipped']}) | | | |")
                continue
            tflops = flops[r["losses"] == "all three"] / r["sec_per_batch"] / 1e12
            print(
                f"| {r['mode']} | {r['losses']} | {r['sec_per_batch']:.3f} | {tflops:.1f} | {r['peak_mib']:.0f} | {r['first_batches_sec']:.0f} |"
            )
    memory = [r for r in results if r["table"] == "memory"]
    if memory:
        reference = _first_all_three(results)
        print("\n| mode (all three losses) | window | batch | K | s/batch | peak MiB |\n|---|---|---|---|---|---|")
        for r in ([reference] if reference else []) + memory:
            cells = f"{r['sec_per_batch']:.3f} | {r['peak_mib']:.0f} |" if "skipped" not in r else "not measured | |"
            print(f"| {r['mode']} | {r['window']} | {r['batch']} | {r['latent_steps']} | {cells}")
    sweep = [r for r in results if r["table"] == "sweep"]
    if sweep:
        print("\n| mode | batch | s/batch | sample-rollouts/s | peak MiB |\n|---|---|---|---|---|")
        for r in sweep:
            print(
                f"| {r['mode']} | {r['batch']} | "
                + (
                    f"{r['sec_per_batch']:.3f} | {r['rollouts_per_sec']:.1f} | {r['peak_mib']:.0f} |"
                    if "skipped" not in r
                    else "not measured | | |"
                )
            )


def _first_all_three(results: list[dict]) -> dict | None:
    return next((r for r in results if r["table"] == "modes" and r["losses"] == "all three"), None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.preset:
        WORK.mkdir(parents=True, exist_ok=True)
        guide_tables(args)
        return
    if args.json:
        print(json.dumps(measure(args)))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    tok = {"with_tokenizer": args.vqvae_path is None, "vqvae_path": args.vqvae_path}
    rows: list[tuple[str, dict]] = []
    if args.ablation:
        rows.append(("(a) L_traj", run_child(args, with_tokenizer=False, vqvae_path=None, enable_latent_loss=False)))
        rows.append(("(b) + L_commit", run_child(args, **tok, enable_latent_loss=False)))
        for k in (3, 8):
            rows.append(
                (
                    f"({'c' if k == 3 else 'd'}) + L_latent K={k}",
                    run_child(args, **tok, enable_latent_loss=True, latent_sample_steps=k),
                )
            )
    elif not args.window_scan:
        rows.append(("this configuration", run_child(args)))
    first = rows[0][1] if rows else None
    header = (
        f"grid {args.grid}, T {args.timesteps}, window {args.bptt_window}, batch {args.batch_size}, "
        f"widths base={args.base_channels} levels={args.encoder_levels} modes={args.modes} afno={args.afno_blocks}"
    )
    print(
        f"# {header}; median of {args.repeats} batches after {args.warmup} warm-up; {time.strftime('%Y-%m-%d %H:%M')}; load avg {os.getloadavg()[0]:.1f}"
    )
    if first is not None:
        print(
            f"# device {first['device']} ({first['threads']} threads), {first['model_params']:,} model parameters, "
            f"target replay {first['replay_sec_per_batch']:.2f} s/batch (not included), memory: {first['memory_method']}"
        )
        print(
            "| configuration | wall s/batch | CPU s/batch | CPU vs (a) | CPU vs (b) | peak MiB | memory vs (a) | memory vs (b) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for i, (label, r) in enumerate(rows):
            print(_row(label, r, first if i else None, rows[1][1] if i > 1 else None))
    if args.window_scan:
        checkpointed = " with activation checkpointing" if args.activation_checkpointing else ""
        print(f"\n# L_traj only{checkpointed}, T {args.timesteps}, {args.precision}: memory against --bptt-window")
        print("| --bptt-window | wall s/batch | CPU s/batch | peak MiB |\n|---|---|---|---|")
        for w in args.window_scan:
            r = run_child(args, bptt_window=w, with_tokenizer=False, vqvae_path=None, enable_latent_loss=False)
            print(
                f"| {w} | {r['sec_per_batch']:.2f} | {r['cpu_sec_per_batch']:.2f} | {r['peak_mib']:.0f} |", flush=True
            )


if __name__ == "__main__":
    main()
