"""Behavioral features: layout matches the registry, robustness, batch independence, physics sanity."""

from __future__ import annotations

import math

import pytest
import torch

from noa.errors import NoaError
from noa.features import (
    FEATURE_CATEGORIES,
    FeatureSpec,
    compute_features,
    feature_dims,
    feature_names,
    feature_specs,
    features_from_statistics,
    frame_gradient,
    rollout_statistics,
)


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed))


def _smooth_field(n: int, cutoff: float, *, seed: int, channels: int = 3) -> torch.Tensor:
    """Gaussian random field ``[channels, n, n]`` whose spectrum falls off beyond ``cutoff`` wavenumbers."""
    k = torch.fft.fftfreq(n, d=1.0 / n)
    envelope = torch.exp(-(k[:, None].square() + k[None, :].square()) / (2.0 * cutoff**2))
    return torch.fft.ifft2(torch.fft.fft2(_noise(channels, n, n, seed=seed)) * envelope).real


def _static(field: torch.Tensor, frames: int) -> torch.Tensor:
    """A rollout ``[1, frames, C, H, W]`` that repeats ``field``."""
    return field.expand(1, frames, *field.shape).clone()


def _column(features: dict[str, torch.Tensor], category: str, name: str, channels: int = 3) -> torch.Tensor:
    return features[category][..., feature_names(channels)[category].index(name)]


def _rollouts() -> dict[str, torch.Tensor]:
    growth = torch.exp(0.3 * torch.arange(9.0)).view(1, 9, 1, 1, 1)
    return {
        "random": _noise(2, 9, 3, 16, 16, seed=1),
        "zeros": torch.zeros(2, 9, 3, 16, 16),
        "constant": torch.full((2, 9, 3, 16, 16), -2.5),
        "constant_1e6": torch.full((1, 9, 3, 12, 12), 1e6),
        "scale_1e6": 1e6 * _noise(2, 9, 3, 16, 16, seed=2),
        "scale_1e-8": 1e-8 * _noise(2, 9, 3, 16, 16, seed=3),
        "scale_1e30": 1e30 * _noise(1, 9, 3, 16, 16, seed=4),
        "offset": 1e3 + 1e-3 * _noise(1, 9, 3, 16, 16, seed=5),
        "exploding": 1e-3 * growth**30 * _noise(1, 1, 3, 16, 16, seed=6),
        "one_hot_column": torch.zeros(1, 9, 3, 16, 16).index_fill_(-1, torch.tensor([3]), 1.0),
        "two_frames": _noise(2, 2, 3, 8, 8, seed=7),
        "odd_grid": _noise(1, 4, 3, 9, 9, seed=8),
        "float_max": torch.full((1, 3, 2, 8, 8), 3e38).index_fill_(-1, torch.tensor([0]), -3e38),
    }


def test_feature_categories_keep_their_recorded_names() -> None:
    """The category names are recorded: the HDF5 groups /features/<category> and the tokenizer's
    config, buffer and metrics keys. Renaming one would leave every dataset and tokenizer
    written before unreadable."""
    assert FEATURE_CATEGORIES == ("initial", "summary", "temporal")


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_registry_lists_exactly_the_produced_columns(channels: int) -> None:
    features = compute_features(_noise(2, 5, channels, 8, 8))
    specs, names, dims = feature_specs(channels), feature_names(channels), feature_dims(channels)
    assert tuple(features) == FEATURE_CATEGORIES == tuple(specs) == tuple(names) == tuple(dims)
    for category in FEATURE_CATEGORIES:
        assert features[category].shape[-1] == dims[category] == len(specs[category]) == len(names[category])
        assert len(set(names[category])) == len(names[category])
        assert all(isinstance(s, FeatureSpec) and s.category == category and s.description for s in specs[category])
        assert [s.name for s in specs[category]] == names[category]
    pairs = channels * (channels - 1) // 2
    expected = {"initial": 10 * channels + pairs, "summary": 10 * channels, "temporal": 9 * channels + pairs}
    assert feature_dims(channels) == expected
    assert "std_c0" in names["initial"] and "growth_rate_c0" in names["summary"]
    assert ("corr_c0_c1" in names["temporal"]) == (channels > 1)


def test_dimensions_for_three_channels_are_in_the_intended_range() -> None:
    assert feature_dims(3) == {"initial": 33, "summary": 30, "temporal": 30}


