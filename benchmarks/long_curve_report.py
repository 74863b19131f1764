"""The report of ``long_curve.py`` runs: held-out skill against updates, and what reaching 0.5
or 0.8 would cost if the curve keeps its trend.

Two measures (:mod:`noa.diagnostics.skill`): the **skill on O** table (each run's last point with
it: median over operators and pooled, each with its bootstrap 90% interval, the median per gain
third, on ``--skill-per-rule`` held-out operators of each rule) and the ladder's **drift skill**
(skill on the update Δ, pooled over 48 held-out operators), on which the fit, the equal-budget
table and the plot still run: every curve point has it, including the runs made before the skill on O.

Per run and update rule, 1 − skill = a·u^(−b) is fitted by least squares in log space over the
curve points with u ≥ ``--min-updates`` (300: the first hundreds of updates are the fast start,
not the trend). The updates needed for a skill s are u = (a / (1 − s))^(1/b); its 1σ range comes
from the fit's parameter covariance (residual variance × (XᵀX)⁻¹, propagated to log u to first
order) and is open-ended ("∞") once b's 1σ interval reaches 0: the points cannot tell the trend
from a plateau. A power law is a model, not a law: a curve that bends to a plateau makes it
optimistic.

Hours on this CPU use the run's own measured seconds per update (training wall time, evaluation
excluded, at the run's thread count). Hours on an H100 use ``--h100-s-per-update`` when given
(e.g. gpu_quality.sh's measured figure for the same candidate and data); otherwise a FLOP
estimate, stated as such in the table's note: torch's FLOP count of one update (and of making
its batch: the fresh mode's CNO replay) at an assumed achieved rate, with a floor per update for
a step this small being launch-bound. benchmarks/README.md records no measured H100 seconds per
update of this step (the guide-preset run there finished no timed row).

    python benchmarks/long_curve.py report benchmarks/.work/curve_* --out benchmarks/.work/curves.png
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noa.diagnostics.skill import format_interval

ASSUMED_H100_FLOPS = 20e12  # achieved fp32/TF32 rate assumed for small convolutions (peak fp32 67 TFLOP/s)
H100_FLOOR_S = 0.004  # ~500 kernel launches of forward, backward and AdamW at ~8 µs each
TARGETS = (0.5, 0.8)


@dataclass
class RunCurve:
    """One run folder, read back: its settings, its meta (parameters, FLOPs) and its curve."""

    path: Path
    identity: dict[str, Any]
    meta: dict[str, Any]
    curve: list[dict[str, Any]]
    label: str = ""

    def base_label(self) -> str:
        """model + data (+ the family when it is not the full one)."""
        family = self.identity["family"]
        return f"{self.identity['model']} {self.identity['data']}" + ("" if family == "full" else f" ({family})")

    @property
    def rules(self) -> list[str]:
        return sorted({rule for entry in self.curve for rule in entry["held_out"]}, reverse=True)

    def series(self, rule: str, split: str = "held_out", x: str = "updates") -> tuple[np.ndarray, np.ndarray]:
        """(x, skill) of the curve points that have ``rule``; x is "updates" or "seconds" (training
        wall seconds, evaluation excluded)."""
        points = [(e[x], e[split][rule]) for e in self.curve if rule in e[split]]
        return np.array([u for u, _ in points], dtype=float), np.array([s for _, s in points], dtype=float)

    def last_on_o(self) -> dict[str, Any] | None:
        """The last curve point that has the skill-on-O table (None for runs made before it)."""
        with_table = [e for e in self.curve if "skill_on_o" in e]
        return with_table[-1] if with_table else None

    def cpu_seconds_per_update(self) -> float:
        last = self.curve[-1]
        return last["seconds"] / last["updates"]


def read_run(path: Path) -> RunCurve:
    run = json.loads((path / "run.json").read_text())
    lines = (path / "curve.jsonl").read_text().splitlines()
    return RunCurve(path, run["identity"], run["meta"], [json.loads(line) for line in lines if line.strip()])


def label_runs(runs: list[RunCurve]) -> None:
    """Each run's label: model + data, with its folder's name where two runs would share one."""
    bases = [run.base_label() for run in runs]
    for run, base in zip(runs, bases):
        run.label = base if bases.count(base) == 1 else f"{base} [{run.path.name}]"


@dataclass
class PowerFit:
    """log(1 − skill) = c0 + c1·log u, i.e. a = e^c0, b = −c1, with the parameters' covariance."""

    c: np.ndarray
    cov: np.ndarray
    points: int

    @property
    def b(self) -> float:
        return float(-self.c[1])

    @property
    def b_sigma(self) -> float:
        return float(math.sqrt(self.cov[1, 1]))

    def updates_for(self, target: float) -> tuple[float, float, float]:
        """(estimate, 1σ low, 1σ high) of the updates where the fitted curve reaches ``target``."""
        if self.b <= 0:
            return math.inf, math.inf, math.inf
        level = math.log(1.0 - target)
        log_u = (level - self.c[0]) / self.c[1]
        grad = np.array([-1.0 / self.c[1], -(level - self.c[0]) / self.c[1] ** 2])
        sigma = float(math.sqrt(max(grad @ self.cov @ grad, 0.0)))
        high = math.inf if self.b - self.b_sigma <= 0 else math.exp(log_u + sigma)
        return math.exp(log_u), math.exp(log_u - sigma), high


