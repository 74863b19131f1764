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
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np

from noa import outputs
from noa.coverage import trained_on_text
from noa.data import h5
from noa.diagnostics.evaluate import checkpoint_pool, choose_rows, evaluate, json_safe, update_rules
from noa.diagnostics.rollout_quality import RolloutQuality, StepErrors, report_horizons, summarize
from noa.diagnostics.skill import ALL as ALL_SKILL
from noa.diagnostics.skill import ONE_STEP_DEFINITION
from noa.errors import NoaError
from noa.tokenizer.directory import CONFIG_FILE, WEIGHTS_FILE
from noa.tokenizer.io import directory_fingerprint, tokenizer_fingerprint

ALL = "all operators"
OWN_CLASS = "noa"  # in a per-run --vqvae-class list: this run's tokenizer is noa's own (a class names MODULE:CLASS)
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
    runs: dict[str, dict[str, Any]]  # label -> checkpoint, tokenizer, what it was trained on, rows, its notes
    groups: dict[str, dict[str, RunFigures]]
    operators: dict[str, int]  # group -> operators in it
    family: str = ""  # the dataset's operator family
    grid: int = 0  # the dataset's grid
    warnings: list[str] = field(default_factory=list)  # θ outside a run's box, another grid, other tokenizers

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "noa_compare": 1,
                "dataset": self.dataset,
                "timesteps": self.timesteps,
                "rows": self.rows,
                "family": self.family,
                "grid": self.grid,
                "notes": self.notes,
                "warnings": self.warnings,
                "runs": self.runs,
                "horizons": report_horizons(self.timesteps),
                "groups": {
                    group: {"operators": self.operators[group], "runs": {k: vars(v) for k, v in by_run.items()}}
                    for group, by_run in self.groups.items()
                },
            }
        )


def labels_of(checkpoints: Sequence[Path]) -> list[str]:
    """Short, distinct names: the path parts that tell the checkpoints apart (the leading and
    trailing parts they all share left out: runs/a/best_model.pt and runs/b/best_model.pt are a
    and b), else the fewest trailing parts that do."""
    parts = [p.parts for p in checkpoints]
    if len(set(parts)) < len(parts):
        raise NoaError("the same checkpoint is given twice; name each run once")
    shortest = min(len(p) for p in parts)
    head = next((i for i in range(shortest) if len({p[i] for p in parts}) > 1), shortest)
    tail = next((i for i in range(shortest - head) if len({p[-1 - i] for p in parts}) > 1), shortest - head)
    middles = ["/".join(p[head : len(p) - tail]) for p in parts]
    if all(middles) and len(set(middles)) == len(middles):
        return middles
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    raise NoaError("the same checkpoint is given twice; name each run once")  # unreachable: the paths differ


def checked_names(names: Sequence[str], runs: int) -> list[str]:
    """``--names``: one short, distinct label per run, usable in a table; NoaError otherwise."""
    labels = [name.strip() for name in names]
    if len(labels) != runs:
        raise NoaError(
            f"--names gives {len(labels)} name{'s' if len(labels) != 1 else ''} for {runs} checkpoints; "
            "give one per checkpoint, in their order, separated by commas (e.g. --names "
            + ",".join(f"run{i + 1}" for i in range(runs))
            + ")"
        )
    bad = [name for name in labels if not name or "|" in name or "\n" in name]
    if bad:
        raise NoaError(f"--names: {', '.join(map(repr, bad))} cannot label a run (empty, or holds | or a line break)")
    twice = sorted({name for name in labels if labels.count(name) > 1})
    if twice:
        raise NoaError(f"--names gives {', '.join(twice)} to more than one run; give each run its own name")
    return labels


def split_flag(value: str | None) -> list[str] | None:
    """A comma-separated flag (--names, --vqvae-class) as its entries; None when not given."""
    return None if value is None else [entry.strip() for entry in value.split(",")]