def test_shapes_dtype_and_device() -> None:
    trajectory = _noise(3, 6, 3, 16, 16).double()
    features = compute_features(trajectory)
    assert features["initial"].shape == (3, 33)
    assert features["summary"].shape == (3, 30)
    assert features["temporal"].shape == (3, 6, 30)
    assert all(v.dtype == torch.float32 and v.device == trajectory.device for v in features.values())


@pytest.mark.parametrize("kind", list(_rollouts()))
def test_values_and_gradients_are_finite(kind: str) -> None:
    trajectory = _rollouts()[kind].requires_grad_(True)
    features = compute_features(trajectory)
    for category, values in features.items():
        assert torch.isfinite(values).all(), f"{kind}: non-finite {category} features"
        assert values.abs().max() < 200.0, f"{kind}: {category} features are not compressed"
    loss = sum((v * torch.linspace(-1.0, 1.0, v.numel()).view_as(v)).sum() for v in features.values())
    (grad,) = torch.autograd.grad(loss, trajectory)
    assert torch.isfinite(grad).all(), f"{kind}: non-finite gradient"


def test_gradients_match_finite_differences() -> None:
    trajectory = _noise(1, 5, 2, 8, 8, seed=11) + 0.5
    direction = _noise(1, 5, 2, 8, 8, seed=12)
    shapes = {category: values.shape for category, values in compute_features(trajectory).items()}
    weights = {category: _noise(*shape, seed=13 + i) for i, (category, shape) in enumerate(shapes.items())}

    def objective(x: torch.Tensor) -> torch.Tensor:
        return sum((compute_features(x)[category] * weights[category]).sum() for category in FEATURE_CATEGORIES)

    x = trajectory.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x), x)
    step = 1e-2
    plus, minus = objective(trajectory + step * direction), objective(trajectory - step * direction)
    finite_difference = (plus - minus) / (2 * step)
    analytic = (grad * direction).sum()
    assert analytic.item() == pytest.approx(finite_difference.item(), rel=2e-2)


def test_batch_independence() -> None:
    samples = [_noise(2, 7, 3, 16, 16, seed=20), torch.zeros(1, 7, 3, 16, 16), 1e5 * _noise(1, 7, 3, 16, 16)]
    batch = torch.cat(samples)
    together = compute_features(batch)
    for i in range(batch.shape[0]):
        alone = compute_features(batch[i : i + 1])
        for category in FEATURE_CATEGORIES:
            torch.testing.assert_close(together[category][i : i + 1], alone[category], rtol=1e-5, atol=1e-6)


def test_deterministic() -> None:
    trajectory = _noise(2, 9, 3, 16, 16, seed=30)
    first, second = compute_features(trajectory), compute_features(trajectory.clone())
    assert all(torch.equal(first[category], second[category]) for category in FEATURE_CATEGORIES)