def fit_power(updates: np.ndarray, skills: np.ndarray, min_updates: float) -> PowerFit | None:
    """The least-squares power law over the points from ``min_updates`` on; None with fewer than
    3 usable points (two parameters and a residual variance need three)."""
    keep = (updates >= min_updates) & (skills < 1.0)
    if keep.sum() < 3:
        return None
    x = np.stack([np.ones(int(keep.sum())), np.log(updates[keep])], axis=1)
    y = np.log(1.0 - skills[keep])
    c, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual_variance = float(((y - x @ c) ** 2).sum()) / (len(y) - 2)
    return PowerFit(c, residual_variance * np.linalg.inv(x.T @ x), len(y))


def h100_seconds_per_update(run: RunCurve, measured: float | None) -> float:
    """The measured figure when given, else the FLOP estimate (see the module)."""
    if measured is not None:
        return measured
    flops = run.meta["flops"]["update"] + run.meta["flops"]["batch"]
    return max(H100_FLOOR_S, flops / ASSUMED_H100_FLOPS)


def count(u: float) -> str:
    """Updates as a short figure: 750, 12k, 3.4M, ∞."""
    if math.isinf(u):
        return "∞"
    if u < 1e3:
        return f"{u:.0f}"
    if u < 1e6:
        return f"{u / 1e3:.3g}k"
    if u < 1e9:
        return f"{u / 1e6:.3g}M"
    return f"{u:.1e}"


def hours(u: float, seconds_per_update: float) -> str:
    return "∞" if math.isinf(u) else f"{u * seconds_per_update / 3600:.3g}"


def reached_at(updates: np.ndarray, skills: np.ndarray, target: float) -> float | None:
    hits = updates[skills >= target]
    return float(hits[0]) if hits.size else None


def target_cells(run: RunCurve, rule: str, fit: PowerFit | None, target: float, gpu_s: float) -> tuple[str, str, str]:
    """(updates, CPU hours, H100 hours) to ``target``: measured when the curve got there, else fitted."""
    updates, skills = run.series(rule)
    cpu_s = run.cpu_seconds_per_update()
    hit = reached_at(updates, skills, target)
    if hit is not None:
        return f"reached at {count(hit)}", hours(hit, cpu_s), hours(hit, gpu_s)
    if fit is None:
        return "too few points", "–", "–"
    estimate, low, high = fit.updates_for(target)
    return f"{count(estimate)} ({count(low)} – {count(high)})", hours(estimate, cpu_s), hours(estimate, gpu_s)


