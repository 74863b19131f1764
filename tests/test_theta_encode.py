"""θ from physical units: ParameterSpace.encode is the exact inverse of decode, and refuses mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from noa.errors import NoaError
from noa.operators.space import CNO_SPACE

CONTINUOUS = [i for i, d in enumerate(CNO_SPACE.dims) if d.kind in ("float", "log-float")]
DISCRETE = [i for i, d in enumerate(CNO_SPACE.dims) if d.kind in ("int", "choice")]


def _physical(**overrides: object) -> dict[str, object]:
    values = CNO_SPACE.decode([0.5] * CNO_SPACE.size)
    values.update(overrides)
    return values


def test_decode_encode_decode_is_exact_over_many_theta() -> None:
    units = torch.rand(5000, CNO_SPACE.size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for row in units:
        physical = CNO_SPACE.decode(row)
        encoded = CNO_SPACE.encode(physical)
        assert encoded.dtype == torch.float64 and encoded.shape == (CNO_SPACE.size,)
        assert CNO_SPACE.decode(encoded) == physical
        # Continuous coordinates come back to the float64 rounding step; discrete ones to their bin's centre.
        assert (encoded[CONTINUOUS] - row[CONTINUOUS]).abs().max() <= 1e-15
        as_float32 = CNO_SPACE.decode(encoded.float())  # how datasets and the NOA hold θ
        assert all(as_float32[CNO_SPACE.dims[i].name] == physical[CNO_SPACE.dims[i].name] for i in DISCRETE)


def test_discrete_values_sit_at_bin_centres_so_float32_never_changes_them() -> None:
    for dim in CNO_SPACE.dims:
        if dim.kind == "int":
            options = list(range(int(dim.low), int(dim.high) + 1))
        elif dim.kind == "choice":
            options = list(dim.choices)
        else:
            continue
        for index, option in enumerate(options):
            u = dim.unit(option)
            assert u == pytest.approx((index + 0.5) / len(options), abs=1e-15)
            assert dim.value(float(torch.tensor(u, dtype=torch.float32))) == option


def test_hand_typed_values_round_trip_to_within_float64_rounding() -> None:
    for dim in (CNO_SPACE.dims[i] for i in CONTINUOUS):
        scale = max(abs(dim.low), abs(dim.high))
        typed = [dim.low, dim.high] + [
            float(f"{dim.low + (dim.high - dim.low) * k / 97:.3g}")
            if dim.kind == "float"
            else float(f"{dim.low * (dim.high / dim.low) ** (k / 97):.3g}")
            for k in range(1, 97)
        ]
        for value in typed:
            value = min(max(value, dim.low), dim.high)
            back = dim.value(dim.unit(value))
            assert abs(back - value) <= 1e-15 * (scale if dim.kind == "float" else value), (dim.name, value, back)
            assert 0.0 <= dim.unit(value) <= 1.0


def test_a_typical_hand_written_theta_comes_back() -> None:
    values = _physical(
        n_layers=3,
        base_channels=32,
        kernel_size=5,
        activation="gelu",
        noise_scale=1e-3,
        noise_correlation=0.05,
        update_policy="residual",
        dt=0.1,
        alpha=0.5,
        weight_gain=1.5,
        weight_mix_1=0.25,
        weight_mix_2=-0.5,
        weight_mix_3=0.0,
    )
    back = CNO_SPACE.decode(CNO_SPACE.encode(values))
    for name, value in values.items():
        if isinstance(value, float):  # 1e-3 and 0.1 are not images of low·(high/low)^u: nearest image
            assert back[name] == pytest.approx(value, rel=1e-15, abs=1e-16), name
        else:
            assert back[name] == value, name


def test_integer_options_of_a_choice_may_be_given_as_numbers() -> None:
    assert torch.equal(CNO_SPACE.encode(_physical(kernel_size=7)), CNO_SPACE.encode(_physical(kernel_size="7")))
    assert CNO_SPACE.decode(CNO_SPACE.encode(_physical(base_channels=40.0)))["base_channels"] == 40


def test_missing_and_unknown_names_are_one_error_listing_them() -> None:
    values = _physical(viscosity=0.1)
    del values["dt"], values["alpha"]
    with pytest.raises(NoaError, match=r"missing dt, alpha; unknown viscosity") as err:
        CNO_SPACE.encode(values)
    assert "n_layers" in str(err.value)  # the valid names are listed
    with pytest.raises(NoaError, match="mapping of dimension name"):
        CNO_SPACE.encode([0.5] * CNO_SPACE.size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("noise_scale", 2.0, r"noise_scale = 2.0 is outside its range \[1e-05, 1\]"),
        ("noise_scale", 0.0, "outside its range"),
        ("weight_mix_1", -1.5, "outside its range"),
        ("dt", math.nan, "must be a finite number"),
        ("alpha", "0.5", "must be a finite number"),
        ("weight_gain", True, "must be a finite number"),
        ("n_layers", 6, r"n_layers = 6 is outside its range \[2, 5\]"),
        ("base_channels", 32.5, "must be an integer"),
        ("n_layers", False, "must be an integer"),
        ("kernel_size", 4, "kernel_size = 4 is not one of its options"),
        ("activation", "swish", "'tanh', 'gelu', 'silu', 'sin', 'relu'"),
    ],
)
def test_values_of_the_wrong_type_or_out_of_range_are_refused(name: str, value: object, message: str) -> None:
    with pytest.raises(NoaError, match=message):
        CNO_SPACE.encode(_physical(**{name: value}))


def test_kernel_size_decodes_as_an_int_and_encodes_from_an_int_or_its_text() -> None:
    for u, size in ((0.1, 3), (0.5, 5), (0.9, 7)):
        row = [0.5] * CNO_SPACE.size
        row[CNO_SPACE.position("kernel_size")] = u
        decoded = CNO_SPACE.decode(row)
        assert decoded["kernel_size"] == size and type(decoded["kernel_size"]) is int
        assert decoded["activation"] == "silu" and decoded["update_policy"] == "convex"  # other choices stay text
        for given in (size, str(size)):
            assert CNO_SPACE.decode(CNO_SPACE.encode({**decoded, "kernel_size": given})) == decoded
    # The definition keeps the options as text (datasets store it), so the space round-trips through JSON.
    kernel = CNO_SPACE.dims[CNO_SPACE.position("kernel_size")]
    assert kernel.choices == ("3", "5", "7") and kernel.integer_choices
    assert CNO_SPACE.from_json(CNO_SPACE.to_json()) == CNO_SPACE
