"""`noa compare`: several runs scored on one dataset, side by side.

Every run is evaluated on the same rows: those held out from every one of them (each run's
training rows are left out, whichever file they came from; see
:func:`noa.diagnostics.evaluate.checkpoint_pool`), so a difference in the table is a
difference of the models, not of the samples. The figures are diagnose's, per update rule and
horizon step: MSE / noise floor, persistence / noise floor, VRMSE (median over samples), the
one-step skill (:mod:`noa.diagnostics.skill`: against the CNO's noise-free step, so 1 is exact
and 0 no better than holding the state; pooled, with the median over operators) and the
non-INITIAL token agreement where a run's tokenizer fits the horizon.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np

from noa import outputs
from noa.data import h5
from noa.diagnostics.evaluate import checkpoint_pool, choose_rows, evaluate, json_safe, update_rules
from noa.diagnostics.rollout_quality import RolloutQuality, StepErrors, report_horizons, summarize
from noa.diagnostics.skill import ALL as ALL_SKILL
from noa.diagnostics.skill import ONE_STEP_DEFINITION
from noa.errors import NoaError

ALL = "all operators"
FILES = ("compare.md", "summary.json", "error_vs_horizon.png")
MARKERS = {"compare.md": b"# noa compare", "summary.json": b'"noa_compare"'}


@dataclass
class RunFigures:
    """One run's figures on one group of operators (all, or one update rule)."""

    steps: list[int]  # 1..T
    mse: list[float]
    floor: list[float]
    persistence: list[float]
    floor_ratio: list[float | None]  # MSE / noise floor per step
    persistence_ratio: list[float | None]  # persistence / noise floor per step
    vrmse_median: list[float]
    overall_ratio: float | None  # horizon-averaged MSE / noise floor
    one_step_skill: float | None  # noa.diagnostics.skill's one-step skill, pooled over the group's operators
    one_step_skill_median: float | None  # the same, median over operators
    token_agreement: float | None  # non-INITIAL codebooks, NOA vs CNO realization 0
    token_reference: float | None  # the same for two CNO realizations

    @staticmethod
    def of(q: RolloutQuality, one_step: dict[str, Any]) -> RunFigures:
        """``one_step``: the group's entry of the diagnosis's one-step skill."""
        return RunFigures(
            steps=q.steps,
            mse=q.mse,
            floor=q.floor,
            persistence=q.persistence,
            floor_ratio=q.floor_ratio,
            persistence_ratio=q.persistence_ratio,
            vrmse_median=q.vrmse_median,
            overall_ratio=q.overall_ratio,
            one_step_skill=one_step["pooled"],
            one_step_skill_median=one_step["median"],
            token_agreement=q.token_agreement_non_initial,
            token_reference=q.token_agreement_reference_non_initial,
        )


@dataclass
class Comparison:
    """Every run's figures on the same rows: ``groups[group][label]``."""

    dataset: str
    timesteps: int
    rows: list[int]
    notes: list[str]
    runs: dict[str, dict[str, Any]]  # label -> checkpoint, tokenizer, rows it was scored on, its notes
    groups: dict[str, dict[str, RunFigures]]
    operators: dict[str, int]  # group -> operators in it

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "noa_compare": 1,
                "dataset": self.dataset,
                "timesteps": self.timesteps,
                "rows": self.rows,
                "notes": self.notes,
                "runs": self.runs,
                "horizons": report_horizons(self.timesteps),
                "groups": {
                    group: {"operators": self.operators[group], "runs": {k: vars(v) for k, v in by_run.items()}}
                    for group, by_run in self.groups.items()
                },
            }
        )


def labels_of(checkpoints: Sequence[Path]) -> list[str]:
    """Short, distinct names: the fewest trailing path parts that tell the checkpoints apart."""
    for depth in range(1, max(len(p.parts) for p in checkpoints) + 1):
        names = ["/".join(p.parts[-depth:]) for p in checkpoints]
        if len(set(names)) == len(names):
            return names
    raise NoaError("the same checkpoint is given twice; name each run once")