def table(runs: list[RunCurve], min_updates: float, measured_gpu: float | None) -> str:
    """The extrapolation table, as markdown for benchmarks/README.md, with its note."""
    head = (
        "| run | rule | updates | held-out drift skill | median operator, held out (training) | fit points | b ± 1σ |"
        + "".join(f" updates to {t} (1σ) | hours CPU / H100 |" for t in TARGETS)
        + "\n|---|---|---:|---:|---:|---:|---:|"
        + "---:|---:|" * len(TARGETS)
    )
    rows = []
    for run in runs:
        gpu_s = h100_seconds_per_update(run, measured_gpu)
        for rule in run.rules:
            updates, skills = run.series(rule)
            fit = fit_power(updates, skills, min_updates)
            b = "–" if fit is None else f"{fit.b:.3f} ± {fit.b_sigma:.3f}"
            cells = ""
            for target in TARGETS:
                reach, cpu_h, gpu_h = target_cells(run, rule, fit, target, gpu_s)
                cells += f" {reach} | {cpu_h} / {gpu_h} |"
            points = 0 if fit is None else fit.points
            rows.append(
                f"| {run.label} | {rule} | {int(updates[-1])} | {skills[-1]:.3f} | {median_cell(run, rule)} | {points} | {b} |"
                + cells
            )
    return "\n".join([head, *rows, "", note(runs, measured_gpu)])


