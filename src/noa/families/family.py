"""Operator families: regions of the CNO parameter space that a user writes as YAML.

The full space (:data:`noa.operators.space.CNO_SPACE`) fixes what every dimension means and its
bounds. A family narrows it, per dimension: a sub-range (a log-scale dimension stays log-scale),
a subset of the choices with optional weights, or one fixed value; a dimension it does not name
keeps its whole range. θ is always in the full space's unit coordinates, so any NOA reads any
family's θ and a fine-tune may move from one family to another.

A family file::

    name: convex-gelu
    description: convex operators with one activation
    dimensions:
      activation: gelu                                   # fixed (shorthand for {fixed: gelu})
      update_policy: {choices: [residual, convex], weights: [1, 3]}
      weight_gain: {range: [0.8, 1.2]}

:meth:`OperatorFamily.draw` covers the region with a scrambled Sobol sequence over the dimensions
that vary; a family that narrows nothing draws exactly the θ that the full space's Sobol draw gives.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import qmc

from noa.errors import NoaError
from noa.families import yaml_text
from noa.operators.space import ACTS_ONLY_UNDER, CNO_SPACE, Dimension, ParameterSpace
from noa.seeding import derive_seed

NAMED_DIR = Path(__file__).resolve().parent / "named"
TOP_LEVEL_KEYS = ("name", "description", "dimensions")


@dataclass(frozen=True)
class Range:
    """A sub-range [low, high] of a numeric dimension, drawn uniformly in its unit coordinate
    (so log-uniformly on a log-float dimension, each integer equally often on an int one)."""

    low: float
    high: float

    def units(self, dim: Dimension, s: np.ndarray) -> np.ndarray:
        if dim.kind == "int":
            # Each integer of the sub-range gets an equal share of s and the centre of its own
            # share of the full space: float32 rounding of θ can never tip it into a neighbour.
            lo, hi = int(self.low), int(self.high)
            values = np.minimum(lo + np.floor(s * (hi - lo + 1)).astype(np.int64), hi)
            return np.array([dim.unit(int(v)) for v in values])
        u_lo, u_hi = dim.unit(self.low), dim.unit(self.high)
        return u_lo + s * (u_hi - u_lo)

    def unit_bounds(self, dim: Dimension) -> tuple[float, float]:
        low, high = (int(self.low), int(self.high)) if dim.kind == "int" else (self.low, self.high)
        return dim.unit(low), dim.unit(high)

    def as_yaml(self, dim: Dimension) -> dict[str, Any]:
        return {"range": [int(self.low), int(self.high)] if dim.kind == "int" else [self.low, self.high]}

    def describe(self, dim: Dimension) -> str:
        scale = ", log scale" if dim.kind == "log-float" else ""
        return f"{self.low:g} .. {self.high:g}{scale}"


@dataclass(frozen=True)
class Choices:
    """A subset of a choice dimension's options, drawn with the given (relative) weights."""

    options: tuple[str, ...]
    weights: tuple[float, ...]

    def units(self, dim: Dimension, s: np.ndarray) -> np.ndarray:
        edges = np.cumsum(self.weights) / sum(self.weights)
        picks = np.minimum(np.searchsorted(edges, s, side="right"), len(self.options) - 1)
        centres = np.array([dim.unit(option) for option in self.options])
        return centres[picks]

    def unit_bounds(self, dim: Dimension) -> tuple[float, float]:
        centres = [dim.unit(option) for option in self.options]
        return min(centres), max(centres)

    def as_yaml(self, dim: Dimension) -> dict[str, Any]:
        options = [int(o) if dim.integer_choices else o for o in self.options]
        if len(set(self.weights)) == 1:
            return {"choices": options}
        return {"choices": options, "weights": list(self.weights)}

    def describe(self, dim: Dimension) -> str:
        total = sum(self.weights)
        if len(set(self.weights)) == 1:
            return ", ".join(self.options)
        return ", ".join(f"{o} ({w / total:.0%})" for o, w in zip(self.options, self.weights))


