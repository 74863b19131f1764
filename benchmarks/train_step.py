"""Seconds per training batch and peak memory of `noa train`'s step, per loss term.

    python benchmarks/train_step.py --ablation --window-scan 4 8 16        # the README table
    python benchmarks/train_step.py --with-tokenizer --enable-latent-loss  # one configuration

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
from noa.train.rollout import sample_steps
from noa.train.step import Objective, train_batch

WORK = Path(__file__).resolve().parent / ".work"
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--vqvae-path", default=None, help="tokenizer for L_commit/L_latent (must match --grid and --timesteps)")
    p.add_argument("--with-tokenizer", action="store_true", help="train a throwaway tokenizer on the benchmark data (timing only)")
    p.add_argument("--enable-latent-loss", action="store_true")
    p.add_argument("--latent-sample-steps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    p.add_argument("--repeats", type=int, default=3, help="timed batches (the median is reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--ablation", action="store_true", help="measure (a) traj, (b) +commit, (c) +latent K=3, (d) +latent K=8")
    p.add_argument("--window-scan", type=int, nargs="*", default=[], metavar="W", help="L_traj memory/time at these windows")
    p.add_argument("--json", action="store_true", help="print one JSON result (used for the per-configuration subprocesses)")
    args = p.parse_args(argv)
    if args.enable_latent_loss and not (args.with_tokenizer or args.vqvae_path or args.ablation):
        p.error("--enable-latent-loss needs --vqvae-path or --with-tokenizer")
    return args


# ------------------------------------------------------------------ inputs


def ensure_dataset(grid: int, timesteps: int, n_samples: int, seed: int) -> Path:
    """A small toolkit-made dataset in benchmarks/.work, generated once and reused."""
    path = WORK / f"step_g{grid}_t{timesteps}_n{n_samples}_s{seed}.h5"
    if not path.exists():
        generate(GenerateConfig(n_samples=n_samples, grid=grid, timesteps=timesteps, seed=seed), path, progress=False, log=lambda _: None)
    return path


def ensure_tokenizer(dataset: Path) -> Path:
    """A throwaway tokenizer (2 epochs): encode/quantize cost does not depend on its quality."""
    out = WORK / f"tok_{dataset.stem}"
    if not (out / "weights.pt").exists():
        train_tokenizer_on_dataset(dataset, out, epochs=2, codebook_size=8, val_split=0.25, overwrite=True, log=lambda _: None, progress=False)
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


# ------------------------------------------------------------------ one configuration


def measure(args: argparse.Namespace) -> dict:
    """Time and memory of ``args.repeats`` training batches of one configuration."""
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model_cfg = UAFNOConfig(
        channels=GenerateConfig.channels, param_dim=CNO_SPACE.size, base_channels=args.base_channels,
        encoder_levels=args.encoder_levels, modes=args.modes, afno_blocks=args.afno_blocks,
    )
    check_grid(model_cfg, args.grid)  # before generating data for a grid the model cannot take
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

    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(derive_seed(args.seed, "bench-init"))
        model = UAFNO(model_cfg).to(device)
        projector = None
        if args.enable_latent_loss:
            projector = LatentProjector(model.bottleneck_channels, tokenizer.latent_dim, args.projector_hidden).to(device)
    params = list(model.parameters()) + (list(projector.parameters()) if projector is not None else [])
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    objective = Objective(
        model=model, projector=projector, tokenizer=tokenizer, lambda_commit=args.lambda_commit, lambda_latent=args.lambda_latent,
        bptt_window=args.bptt_window,
        latent_steps=sample_steps(args.timesteps, args.latent_sample_steps) if args.enable_latent_loss else [],
    )

    memory = PeakMemory(device)
    memory.start()
    seconds, cpu_seconds = [], []
    for i in range(args.warmup + args.repeats):
        ic, theta, target = batches[i % len(batches)]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        train_batch(objective, ic, theta, target)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
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
        "model_params": sum(p.numel() for p in model.parameters()),
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
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
            rows.append((f"({'c' if k == 3 else 'd'}) + L_latent K={k}", run_child(args, **tok, enable_latent_loss=True, latent_sample_steps=k)))
    elif not args.window_scan:
        rows.append(("this configuration", run_child(args)))
    first = rows[0][1] if rows else None
    header = (
        f"grid {args.grid}, T {args.timesteps}, window {args.bptt_window}, batch {args.batch_size}, "
        f"widths base={args.base_channels} levels={args.encoder_levels} modes={args.modes} afno={args.afno_blocks}"
    )
    print(f"# {header}; median of {args.repeats} batches after {args.warmup} warm-up; {time.strftime('%Y-%m-%d %H:%M')}; load avg {os.getloadavg()[0]:.1f}")
    if first is not None:
        print(f"# device {first['device']} ({first['threads']} threads), {first['model_params']:,} model parameters, "
              f"target replay {first['replay_sec_per_batch']:.2f} s/batch (not included), memory: {first['memory_method']}")
        print("| configuration | wall s/batch | CPU s/batch | CPU vs (a) | CPU vs (b) | peak MiB | memory vs (a) | memory vs (b) |")
        print("|---|---|---|---|---|---|---|---|")
        for i, (label, r) in enumerate(rows):
            print(_row(label, r, first if i else None, rows[1][1] if i > 1 else None))
    if args.window_scan:
        print(f"\n# L_traj only, T {args.timesteps}: memory against --bptt-window")
        print("| --bptt-window | wall s/batch | CPU s/batch | peak MiB |\n|---|---|---|---|")
        for w in args.window_scan:
            r = run_child(args, bptt_window=w, with_tokenizer=False, vqvae_path=None, enable_latent_loss=False)
            print(f"| {w} | {r['sec_per_batch']:.2f} | {r['cpu_sec_per_batch']:.2f} | {r['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