def skill_on_o_table(runs: list[RunCurve]) -> str:
    """Each run's last skill-on-O point: per rule, median over operators [90%], pooled [90%],
    the training operators' median, and the held-out median per gain third."""
    head = (
        "| run | rule | updates | held-out operators | skill on O: median [90%] | pooled [90%] | training median |"
        " gain low / mid / high (median) |\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for run in runs:
        entry = run.last_on_o()
        if entry is None:
            rows.append(f"| {run.label} | – | – | – | no skill-on-O point (a run made before it) | – | – | – |")
            continue
        held, training = entry["skill_on_o"]["held_out"], entry["skill_on_o"]["training"]
        for rule in sorted(held, reverse=True):
            all_ = held[rule]["all"]
            gains = " / ".join(
                f"{held[rule]['gain'][g]['median']:.3f}" if g in held[rule]["gain"] else "–"
                for g in ("gain low", "gain mid", "gain high")
            )
            train = training.get(rule, {}).get("median")
            rows.append(
                f"| {run.label} | {rule} | {entry['updates']} | {all_['operators']} | {format_interval(all_, 'median')} | "
                f"{format_interval(all_, 'pooled')} | {'–' if train is None else f'{train:.3f}'} | {gains} |"
            )
    return "\n".join([head, *rows])


def skill_at(run: RunCurve, rule: str, x: str, at: float) -> float | None:
    """Held-out skill at ``at`` updates or seconds, linear in log x between curve points; None
    outside the run's span."""
    xs, skills = run.series(rule, x=x)
    if len(xs) == 0 or not xs[0] <= at <= xs[-1]:
        return None
    return float(np.interp(math.log(at), np.log(xs), skills))


def equal_budget_table(runs: list[RunCurve], updates: float | None = None, hours: float | None = None) -> str:
    """Held-out skill of every run at equal updates and at equal training wall time: by default
    the updates and seconds that every run reached."""
    rules = sorted({rule for run in runs for rule in run.rules}, reverse=True)
    updates = updates or min(run.curve[-1]["updates"] for run in runs)
    seconds = 3600 * hours if hours else min(run.curve[-1]["seconds"] for run in runs)
    head = (
        "| run | s / update |"
        + "".join(f" {rule} at {count(updates)} updates |" for rule in rules)
        + "".join(f" {rule} at {seconds / 3600:.2f} h (updates there) |" for rule in rules)
        + "\n|---|---:|"
        + "---:|" * (2 * len(rules))
    )
    rows = []
    for run in runs:
        cells = ""
        for rule in rules:
            skill = skill_at(run, rule, "updates", updates)
            cells += f" {'–' if skill is None else f'{skill:.3f}'} |"
        # where the run stood at that wall time, in updates (seconds grow with updates)
        us, ss = [e["updates"] for e in run.curve], [e["seconds"] for e in run.curve]
        reached = count(float(np.interp(seconds, ss, us))) if ss[0] <= seconds <= ss[-1] else "–"
        for rule in rules:
            skill = skill_at(run, rule, "seconds", seconds)
            cells += f" {'–' if skill is None else f'{skill:.3f}'} ({reached}) |"
        rows.append(f"| {run.label} | {run.cpu_seconds_per_update():.3f} |" + cells)
    return "\n".join([head, *rows])


def median_cell(run: RunCurve, rule: str) -> str:
    """The last point's median over operators, held out (training); "–" for points written before
    long_curve.py recorded it."""
    medians = run.curve[-1].get("median_over_operators")
    if not medians or rule not in medians["held_out"]:
        return "–"
    return f"{medians['held_out'][rule]:.3f} ({medians['training'].get(rule, float('nan')):.3f})"


def note(runs: list[RunCurve], measured_gpu: float | None) -> str:
    cpu = "; ".join(
        f"{run.label} {run.cpu_seconds_per_update():.3f} s/update ({run.meta['device_name']})" for run in runs
    )
    if measured_gpu is not None:
        gpu = f"H100 hours at a measured {measured_gpu:g} s per update (--h100-s-per-update)."
    else:
        gpu = (
            "H100 hours are a FLOP estimate, not a measurement: torch's FLOP count of one update and of making its "
            f"batch (convolutions and matrix products; FFTs not counted) at an assumed {ASSUMED_H100_FLOPS / 1e12:g} "
            f"TFLOP/s, and at least {H100_FLOOR_S * 1e3:g} ms per update; a fresh batch's host-side work "
            "(initial conditions, operator weights) is not in it."
        )
    return f"Fit: 1 − skill = a·u^(−b) by least squares in log space. CPU hours at each run's measured training seconds per update: {cpu}. {gpu}"


def plot(runs: list[RunCurve], out: Path, min_updates: float) -> None:
    """Top row: held-out skill (solid) and training skill (dashed) against updates on a log axis,
    one panel per rule, the fitted power law dotted beyond the last point. Bottom row: held-out
    skill against training wall hours (each run's own device and threads), for equal wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = sorted({rule for run in runs for rule in run.rules}, reverse=True)
    fig, axes = plt.subplots(2, len(rules), figsize=(6 * len(rules), 9), squeeze=False)
    for ax, rule in zip(axes[1], rules):
        for i, run in enumerate(runs):
            if rule in run.rules:
                seconds, skills = run.series(rule, x="seconds")
                ax.plot(seconds / 3600, skills, "o-", color=f"C{i}", label=run.label)
        ax.set_xscale("log")
        ax.set_xlabel("training wall hours (evaluation excluded)")
        ax.set_ylabel("held-out drift skill (skill on Δ)")
        ax.set_title(f"{rule} operators, at equal wall time")
        ax.grid(True, which="both", alpha=0.3)
    for ax, rule in zip(axes[0], rules):
        for i, run in enumerate(runs):
            if rule not in run.rules:
                continue
            colour = f"C{i}"
            updates, skills = run.series(rule)
            ax.plot(updates, skills, "o-", color=colour, label=run.label)
            ax.plot(*run.series(rule, "training"), "--", color=colour, alpha=0.5)
            fit = fit_power(updates, skills, min_updates)
            if fit is not None:
                u = np.geomspace(min_updates, 10 * updates[-1], 50)
                ax.plot(u, 1 - np.exp(fit.c[0] + fit.c[1] * np.log(u)), ":", color=colour)
        ax.set_xscale("log")
        ax.set_xlabel("updates")
        ax.set_ylabel("drift skill on Δ (solid: held-out θ, dashed: training θ)")
        ax.set_title(f"{rule} operators")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def report_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="long_curve.py report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (--out of long_curve.py)")
    p.add_argument("--out", type=Path, default=None, help="the plot (PNG); without it, the table only")
    p.add_argument("--min-updates", type=float, default=300, help="fit the points from this many updates on")
    p.add_argument(
        "--h100-s-per-update", type=float, default=None, help="a measured H100 figure instead of the estimate"
    )
    p.add_argument("--at-updates", type=float, default=None, help="compare at this many updates (default: all reached)")
    p.add_argument(
        "--at-hours", type=float, default=None, help="compare at this many wall hours (default: all reached)"
    )
    args = p.parse_args(argv)
    missing = [str(path) for path in args.runs if not (path / "run.json").exists()]
    if missing:
        p.error(f"not long_curve run folders (no run.json): {', '.join(missing)}")
    runs = [run for run in map(read_run, args.runs) if run.curve]
    if not runs:
        p.error("no run has a curve point yet")
    label_runs(runs)
    print(skill_on_o_table(runs))
    print()
    print(table(runs, args.min_updates, args.h100_s_per_update))
    print()
    print(equal_budget_table(runs, args.at_updates, args.at_hours))
    if args.out:
        plot(runs, args.out, args.min_updates)
        print(f"plot: {args.out}")