def classes_per_run(vqvae_class: str | type | None | Sequence[str | type | None], runs: int) -> list:
    """One tokenizer class per run (None: noa's own): ``vqvae_class`` itself for every run, or a
    sequence of one per run, or of one for all, where OWN_CLASS stands for noa's own; NoaError on
    a count mismatch or an empty entry."""
    if vqvae_class is None or isinstance(vqvae_class, (str, type)):
        return [vqvae_class] * runs
    given = [None if entry == OWN_CLASS else entry for entry in vqvae_class]
    if any(entry == "" for entry in given):
        raise NoaError(
            f"--vqvae-class has an empty entry; name a class as MODULE_OR_FILE:CLASS, or {OWN_CLASS} for a run "
            "whose tokenizer is noa's own"
        )
    if len(given) == 1:
        return given * runs
    if len(given) != runs:
        raise NoaError(
            f"--vqvae-class gives {len(given)} classes for {runs} checkpoints; give one for every run, or one per "
            f"run in the checkpoints' order separated by commas, with {OWN_CLASS} for a run whose tokenizer is noa's own"
        )
    return given


def compare(
    checkpoints: Sequence[str | Path],
    dataset: str | Path,
    *,
    names: Sequence[str] | None = None,
    n_samples: int = 100,
    timesteps: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    batch_size: int = 8,
    no_tokens: bool = False,
    vqvae_class: str | type | None | Sequence[str | type | None] = None,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Evaluate every checkpoint on the same held-out rows of ``dataset`` at ``timesteps``
    (default: the dataset's T) and gather their figures per update rule and horizon.
    ``names`` labels the runs (default: the parts of their paths that tell them apart).
    ``vqvae_class`` loads runs' tokenizers of another class than noa's own: one for every run,
    or a sequence of one per run (None for noa's own)."""
    paths = [Path(c) for c in checkpoints]
    if len(paths) < 2:
        raise NoaError("noa compare needs at least two checkpoints (noa diagnose reports on one)")
    labels = labels_of([p.resolve() for p in paths]) if names is None else checked_names(names, len(paths))
    classes = classes_per_run(vqvae_class, len(paths))
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
    warnings: list[str] = []
    for label, path, tokenizer_class in zip(labels, paths, classes):
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
            vqvae_class=tokenizer_class,
            t_source="--timesteps" if timesteps is not None else "the dataset's T, noa compare's default",
            log=lambda _line: None,
        )
        runs[label] = {
            "checkpoint": str(path),
            "tokenizer": ev.result.tokenizer,
            "tokenizer_class": ev.result.tokenizer_class,
            "trained_on": ev.result.trained_on,
            "rows": ev.result.rows,
            "notes": [n for n in ev.result.notes if not n.endswith("(not necessarily held out)")],
        }
        warnings += [f"{label}: {line}" for line in [*ev.result.warnings, *ev.result.coverage]]
        for group, quality in _by_group(ev.data.errors, ev.data, ev.result.rollout.token_categories, rules).items():
            one_step = ev.result.one_step_skill[ALL_SKILL if group == ALL else group]
            groups.setdefault(group, {})[label] = RunFigures.of(quality, one_step)
    warnings += _tokenizers_warning(runs, groups[ALL])  # said with the tables (format_comparison), as diagnose does
    operators = {ALL: len(rows), **{rule: (rules or []).count(rule) for rule in sorted(set(rules or []))}}
    family = info.operator_family.name
    return Comparison(
        str(dataset), horizon, [int(r) for r in rows], notes, runs, groups, operators, family, info.grid, warnings
    )


def _tokenizer_identity(run: dict[str, Any]) -> str:
    """What tells two runs' tokenizers apart: the content of the directory (a copy is the same one)."""
    path = Path(run["tokenizer"])
    if run.get("tokenizer_class") is None and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return tokenizer_fingerprint(path)
    return directory_fingerprint(path)


def differing_tokenizers(runs: dict[str, dict[str, Any]], figures: dict[str, RunFigures]) -> bool:
    """Whether the runs whose tokens were scored used more than one tokenizer."""
    scored = [label for label, f in figures.items() if f.token_agreement is not None and runs[label]["tokenizer"]]
    return len({_tokenizer_identity(runs[label]) for label in scored}) > 1


def _tokenizers_warning(runs: dict[str, dict[str, Any]], figures: dict[str, RunFigures]) -> list[str]:
    """The warning when runs' tokens were scored with different tokenizers: each agreement is
    measured in its own tokenizer's codes, so only a run's figure against its own reference means anything."""
    if not differing_tokenizers(runs, figures):
        return []
    said = ", ".join(
        f"{label}: {100 * (f.token_reference or 0):.1f}% between two CNO realizations with {Path(runs[label]['tokenizer']).name}"
        for label, f in figures.items()
        if f.token_agreement is not None
    )
    return [
        "the runs' tokens are scored each with its own tokenizer, so their token agreements are not comparable "
        f"({said}); read each run's agreement against its own reference only (the tokenizer column says which)"
    ]


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
    """The printed comparison (also compare.md): per group, one table of the horizon steps and
    one of each run's summary figures (with each run's tokenizer when they differ)."""
    labels = list(c.runs)
    dataset = f"{c.dataset} (family {c.family}, {c.grid}×{c.grid})" if c.family else c.dataset
    lines = [f"# noa compare: {len(labels)} runs on {len(c.rows)} rows of {dataset}, T={c.timesteps}", ""]
    lines += [
        f"- {label}: {run['checkpoint']} (trained on {_trained_said(run)}; {_tokens_said(run)})"
        for label, run in c.runs.items()
    ]
    lines += ["", *(f"WARNING: {w}" for w in c.warnings), *(f"note: {n}" for n in c.notes)]
    by_tokenizer = differing_tokenizers(c.runs, c.groups[ALL])
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
        lines += ["", *_summary_table(c, by_run, by_tokenizer)]
    lines += ["", f"One-step skill = {ONE_STEP_DEFINITION}; on CNO states at steps 0, T/4, T/2, 3T/4."]
    return "\n".join(lines) + "\n"


def _summary_table(c: Comparison, by_run: dict[str, RunFigures], by_tokenizer: bool) -> list[str]:
    """Per run: horizon-averaged MSE / floor, one-step skill and the non-INITIAL token agreement
    beside its own reference; a tokenizer column when the runs' tokenizers differ."""
    head = [
        "run",
        "horizon-averaged MSE/floor",
        "one-step skill (pooled)",
        "one-step skill (median operator)",
        "token agreement (non-INITIAL)",
        "two CNO realizations",
    ]
    lines = [
        "| " + " | ".join(head + (["tokenizer"] if by_tokenizer else [])) + " |",
        "|---" * (len(head) + by_tokenizer) + "|",
    ]
    for label, f in by_run.items():
        scored = f.token_agreement is not None
        cells = [
            label,
            _num(f.overall_ratio),
            _num(f.one_step_skill, ".3f"),
            _num(f.one_step_skill_median, ".3f"),
            f"{100 * f.token_agreement:.1f}%" if f.token_agreement is not None else "n/a",
            f"{100 * f.token_reference:.1f}%" if scored and f.token_reference is not None else "n/a",
        ]
        if by_tokenizer:
            cells.append(c.runs[label]["tokenizer"] if scored else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _trained_said(run: dict[str, Any]) -> str:
    """The family and grid a run was trained on (from its recorded dataset) and whose θ box it reads."""
    return trained_on_text(run["trained_on"]) if run.get("trained_on") else "?"


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
            f"move them away or choose another --out{outputs.UNMARKED_HINT if any(n.endswith('.png') for n in foreign) else ''}"
        )


def _ours(path: Path) -> bool:
    """Whether ``path`` is a file an earlier noa compare wrote: its text's heading or key, or a
    figure's mark (a PNG any other program drew is not, whatever drew it)."""
    if not path.is_file():
        return False
    if path.suffix == ".png":
        return outputs.png_marked(path)
    data = path.read_bytes()
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