def test_realizations_are_averaged_and_share_the_initial_features() -> None:
    trajectory = _noise(2, 3, 6, 3, 16, 16, seed=40)
    trajectory[:, :, 0] = trajectory[:, :1, 0]  # realizations share the initial condition
    with_axis = compute_features(trajectory)
    single = compute_features(trajectory[:, :1])
    plain = compute_features(trajectory[:, 0])
    per_realization = [compute_features(trajectory[:, m]) for m in range(3)]
    for category in FEATURE_CATEGORIES:
        torch.testing.assert_close(single[category], plain[category], rtol=0, atol=0)
        expected = torch.stack([p[category] for p in per_realization]).mean(dim=0)
        torch.testing.assert_close(with_axis[category], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_axis["initial"], plain["initial"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape",
    [(3, 16, 16), (2, 5, 3, 16, 16, 1, 1), (2, 5, 3, 16, 12), (2, 1, 3, 16, 16), (2, 5, 3, 2, 2), (0, 5, 3, 8, 8)],
)
def test_bad_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(NoaError):
        compute_features(torch.zeros(shape))


def test_non_float_input_raises() -> None:
    with pytest.raises(NoaError, match="floating"):
        compute_features(torch.zeros(1, 3, 3, 8, 8, dtype=torch.int64))


def test_exponential_growth_and_decay_have_signed_growth_rates() -> None:
    field = _smooth_field(32, 6.0, seed=50)
    time = torch.arange(33.0).view(1, 33, 1, 1, 1)
    growing = compute_features(field * torch.exp(0.05 * time))
    decaying = compute_features(field * torch.exp(-0.05 * time))
    torch.testing.assert_close(_column(growing, "summary", "growth_rate_c0"), torch.tensor([0.05]), rtol=1e-3, atol=0)
    torch.testing.assert_close(_column(decaying, "summary", "growth_rate_c1"), torch.tensor([-0.05]), rtol=1e-3, atol=0)
    assert _column(growing, "summary", "log_energy_ratio_c2").item() == pytest.approx(0.1 * 32, rel=1e-3)
    assert _column(growing, "summary", "norm_drift_c0") > 0 > _column(decaying, "summary", "norm_drift_c0")
    # Shape does not change, so the standardized frames stay perfectly correlated.
    assert _column(growing, "summary", "autocorr_lag1_c0").item() == pytest.approx(1.0, abs=1e-4)
    assert _column(decaying, "summary", "ic_corr_final_c2").item() == pytest.approx(1.0, abs=1e-4)


def test_smoother_field_has_longer_correlation_and_less_high_band_power() -> None:
    rough = compute_features(_static(_smooth_field(64, 8.0, seed=60), 3))
    smooth = compute_features(_static(_smooth_field(64, 2.0, seed=60), 3))
    for c in range(3):
        assert _column(smooth, "initial", f"corr_length_c{c}") > 2 * _column(rough, "initial", f"corr_length_c{c}")
        for stem in ("spectral_centroid", "spectral_slope", "grad_energy"):
            assert _column(smooth, "initial", f"{stem}_c{c}") < _column(rough, "initial", f"{stem}_c{c}")
        high_band = f"power_band3_c{c}"
        assert (_column(smooth, "temporal", high_band) < _column(rough, "temporal", high_band)).all()


def test_correlation_length_of_a_gaussian_random_field_matches_its_e_folding_distance() -> None:
    # Amplitude envelope exp(-k^2 / 2 s^2) gives power exp(-k^2 / s^2) and autocorrelation exp(-(pi s r / n)^2),
    # which falls to 1/e at r = n / (pi s) cells. The feature counts whole lag shells (rounded radii), so it
    # reads up to one cell short. Averaged over seeds to tame the sampling noise.
    n = 64
    for cutoff in (4.0, 8.0):
        fields = torch.stack([_smooth_field(n, cutoff, seed=s, channels=1) for s in range(8)])
        features = compute_features(fields[:, None].expand(-1, 2, -1, -1, -1))
        cells = _column(features, "initial", "corr_length_c0", 1).mean().item() * n
        assert n / (math.pi * cutoff) - 1.0 <= cells <= n / (math.pi * cutoff)


def test_white_noise_statistics() -> None:
    features = compute_features(_noise(1, 4, 3, 64, 64, seed=70))
    assert _column(features, "initial", "std_c0").item() == pytest.approx(0.5 * math.log(2.0), abs=0.02)
    assert _column(features, "initial", "kurtosis_c1").item() == pytest.approx(math.log1p(3.0), abs=0.05)
    assert _column(features, "initial", "skewness_c2").abs().item() < 0.1
    assert _column(features, "initial", "spectral_slope_c0").abs().item() < 0.3
    assert _column(features, "summary", "roughness_c0").item() == pytest.approx(2.0, abs=0.1)
    assert _column(features, "summary", "autocorr_lag1_c1").abs().item() < 0.05
    band_sum = sum(_column(features, "temporal", f"power_band{b}_c0") for b in range(4))
    torch.testing.assert_close(band_sum, torch.ones(1, 4), atol=1e-4, rtol=0)


def test_cross_channel_correlation_and_temporal_frame_zero_agree_with_initial() -> None:
    base = _noise(1, 5, 1, 16, 16, seed=80)
    trajectory = torch.cat([base, -3.0 * base, _noise(1, 5, 1, 16, 16, seed=81)], dim=2)
    features = compute_features(trajectory)
    assert _column(features, "initial", "corr_c0_c1").item() == pytest.approx(-1.0, abs=1e-4)
    assert _column(features, "initial", "corr_c0_c2").abs().item() < 0.3
    for stem in ("mean", "std", "max_abs", "grad_energy", "laplacian_energy"):
        torch.testing.assert_close(
            _column(features, "initial", f"{stem}_c1"), _column(features, "temporal", f"{stem}_c1")[:, 0]
        )


def test_flat_fields_have_neutral_shape_features() -> None:
    features = compute_features(torch.full((1, 4, 3, 10, 10), 7.0))
    for stem in ("skewness", "kurtosis", "spectral_centroid", "corr_length"):
        assert _column(features, "initial", f"{stem}_c0").abs().item() < 1e-3
    assert _column(features, "initial", "mean_c0").item() == pytest.approx(math.asinh(7.0), rel=1e-5)
    assert _column(features, "initial", "max_abs_c0").item() == pytest.approx(math.log1p(7.0), rel=1e-5)
    assert _column(features, "summary", "roughness_c0").item() == pytest.approx(0.0, abs=1e-6)


def test_oscillating_amplitude_is_detected() -> None:
    period = 16
    time = torch.arange(129.0).view(1, 129, 1, 1, 1)
    field = _smooth_field(16, 3.0, seed=90)
    oscillating = compute_features(field * (2.0 + torch.sin(2 * math.pi * time / period)))
    steady = compute_features(field * torch.exp(0.01 * time))
    assert _column(oscillating, "summary", "osc_freq_c0").item() == pytest.approx(1.0 / period, rel=0.1)
    assert _column(oscillating, "summary", "osc_peak_c0").item() > 0.8
    assert _column(oscillating, "summary", "osc_crossings_c0").item() == pytest.approx(2.0 / period, rel=0.2)
    assert _column(steady, "summary", "osc_peak_c0").item() < 0.01
    assert _column(steady, "summary", "osc_crossings_c0").item() < 0.01


@pytest.mark.parametrize("chunk", [1, 3, 5, 17])
def test_statistics_taken_chunk_by_chunk_give_the_same_features_and_gradient(chunk: int) -> None:
    """T = 16: the lag-8 and lag-T covariances pair frames of different chunks (3 and 5 do not divide T+1)."""
    amplitude = torch.logspace(-3, 3, 17).view(1, 17, 1, 1, 1)
    x = amplitude * _noise(2, 17, 3, 16, 16, seed=110) + 0.3
    weights = {category: _noise(*v.shape, seed=111 + i) for i, (category, v) in enumerate(compute_features(x).items())}

    def objective(features: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum((features[category] * weights[category]).sum() for category in FEATURE_CATEGORIES)

    reference = x.clone().requires_grad_(True)
    whole = compute_features(reference)
    (want,) = torch.autograd.grad(objective(whole), reference)

    with torch.no_grad():
        stats = rollout_statistics(x, chunk)
    for category, values in features_from_statistics(stats).items():
        torch.testing.assert_close(values, whole[category].detach(), rtol=1e-6, atol=1e-6)
    leaves = stats.requiring_grad()
    got = frame_gradient(objective(features_from_statistics(leaves)), leaves, x, chunk)
    assert torch.equal(got[:, 0], torch.zeros_like(got[:, 0]))  # frame 0, the initial condition, is held fixed
    torch.testing.assert_close(got[:, 1:], want[:, 1:], rtol=1e-4, atol=1e-6 * want.abs().max().item())

    # Chunked statistics stay differentiable when the frames are (partners from other chunks included).
    direct = x.clone().requires_grad_(True)
    (through,) = torch.autograd.grad(objective(features_from_statistics(rollout_statistics(direct, chunk))), direct)
    torch.testing.assert_close(through, want, rtol=1e-4, atol=1e-6 * want.abs().max().item())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_is_deterministic() -> None:
    trajectory = _noise(2, 2, 9, 3, 32, 32, seed=100)
    on_cpu = compute_features(trajectory)
    first, second = compute_features(trajectory.cuda()), compute_features(trajectory.cuda())
    for category in FEATURE_CATEGORIES:
        assert first[category].device.type == "cuda" and first[category].dtype == torch.float32
        assert torch.equal(first[category], second[category])
        torch.testing.assert_close(first[category].cpu(), on_cpu[category], rtol=1e-4, atol=1e-4)


def test_stored_features_do_not_depend_on_batch_size_or_threads_to_the_byte() -> None:
    # What the parallel writer and a features resume with another --batch-size rely on.
    x = torch.randn(8, 2, 9, 3, 16, 16, generator=torch.Generator().manual_seed(0)).cumsum(2) * 0.3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        whole = compute_features(x, stable=True)
        five = compute_features(x[:5], stable=True)
        one_by_one = [compute_features(x[i : i + 1], stable=True) for i in range(8)]
        torch.set_num_threads(2)
        two_threads = compute_features(x, stable=True)
    finally:
        torch.set_num_threads(threads)
    for category, values in whole.items():
        assert values.dtype == torch.float32
        assert torch.equal(values[:5], five[category]), category
        assert torch.equal(values, torch.cat([single[category] for single in one_by_one])), category
        assert torch.equal(values, two_threads[category]), category