@dataclass(frozen=True)
class Fixed:
    """One value of a dimension, on every operator of the family."""

    value: Any

    def units(self, dim: Dimension, s: np.ndarray) -> np.ndarray:
        return np.full(s.shape, dim.unit(self.value))

    def unit_bounds(self, dim: Dimension) -> tuple[float, float]:
        return dim.unit(self.value), dim.unit(self.value)

    def as_yaml(self, dim: Dimension) -> dict[str, Any]:
        return {"fixed": self.value}

    def describe(self, dim: Dimension) -> str:
        return f"fixed at {self.value:.4g}" if isinstance(self.value, float) else f"fixed at {self.value}"


Restriction = Range | Choices | Fixed


@dataclass(frozen=True)
class OperatorFamily:
    """A named region of the parameter space; dimensions absent from ``restrictions`` keep their whole range."""

    name: str
    description: str = ""
    restrictions: Mapping[str, Restriction] = field(default_factory=dict)
    space: ParameterSpace = CNO_SPACE

    def __post_init__(self) -> None:
        unknown = [name for name in self.restrictions if name not in self.space.names]
        if unknown:
            raise ValueError(f"family {self.name!r} restricts unknown dimensions {unknown}")

    def inert(self) -> dict[str, str]:
        """Each dimension that acts on none of the family's operators, with why: ``dt`` where every
        operator is convex, ``alpha`` where every one is residual (ACTS_ONLY_UNDER)."""
        found = {}
        for name, (switch, option) in ACTS_ONLY_UNDER.items():
            if name not in self.space.names or switch not in self.space.names:
                continue
            rule = self.restrictions.get(switch)
            allowed = (rule.value,) if isinstance(rule, Fixed) else rule.options if isinstance(rule, Choices) else None
            if allowed is not None and option not in allowed:
                found[name] = f"inert: no operator has {switch} {option}"
        return found

    def rules(self) -> dict[str, Restriction]:
        """The restrictions the draw applies: the family's own, with each inert dimension fixed at
        the centre (in unit coordinates) of what the family allows it, so the NOA reads one constant
        there, the θ box has a zero width, and a value shown stays in the family's range."""
        rules = dict(self.restrictions)
        for name in self.inert():
            dim = self.space.dims[self.space.position(name)]
            rule = self.restrictions.get(name)
            if not isinstance(rule, Fixed):
                low, high = (0.0, 1.0) if rule is None else rule.unit_bounds(dim)
                rules[name] = Fixed(dim.physical((low + high) / 2))
        return rules

    def draw(self, n: int, seed: int) -> np.ndarray:
        """``n`` θ rows ``[n, P]`` (float32, unit coordinates of the full space) covering the family.

        The first n points of a scrambled Sobol sequence (the next power of two) over the
        dimensions the family does not fix, each mapped into its restriction; a family that
        narrows nothing gives the full space's own Sobol draw, bit for bit. An inert dimension
        keeps its Sobol column but gets its fixed value: the other columns, and so the operators,
        are those drawn before inert dimensions were fixed. ``n`` = 0 draws no rows.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise NoaError(f"a family draws a whole number of operators (0 or more), got {n!r}")
        drawn = [d for d in self.space.dims if not isinstance(self.restrictions.get(d.name), Fixed)]
        if drawn and n:
            sampler = qmc.Sobol(d=len(drawn), scramble=True, seed=derive_seed(seed, "sobol"))
            points = sampler.random_base2(math.ceil(math.log2(n)))[:n]
        else:
            points = np.zeros((n, len(drawn)))
        columns = iter(points.T)
        rules = self.rules()
        theta = np.empty((n, self.space.size), dtype=np.float64)
        for j, dim in enumerate(self.space.dims):
            s = np.zeros(n) if isinstance(self.restrictions.get(dim.name), Fixed) else next(columns)
            rule = rules.get(dim.name)
            theta[:, j] = s if rule is None else rule.units(dim, s)
        return theta.astype(np.float32)

    def unit_box(self) -> list[list[float]]:
        """[low, high] of every θ unit coordinate over the family's operators; [0, 1] where the
        family keeps a dimension's whole range (so the full family's box is the unit cube), a
        zero width where it fixes one or leaves it inert."""
        rules = self.rules()
        box = []
        for dim in self.space.dims:
            rule = rules.get(dim.name)
            low, high = (0.0, 1.0) if rule is None else rule.unit_bounds(dim)
            box.append([float(low), float(high)])
        return box

    def contains(self, unit_row: Sequence[float]) -> bool:
        """Whether a θ row (unit coordinates) decodes to an operator of this family."""
        values = self.space.decode(unit_row)
        for dim in self.space.dims:
            rule, value = self.restrictions.get(dim.name), values[dim.name]
            if isinstance(rule, Fixed) and dim.kind in ("int", "choice") and str(value) != str(rule.value):
                return False
            if isinstance(rule, Fixed) and dim.kind not in ("int", "choice"):
                if not math.isclose(value, float(rule.value), rel_tol=1e-5, abs_tol=1e-7):
                    return False
            if isinstance(rule, Choices) and str(value) not in rule.options:
                return False
            if isinstance(rule, Range):
                slack = 1e-5 * (rule.high - rule.low)
                if not rule.low - slack <= float(value) <= rule.high + slack:
                    return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """The family as plain data: what a YAML file holds and a dataset records."""
        dims = {d.name: self.restrictions[d.name].as_yaml(d) for d in self.space.dims if d.name in self.restrictions}
        return {"name": self.name, "description": self.description, "dimensions": dims}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    def to_yaml(self) -> str:
        """The YAML a family file holds, one line per restricted dimension (what `--family` reads back)."""
        data = self.as_dict()
        head = yaml.safe_dump(
            {k: data[k] for k in ("name", "description")}, sort_keys=False, allow_unicode=True, width=1000
        )
        if not data["dimensions"]:
            return head + "dimensions: {}\n"
        lines = [
            f"  {name}: {yaml.safe_dump(spec, default_flow_style=True, allow_unicode=True, width=1000).strip()}"
            for name, spec in data["dimensions"].items()
        ]
        return head + "dimensions:\n" + "\n".join(lines) + "\n"

    def describe(self) -> list[str]:
        """One line per dimension: its restriction, or its whole range."""
        lines = []
        rules, inert = self.rules(), self.inert()
        for dim in self.space.dims:
            rule = rules.get(dim.name)
            if dim.name in inert:
                lines.append(f"{dim.name:<18} {rule.describe(dim) if rule else ''}  ({inert[dim.name]})")
            elif rule is None:
                whole = ", ".join(dim.choices) if dim.kind == "choice" else f"{dim.low:g} .. {dim.high:g}"
                lines.append(f"{dim.name:<18} {whole}  (whole range)")
            else:
                lines.append(f"{dim.name:<18} {rule.describe(dim)}")
        return lines


FULL = OperatorFamily("full", "every operator of the CNO parameter space")


# ----------------------------------------------------------------------------- reading


def named_families() -> list[str]:
    """The families shipped with noa, by name."""
    return sorted(p.stem for p in NAMED_DIR.glob("*.yaml"))


def load_family(spec: str | Path) -> OperatorFamily:
    """A family from a YAML file's path or a shipped family's name (a path wins when both exist)."""
    path = Path(spec)
    if path.is_file():
        return family_from_text(_read_text(path), source=str(path), default_name=path.stem)
    if str(spec) in named_families():
        named = NAMED_DIR / f"{spec}.yaml"
        return family_from_text(named.read_text(encoding="utf-8"), source=f"family {spec!r}", default_name=str(spec))
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        raise NoaError(
            f"family file {path} does not exist; pass an existing YAML file or one of: {', '.join(named_families())}"
        )
    raise NoaError(
        f"{spec!r} is neither a family file nor a shipped family{_did_you_mean(str(spec), named_families())}; "
        f"the shipped families are {', '.join(named_families())} (`noa family show NAME` prints one as a file to edit)"
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise NoaError(f"family file {path} is not UTF-8 text ({err}); a family file is YAML") from err
    except OSError as err:
        raise NoaError(f"cannot read family file {path}: {err.strerror}") from err


def family_from_text(text: str, source: str, default_name: str = "custom") -> OperatorFamily:
    """Parse a family's YAML (with a safe loader): one NoaError naming ``source`` for any mistake."""
    try:
        data = yaml_text.parse(text)
    except yaml_text.DuplicateKey as err:
        what = "dimension" if err.key in CNO_SPACE.names else "key"
        lines = f"both on line {err.first}" if err.first == err.second else f"lines {err.first} and {err.second}"
        raise NoaError(f"{source}: {what} {err.key!r} is given twice ({lines}); keep one of them") from None
    except yaml.YAMLError as err:
        raise NoaError(f"{source} is not valid YAML{yaml_text.where_and_what(err, text)}") from None
    return family_from_dict(data, source, default_name)