def compare(
    checkpoints: Sequence[str | Path],
    dataset: str | Path,
    *,
    n_samples: int = 100,
    timesteps: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    batch_size: int = 8,
    no_tokens: bool = False,
    vqvae_class: str | type | None = None,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Evaluate every checkpoint on the same held-out rows of ``dataset`` at ``timesteps``
    (default: the dataset's T) and gather their figures per update rule and horizon.
    ``vqvae_class`` loads runs' tokenizers of another class than noa's own (every run's the same)."""
    paths = [Path(c) for c in checkpoints]
    if len(paths) < 2:
        raise NoaError("noa compare needs at least two checkpoints (noa diagnose reports on one)")
    labels = labels_of([p.resolve() for p in paths])
    dataset = Path(dataset)
    with h5.open_dataset(dataset) as f:
        info = h5.read_info(f)
    pools = [checkpoint_pool(p, dataset) for p in paths]
    common = reduce(np.intersect1d, [pool for pool, _ in pools])
    if not len(common):
        raise NoaError(
            f"no row of {dataset} is held out from every run (each run's training rows are left out); "
            "compare on data none of them was trained on (e.g. `noa data generate` with another --seed)"
        )
    rows, chosen = choose_rows(common, n_samples, seed)
    notes = [
        f"{len(common)} rows of {dataset} are held out from every run ("
        + "; ".join(f"{label}: {origin}" for label, (_, origin) in zip(labels, pools))
        + ")",
        *chosen,
    ]
    horizon = info.timesteps if timesteps is None else timesteps
    rules = update_rules(dataset, info.space, [int(r) for r in rows])
    groups: dict[str, dict[str, RunFigures]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for label, path in zip(labels, paths):
        log(f"Evaluating {label} on {len(rows)} rows at T={horizon}")
        ev = evaluate(
            path,
            None,
            dataset,
            timesteps=horizon,
            device=device,
            seed=seed,
            batch_size=batch_size,
            rows=rows,
            no_tokens=no_tokens,
            vqvae_class=vqvae_class,
            t_source="--timesteps" if timesteps is not None else "the dataset's T, noa compare's default",
            log=lambda _line: None,
        )
        runs[label] = {
            "checkpoint": str(path),
            "tokenizer": ev.result.tokenizer,
            "rows": ev.result.rows,
            "notes": [n for n in ev.result.notes if not n.endswith("(not necessarily held out)")],
        }
        for group, quality in _by_group(ev.data.errors, ev.data, ev.result.rollout.token_categories, rules).items():
            one_step = ev.result.one_step_skill[ALL_SKILL if group == ALL else group]
            groups.setdefault(group, {})[label] = RunFigures.of(quality, one_step)
    operators = {ALL: len(rows), **{rule: (rules or []).count(rule) for rule in sorted(set(rules or []))}}
    return Comparison(str(dataset), horizon, [int(r) for r in rows], notes, runs, groups, operators)


def _by_group(errors: StepErrors, data: Any, categories: list[str] | None, rules: list[str] | None) -> dict:
    """RolloutQuality of every operator, and of each update rule's (when θ has one)."""
    tokens = (data.tokens_noa, data.tokens_cno, data.tokens_cno_other, data.tokens_persistence)
    picks: dict[str, np.ndarray] = {ALL: np.ones(errors.mse.shape[0], dtype=bool)}
    for rule in sorted(set(rules or [])):
        picks[rule] = np.array([r == rule for r in rules or []])
    out = {}
    for group, pick in picks.items():
        chosen = StepErrors(*(getattr(errors, name)[pick] for name in StepErrors.__dataclass_fields__))
        subset = [None if t is None else t[pick] for t in tokens]
        out[group] = summarize(chosen, *subset, categories=categories)
    return out


def format_comparison(c: Comparison) -> str:
    """The printed comparison (also compare.md): per group, one table of the horizon steps."""
    labels = list(c.runs)
    lines = [f"# noa compare: {len(labels)} runs on {len(c.rows)} rows of {c.dataset}, T={c.timesteps}", ""]
    lines += [f"- {label}: {run['checkpoint']} ({_tokens_said(run)})" for label, run in c.runs.items()]
    lines += ["", *(f"note: {n}" for n in c.notes)]
    for group, by_run in c.groups.items():
        lines += ["", f"## {group} ({c.operators[group]} operator{'s' if c.operators[group] != 1 else ''})", ""]
        lines.append(
            "| step | persistence/floor | "
            + " | ".join(f"MSE/floor {x}" for x in labels)
            + " | "
            + " | ".join(f"VRMSE {x}" for x in labels)
            + " |"
        )
        lines.append("|---" * (2 + 2 * len(labels)) + "|")
        first = by_run[labels[0]]
        for t in report_horizons(c.timesteps):
            i = t - 1
            ratios = " | ".join(_num(by_run[x].floor_ratio[i]) for x in labels)
            vrmse = " | ".join(_num(by_run[x].vrmse_median[i], ".3f") for x in labels)
            lines.append(f"| {t} | {_num(first.persistence_ratio[i])} | {ratios} | {vrmse} |")
        lines.append("")
        for x in labels:
            f = by_run[x]
            tokens = (
                f"{100 * f.token_agreement:.1f}% (two CNO realizations: {100 * (f.token_reference or 0):.1f}%)"
                if f.token_agreement is not None
                else "n/a"
            )
            lines.append(
                f"- {x}: horizon-averaged MSE/floor {_num(f.overall_ratio)}, one-step skill {_num(f.one_step_skill, '.3f')} "
                f"(median over operators {_num(f.one_step_skill_median, '.3f')}), token agreement (non-INITIAL) {tokens}"
            )
    lines += ["", f"One-step skill = {ONE_STEP_DEFINITION}; on CNO states at steps 0, T/4, T/2, 3T/4."]
    return "\n".join(lines) + "\n"


def _tokens_said(run: dict[str, Any]) -> str:
    """A run's tokenizer, or why its token figures are missing (no tokenizer, another T, --no-tokens)."""
    skipped = [n for n in run["notes"] if n.startswith("token sections skipped: ")]
    if skipped:
        return skipped[0]
    return f"tokenizer: {run['tokenizer']}" if run["tokenizer"] else "no tokenizer"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None or value != value else format(value, spec)


def check_compare_dir(out_dir: Path) -> None:
    """The files noa compare writes replace only an earlier comparison's, never a user's."""
    outputs.check_writable(out_dir, "--out", directory=True)
    foreign = [name for name in FILES if (out_dir / name).exists() and not _ours(out_dir / name)]
    if foreign:
        raise NoaError(
            f"--out {out_dir} holds {', '.join(foreign)}, which noa compare did not write and would replace; "
            "move them away or choose another --out"
        )


def _ours(path: Path) -> bool:
    """Whether ``path`` is a file an earlier noa compare wrote."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    if path.suffix == ".png":
        return data.startswith(b"\x89PNG") and b"matplotlib" in data[:4096]
    return data.startswith(MARKERS[path.name]) if path.suffix == ".md" else MARKERS[path.name] in data


def write_comparison(c: Comparison, out_dir: Path) -> Path:
    """compare.md, summary.json and error_vs_horizon.png in ``out_dir``; returns compare.md's path."""
    from noa.diagnostics import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_text_atomic(out_dir / "summary.json", json.dumps(c.to_dict(), indent=2) + "\n")
    plots.comparison(
        {label: (f.steps, f.mse, f.vrmse_median) for label, f in c.groups[ALL].items()},
        next(iter(c.groups[ALL].values())),
        out_dir / "error_vs_horizon.png",
    )
    return outputs.write_text_atomic(out_dir / "compare.md", format_comparison(c))
