"""Tests for the U-AFNO backbone, its AFNO blocks and the latent projector."""

from __future__ import annotations

import math

import pytest
import torch

from noa.errors import NoaError
from noa.model import AFNOBlock, LatentProjector, UAFNO, UAFNOConfig, check_grid
from noa.model.afno import SpectralMixing, _complex_linear, kept_modes

SMALL = dict(base_channels=8, encoder_levels=2, modes=4, afno_blocks=2, afno_num_blocks=4)


def make_model(seed: int = 0, **overrides) -> UAFNO:
    torch.manual_seed(seed)  # tests may seed the global RNG; library code never does
    return UAFNO(UAFNOConfig(**{**SMALL, **overrides}))


def inputs(batch: int, grid: int, config: UAFNOConfig, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.channels, grid, grid, generator=gen)
    params = torch.rand(batch, config.param_dim, generator=gen)
    return x, params


def test_guide_default_shapes_on_64x64() -> None:
    model = UAFNO(UAFNOConfig())
    assert model.bottleneck_channels == 256
    x, params = inputs(2, 64, model.config)
    with torch.no_grad():
        out, bottleneck = model.step(x, params, return_bottleneck=True)
    assert out.shape == (2, 3, 64, 64)
    assert bottleneck.shape == (2, 256, 8, 8)


@pytest.mark.parametrize(
    ("overrides", "grid", "bottleneck_shape"),
    [
        (dict(), 32, (32, 8, 8)),
        (dict(encoder_levels=1, channels=2, param_dim=4), 16, (16, 8, 8)),
        (dict(encoder_levels=3, afno_blocks=0), 16, (64, 2, 2)),
        (dict(base_channels=4, afno_num_blocks=2), 24, (16, 6, 6)),
    ],
)
def test_output_and_bottleneck_shapes(overrides: dict, grid: int, bottleneck_shape: tuple) -> None:
    model = make_model(**overrides)
    x, params = inputs(3, grid, model.config)
    with torch.no_grad():
        out, bottleneck = model.step(x, params, return_bottleneck=True)
    assert out.shape == x.shape
    assert bottleneck.shape == (3, *bottleneck_shape)
    assert bottleneck.shape[1] == model.bottleneck_channels


def test_step_bottleneck_matches_forward_and_intermediate_features() -> None:
    model = make_model().eval()
    x, params = inputs(2, 16, model.config)
    with torch.no_grad():
        out, bottleneck = model.step(x, params, return_bottleneck=True)
        torch.testing.assert_close(out, model(x, params))
        torch.testing.assert_close(bottleneck, model.get_intermediate_features(x, "bottleneck", params=params))
        encoder_1 = model.get_intermediate_features(x, "encoder_1", params=params)
    assert encoder_1.shape == (2, 16, 8, 8)


def test_intermediate_features_errors() -> None:
    model = make_model()
    x, params = inputs(1, 16, model.config)
    with pytest.raises(NoaError, match="params"):
        model.get_intermediate_features(x, "bottleneck")
    with pytest.raises(NoaError, match="valid layers are encoder_0, encoder_1, encoder_2, bottleneck"):
        model.get_intermediate_features(x, "decoder_9", params=params)


def test_input_shape_errors() -> None:
    model = make_model()
    x, params = inputs(2, 16, model.config)
    with pytest.raises(NoaError, match="params"):
        model(x, params[:, :3])
    with pytest.raises(NoaError, match="state"):
        model(x[:, :1], params)
    with pytest.raises(NoaError, match="divisible"):
        model(x[:, :, :10, :10], params)


def test_theta_changes_output_at_init() -> None:
    model = make_model().eval()
    x, params = inputs(1, 16, model.config)
    with torch.no_grad():
        a = model(x, params)
        b = model(x, 1.0 - params)
    assert not torch.allclose(a, b, atol=1e-6)


def test_near_identity_at_init() -> None:
    model = make_model()
    x, params = inputs(2, 16, model.config)
    with torch.no_grad():
        delta = model(x, params) - x
    assert 0 < delta.norm() < 0.05 * x.norm()