def family_from_dict(
    data: Any, source: str, default_name: str = "custom", space: ParameterSpace = CNO_SPACE
) -> OperatorFamily:
    """A family from plain data (a parsed YAML file or a dataset's record), validated against ``space``."""
    if not isinstance(data, Mapping):
        raise NoaError(
            f"{source}: a family is a mapping with 'dimensions:' (and optional 'name:', 'description:'), "
            f"got {type(data).__name__}; see `noa family show full`"
        )
    unknown = [str(k) for k in data if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise NoaError(
            f"{source}: unknown key {unknown[0]!r}{_did_you_mean(unknown[0], TOP_LEVEL_KEYS)}; "
            f"a family file has only {', '.join(TOP_LEVEL_KEYS)}"
        )
    name = data.get("name", default_name)
    description = data.get("description", "") or ""
    if not isinstance(name, str) or not name.strip():
        raise NoaError(f"{source}: 'name' must be a non-empty text, got {name!r}")
    if not isinstance(description, str):
        raise NoaError(f"{source}: 'description' must be text, got {type(description).__name__}")
    dims = data.get("dimensions") or {}
    if not isinstance(dims, Mapping):
        raise NoaError(f"{source}: 'dimensions' must map dimension names to restrictions, got {type(dims).__name__}")
    restrictions: dict[str, Restriction] = {}
    for key, spec in dims.items():
        dim_name = str(key)
        if dim_name not in space.names:
            raise NoaError(
                f"{source}: unknown dimension {dim_name!r}{_did_you_mean(dim_name, space.names)}; "
                f"the dimensions are {', '.join(space.names)}"
            )
        restrictions[dim_name] = _restriction(space.dims[space.position(dim_name)], spec, f"{source}: {dim_name}")
    return OperatorFamily(name.strip(), description.strip(), restrictions, space)


def _restriction(dim: Dimension, spec: Any, where: str) -> Restriction:
    if not isinstance(spec, Mapping):
        if isinstance(spec, list):
            form = "choices: [...]" if dim.kind == "choice" else "range: [low, high]"
            raise NoaError(f"{where}: a bare list is ambiguous; write {{{form}}}")
        spec = {"fixed": spec}  # `activation: gelu` is shorthand for a fixed value
    keys = set(spec)
    allowed = {"range", "choices", "weights", "fixed"}
    if keys - allowed:
        extra = sorted(map(str, keys - allowed))[0]
        raise NoaError(
            f"{where}: unknown key {extra!r}{_did_you_mean(extra, sorted(allowed))}; use range, choices (+ weights) or fixed"
        )
    forms = [k for k in ("range", "choices", "fixed") if k in keys]
    if len(forms) != 1:
        said = " and ".join(forms) if forms else "none of them"
        raise NoaError(f"{where}: give exactly one of range, choices or fixed (got {said})")
    if "weights" in keys and forms != ["choices"]:
        raise NoaError(f"{where}: weights go with choices")
    if forms == ["fixed"]:
        return _fixed(dim, spec["fixed"], where)
    if forms == ["range"]:
        return _range(dim, spec["range"], where)
    return _choices(dim, spec["choices"], spec.get("weights"), where)


def _fixed(dim: Dimension, value: Any, where: str) -> Fixed:
    if dim.kind == "choice":
        option = str(value) if _is_number(value) else value
        if not isinstance(option, str) or option not in dim.choices:
            raise NoaError(
                f"{where}: unknown option {value!r}{_did_you_mean(str(value), dim.choices)}; "
                f"its options are {', '.join(dim.choices)}"
            )
        return Fixed(int(option) if dim.integer_choices else option)
    integral = dim.kind == "int"
    if not _is_number(value) or (integral and not float(value).is_integer()):
        kind = "an integer" if integral else "a number"
        raise NoaError(f"{where}: fixed value must be {kind} in [{dim.low:g}, {dim.high:g}], got {value!r}")
    if not dim.low <= value <= dim.high:
        raise NoaError(f"{where}: fixed value {value:g} is outside the dimension's bounds [{dim.low:g}, {dim.high:g}]")
    return Fixed(int(value) if integral else float(value))


def _range(dim: Dimension, bounds: Any, where: str) -> Range:
    if dim.kind == "choice":
        raise NoaError(
            f"{where} is a choice ({', '.join(dim.choices)}): give choices: [...] or fixed: VALUE, not a range"
        )
    if not isinstance(bounds, list) or len(bounds) != 2 or not all(_is_number(b) for b in bounds):
        raise NoaError(f"{where}: range must be two numbers [low, high], got {bounds!r}")
    low, high = bounds
    if dim.kind == "int" and not all(float(b).is_integer() for b in bounds):
        raise NoaError(f"{where} is an integer dimension: its range needs integer bounds, got {bounds!r}")
    if low < dim.low or high > dim.high:
        raise NoaError(
            f"{where}: range [{low:g}, {high:g}] is outside the dimension's bounds [{dim.low:g}, {dim.high:g}]"
        )
    if not low < high:
        raise NoaError(
            f"{where}: range [{low:g}, {high:g}] is empty (low must be below high); to pin one value write fixed: {low:g}"
        )
    return Range(int(low), int(high)) if dim.kind == "int" else Range(float(low), float(high))


def _choices(dim: Dimension, options: Any, weights: Any, where: str) -> Choices:
    if dim.kind != "choice":
        raise NoaError(
            f"{where} is a numeric dimension ({dim.kind} on [{dim.low:g}, {dim.high:g}]): give range: [low, high] or fixed: VALUE, not choices"
        )
    if not isinstance(options, list) or not options:
        raise NoaError(
            f"{where}: choices must be a non-empty list of options from {', '.join(dim.choices)}, got {options!r}"
        )
    names = [str(o) for o in options]
    for option in names:
        if option not in dim.choices:
            raise NoaError(
                f"{where}: unknown choice {option!r}{_did_you_mean(option, dim.choices)}; its options are {', '.join(dim.choices)}"
            )
    if len(set(names)) != len(names):
        raise NoaError(f"{where}: choices list an option twice ({names})")
    if weights is None:
        return Choices(tuple(names), (1.0,) * len(names))
    if not isinstance(weights, list) or len(weights) != len(names):
        raise NoaError(f"{where}: weights must be a list of {len(names)} numbers, one per choice, got {weights!r}")
    if not all(_is_number(w) and math.isfinite(w) and w > 0 for w in weights):
        raise NoaError(f"{where}: weights must be positive numbers, got {weights!r}")
    return Choices(tuple(names), tuple(float(w) for w in weights))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    """A suggestion: the option that differs from ``word`` only in case, else the closest one."""
    same = [o for o in options if o.lower() == word.lower()]
    close = same or difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