def test_film_starts_near_unit_scale_and_zero_shift() -> None:
    model = make_model()
    _, params = inputs(4, 16, model.config)
    with torch.no_grad():
        scale, shift = model.afno_film[0](model.embed(2 * params - 1))
    assert (scale - 1).abs().max() < 0.2
    assert shift.abs().max() < 0.2


def test_gradients_reach_every_parameter() -> None:
    model = make_model()
    projector = LatentProjector(model.bottleneck_channels, latent_dim=5, hidden=16)
    x, params = inputs(2, 16, model.config)
    out, bottleneck = model.step(x, params, return_bottleneck=True)
    loss = out.square().mean() + projector(bottleneck).square().mean()
    loss.backward()
    for name, p in [*model.named_parameters(), *projector.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_batch_independence_in_eval_mode() -> None:
    model = make_model().eval()
    x, params = inputs(4, 16, model.config)
    with torch.no_grad():
        batched, bottleneck = model.step(x, params, return_bottleneck=True)
        alone, alone_bottleneck = model.step(x[2:3], params[2:3], return_bottleneck=True)
    torch.testing.assert_close(alone, batched[2:3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone_bottleneck, bottleneck[2:3], atol=1e-5, rtol=1e-5)


def test_afno_block_under_bfloat16_autocast_keeps_fft_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    block = AFNOBlock(channels=16, modes=4, num_blocks=4, sparsity_threshold=0.01)
    x = torch.randn(2, 16, 8, 8, dtype=torch.bfloat16)
    scale, shift = torch.ones(2, 16), torch.zeros(2, 16)
    fft_dtypes = []
    real_rfft2 = torch.fft.rfft2

    def spy(t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        fft_dtypes.append(t.dtype)
        return real_rfft2(t, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft2", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x, scale, shift)
        mixed = block.mixing(x.permute(0, 2, 3, 1))
    assert fft_dtypes == [torch.float32, torch.float32]
    assert mixed.dtype == torch.bfloat16  # handed back in the dtype it was given
    assert out.shape == x.shape
    assert torch.isfinite(out.float()).all()


def test_whole_model_runs_under_bfloat16_autocast() -> None:
    model = make_model()
    x, params = inputs(2, 16, model.config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, params)
    assert torch.isfinite(out.float()).all()


def test_kept_modes_clamp_to_the_grid() -> None:
    assert kept_modes(8, 8, 16) == (4, 4, 5)  # every frequency of an 8x8 map
    assert kept_modes(8, 8, 2) == (2, 1, 2)  # k_y in {0, 1, -1}, k_x in {0, 1}
    assert kept_modes(3, 3, 16) == (2, 1, 2)


def test_spectral_mixing_drops_frequencies_above_modes() -> None:
    torch.manual_seed(0)
    mixing = SpectralMixing(channels=4, modes=2, num_blocks=2, sparsity_threshold=0.0)
    with torch.no_grad():
        mixing.b1.zero_()
        mixing.b2.zero_()
        mixing.w1.normal_()
        mixing.w2.normal_()
    grid = torch.arange(8.0)
    wave = lambda k: torch.cos(2 * math.pi * k * grid / 8)[:, None] * torch.ones(8)[None, :]  # noqa: E731
    high = wave(3)[None, :, :, None].expand(1, 8, 8, 4)
    low = wave(1)[None, :, :, None].expand(1, 8, 8, 4)
    with torch.no_grad():
        assert mixing(high).abs().max() < 1e-5
        assert mixing(high.transpose(1, 2)).abs().max() < 1e-5
        assert mixing(low).abs().max() > 1e-2


def test_complex_linear_matches_complex_matmul() -> None:
    gen = torch.Generator().manual_seed(0)
    real, imag = torch.randn(5, 3, 4, generator=gen), torch.randn(5, 3, 4, generator=gen)
    weight, bias = torch.randn(2, 3, 4, 6, generator=gen), torch.randn(2, 3, 6, generator=gen)
    out_r, out_i = _complex_linear(real, imag, weight, bias)
    expected = torch.einsum("bgi,gio->bgo", torch.complex(real, imag), torch.complex(weight[0], weight[1]))
    expected = expected + torch.complex(bias[0], bias[1])
    torch.testing.assert_close(torch.complex(out_r, out_i), expected)


def test_config_round_trip_and_unknown_keys() -> None:
    config = UAFNOConfig(base_channels=16, modes=8, sparsity_threshold=0.02)
    assert UAFNOConfig.from_dict(config.to_dict()) == config
    assert UAFNOConfig.from_dict({"modes": 8}) == UAFNOConfig(modes=8)
    with pytest.raises(NoaError, match="bogus"):
        UAFNOConfig.from_dict({"modes": 8, "bogus": 1})


@pytest.mark.parametrize(
    "overrides",
    [
        dict(base_channels=0),
        dict(modes=2.5),
        dict(encoder_levels=True),
        dict(sparsity_threshold=-1.0),
        dict(base_channels=12, encoder_levels=0, afno_num_blocks=8),
        dict(theta_box=[[0.0, 1.0]] * 12),  # one pair short of θ's 13 dimensions
        dict(theta_box=[[0.6, 0.4]] * 13),  # low above high
        dict(theta_box=[[-0.1, 0.5]] * 13),  # outside the unit cube
        dict(theta_box=[[0.0, "1"]] * 13),
    ],
)
def test_config_rejects_bad_values(overrides: dict) -> None:
    with pytest.raises(NoaError):
        UAFNOConfig(**overrides)


def test_the_embedding_reads_theta_rescaled_to_the_family_box() -> None:
    from noa.families import load_family
    from noa.model.uafno import box_tensors, embedding_input

    starter = load_family("starter")
    config = UAFNOConfig(**SMALL, theta_box=starter.unit_box())
    assert UAFNOConfig.from_dict(config.to_dict()) == config  # the box travels in the checkpoint's config
    low, span = box_tensors(config)
    theta = torch.from_numpy(starter.draw(256, seed=4))
    u = embedding_input(theta, low, span)
    assert all(high > low for low, high in config.theta_box)  # starter varies every dimension
    assert u.min() >= -1 - 1e-5 and u.max() <= 1 + 1e-5
    assert (u.amax(0) - u.amin(0)).min() > 1.5  # each dimension spans most of [-1, 1]
    # No box: exactly the 2θ - 1 of a model from before the box, so old checkpoints compute what they did.
    plain = UAFNOConfig(**SMALL)
    assert torch.equal(embedding_input(theta, *box_tensors(plain)), 2.0 * theta - 1.0)
    model = make_model(theta_box=starter.unit_box())
    assert "theta_low" not in model.state_dict()  # follows from the config: old state dicts still load
    make_model().load_state_dict(model.state_dict())


def test_a_fixed_dimension_of_the_box_reads_as_zero() -> None:
    from noa.model.uafno import box_tensors, embedding_input

    box = [[0.0, 1.0]] * 12 + [[0.3, 0.3]]
    theta = torch.full((2, 13), 0.3)
    assert torch.allclose(
        embedding_input(theta, *box_tensors(UAFNOConfig(**SMALL, theta_box=box)))[:, -1], torch.zeros(2)
    )


def test_check_grid() -> None:
    config = UAFNOConfig()  # 3 levels: grids must be multiples of 8 with a >= 2x2 bottleneck
    check_grid(config, 64)
    check_grid(config, 16)
    with pytest.raises(NoaError, match="divisible"):
        check_grid(config, 60)
    with pytest.raises(NoaError, match="at least 2x2"):
        check_grid(config, 8)


def test_projector_shape_at_any_bottleneck_size() -> None:
    torch.manual_seed(0)
    projector = LatentProjector(in_channels=32, latent_dim=780, hidden=64)
    for size in (2, 5, 8):
        out = projector(torch.randn(3, 32, size, size))
        assert out.shape == (3, 780)
        assert torch.isfinite(out).all()
    constant = projector(torch.ones(1, 32, 4, 4, requires_grad=True))
    constant.sum().backward()  # constant channels: std pooling must keep gradients finite
    assert all(torch.isfinite(p.grad).all() for p in projector.parameters())
