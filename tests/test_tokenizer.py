"""The behavioural tokenizer: shapes, the encode/quantize split, normalization, training,
determinism, the checkpoint directory and its compatibility checks.

Features are synthetic: a few latent factors pushed through a fixed random nonlinear map
(plus noise), with feature-specific offsets and scales so normalization matters.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from noa.errors import NoaError
from noa.tokenizer import (
    FEATURE_CATEGORIES,
    TokenizerConfig,
    check_compatible,
    codebook_stats,
    evaluate_tokenizer,
    load_tokenizer,
    reconstruction_mse,
    save_tokenizer,
    tokenizer_info,
    train_tokenizer,
)

T = 8
EPOCHS = 16
DIMS = {"initial": 5, "summary": 7, "temporal": 3}
NAMES = {f: [f"{f}_{i}" for i in range(d)] for f, d in DIMS.items()}


def synthetic_features(n: int, seed: int, factors: int = 3, noise: float = 0.05) -> dict[str, torch.Tensor]:
    """Raw features driven by ``factors`` latent variables; the map itself is fixed (seed 0)."""
    fixed = torch.Generator().manual_seed(0)
    draw = torch.Generator().manual_seed(seed)

    def random_map(dim: int):
        a = torch.randn(factors, 16, generator=fixed)
        b = torch.randn(16, dim, generator=fixed) / 4
        scale = torch.rand(dim, generator=fixed) * 10 + 0.1
        offset = torch.randn(dim, generator=fixed) * 5
        return lambda u: (torch.tanh(u @ a) @ b) * scale + offset

    maps = {f: random_map(d) for f, d in DIMS.items()}
    decay = random_map(DIMS["temporal"])
    u = torch.randn(n, factors, generator=draw)
    t = torch.linspace(0, 1, T + 1)[None, :, None]
    rate = torch.sigmoid(decay(u) / 5)[:, None, :] * 3
    temporal = maps["temporal"](u)[:, None, :] * torch.exp(-rate * t) * torch.cos(6 * t + u[:, :1, None])
    feats = {"initial": maps["initial"](u), "summary": maps["summary"](u), "temporal": temporal}
    return {f: (x + noise * x.std(dim=0) * torch.randn(x.shape, generator=draw)).float() for f, x in feats.items()}


def small_config(**overrides) -> TokenizerConfig:
    values = dict(
        feature_dims=dict(DIMS),
        feature_names=copy.deepcopy(NAMES),
        timesteps=T,
        channels=2,
        grid=16,
        latent_dim=8,
        levels=2,
        codebook_size=16,
        hidden=32,
    )
    values.update(overrides)
    return TokenizerConfig(**values)


@pytest.fixture(scope="module")
def splits():
    return synthetic_features(480, seed=1), synthetic_features(160, seed=2)


@pytest.fixture(scope="module")
def trained(splits):
    train, val = splits
    model, history = train_tokenizer(
        train,
        val,
        small_config(),
        epochs=EPOCHS,
        batch_size=64,
        lr=3e-3,
        seed=7,
        device="cpu",
        log=lambda _: None,
        progress=False,
    )
    return model, history


@pytest.fixture(scope="module")
def saved(trained, splits, tmp_path_factory):
    model, history = trained
    out = tmp_path_factory.mktemp("tok") / "vqvae"
    save_tokenizer(model, out, history, evaluate_tokenizer(model, splits[1]))
    return out


def test_config_round_trips_and_rejects_bad_input():
    cfg = small_config()
    assert TokenizerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(NoaError, match="unknown keys"):
        TokenizerConfig.from_dict({**cfg.to_dict(), "surprise": 1})
    with pytest.raises(NoaError, match="initial"):
        small_config(feature_dims={**DIMS, "initial": 4})
    with pytest.raises(NoaError, match="ema_decay"):
        small_config(ema_decay=1.5)
    with pytest.raises(NoaError, match=r"dead_code_threshold must be below codebook_size \(16\)"):
        small_config(dead_code_threshold=16)


def test_shapes_sizes_and_slices(trained, splits):
    model, _ = trained
    val = splits[1]
    n, levels, width = val["initial"].shape[0], model.config.levels, model.config.latent_dim
    latents = model.encode(val)
    assert len(latents) == len(FEATURE_CATEGORIES) * levels == len(model.codebook_sizes)
    assert all(z.shape == (n, width) for z in latents)
    assert model.latent_dim == sum(z.shape[1] for z in latents) == len(FEATURE_CATEGORIES) * levels * width
    flat = torch.cat(latents, dim=1)
    for i, category in enumerate(FEATURE_CATEGORIES):
        assert torch.equal(
            flat[:, model.category_slices[category]], torch.cat(latents[i * levels : (i + 1) * levels], dim=1)
        )
    z_q, indices = model.quantize(latents)
    assert len(z_q) == len(indices) == len(latents)
    for q, idx, size in zip(z_q, indices, model.codebook_sizes):
        assert q.shape == (n, width)
        assert idx.dtype == torch.long and idx.shape == (n,)
        assert 0 <= int(idx.min()) and int(idx.max()) < size
    recon = model.decode(z_q)
    assert recon["initial"].shape == (n, DIMS["initial"])
    assert recon["summary"].shape == (n, DIMS["summary"])
    assert recon["temporal"].shape == (n, T + 1, DIMS["temporal"])


def test_quantize_picks_nearest_code_and_levels_are_residuals(trained, splits):
    model, _ = trained
    latents = model.encode(splits[1])
    z_q, indices = model.quantize(latents)
    for (category, level), z, q, idx in zip(model.entries, latents, z_q, indices):
        codebook = model.quantizers[category][level].codebook
        assert torch.equal(q, codebook[idx])
        best = torch.cdist(z, codebook).min(dim=1).values
        assert torch.allclose((z - q).norm(dim=1), best, atol=1e-5)
    levels = model.config.levels
    for i in range(0, len(latents), levels):
        for level in range(1, levels):
            assert torch.allclose(latents[i + level], latents[i + level - 1] - z_q[i + level - 1], atol=1e-6)


def test_eval_paths_have_no_side_effects_and_no_batch_coupling(trained, splits):
    model, _ = trained
    val = splits[1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    latents = model.encode(val)
    model.quantize(latents)
    model(val)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    alone = model.encode({f: val[f][3:4] for f in FEATURE_CATEGORIES})
    assert all(torch.allclose(a[0], b[3], atol=1e-5) for a, b in zip(alone, latents))


def test_normalization_uses_train_stats_and_is_applied_in_encode(trained, splits):
    model, _ = trained
    train, val = splits
    assert torch.allclose(model.mean_initial, train["initial"].mean(dim=0), rtol=1e-5, atol=1e-5)
    assert torch.allclose(model.std_summary, train["summary"].std(dim=0, unbiased=False), rtol=1e-4)
    assert torch.allclose(model.mean_temporal, train["temporal"].mean(dim=(0, 1)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model.mean_initial, val["initial"].mean(dim=0), rtol=1e-3, atol=1e-3)

    normed = model.normalize(val)
    identity = copy.deepcopy(model)
    for category in FEATURE_CATEGORIES:
        getattr(identity, f"mean_{category}").zero_()
        getattr(identity, f"std_{category}").fill_(1.0)
    raw_latents = model.encode(val)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(identity.encode(normed), raw_latents))
    assert not torch.allclose(model.encode(normed)[0], raw_latents[0])

    constant = {f: x.clone() for f, x in train.items()}
    constant["summary"][:, 0] = 3.0
    identity.set_normalization(constant)
    assert float(identity.std_summary[0]) > 0
    assert torch.isfinite(identity.normalize(constant)["summary"]).all()


def test_training_reduces_val_reconstruction_error(trained, splits):
    model, history = trained
    assert set(history) == {"train_loss", "val_loss", "val_recon"}
    assert all(len(v) == EPOCHS for v in history.values())
    assert history["val_recon"][-1] < 0.5 * history["val_recon"][0]
    mse = reconstruction_mse(model, splits[1], batch_size=50)
    assert set(mse) == {*FEATURE_CATEGORIES, "total"}
    assert mse["total"] == pytest.approx(history["val_recon"][-1], rel=1e-6)
    assert mse["total"] < 0.3
    stats = codebook_stats(model, splits[1])
    assert [(s["category"], s["level"]) for s in stats] == model.entries
    for s in stats:
        assert s["utilization"] == s["used"] / s["size"] > 0.5
        assert 1.0 <= s["perplexity"] <= s["used"] + 1e-9


def test_training_is_deterministic_and_leaves_global_rng_alone(splits):
    train = {f: x[:160] for f, x in splits[0].items()}
    val = {f: x[:40] for f, x in splits[1].items()}
    kwargs = dict(epochs=2, batch_size=32, lr=3e-3, device="cpu", log=lambda _: None, progress=False)
    rng_before = torch.get_rng_state()
    first, _ = train_tokenizer(train, val, small_config(), seed=3, **kwargs)
    assert torch.equal(torch.get_rng_state(), rng_before)
    second, _ = train_tokenizer(train, val, small_config(), seed=3, **kwargs)
    other, _ = train_tokenizer(train, val, small_config(), seed=4, **kwargs)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_non_finite_features_are_refused(splits):
    train, val = splits
    bad = {f: x.clone() for f, x in train.items()}
    bad["temporal"][5, 2, 1] = math.nan
    with pytest.raises(NoaError, match="temporal.*NaN"):
        train_tokenizer(
            bad, val, small_config(), epochs=1, batch_size=64, lr=1e-3, seed=0, device="cpu", progress=False
        )


def test_save_load_round_trip_is_exact(trained, saved, splits):
    model, _ = trained
    loaded = load_tokenizer(saved)
    val = splits[1]
    with torch.no_grad():
        ours, theirs = model.encode(val), loaded.encode(val)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
        (q1, i1), (q2, i2) = model.quantize(ours), loaded.quantize(theirs)
        assert all(torch.equal(a, b) for a, b in zip(q1 + i1, q2 + i2))
        r1, r2 = model.decode(q1), loaded.decode(q2)
        assert all(torch.equal(r1[f], r2[f]) for f in FEATURE_CATEGORIES)
    assert loaded.config == model.config
    assert {p.name for p in saved.iterdir()} == {"config.json", "weights.pt", "history.json", "metrics.json"}
    assert torch.load(saved / "weights.pt", weights_only=True).keys() == model.state_dict().keys()


def test_loaded_tokenizer_is_frozen_but_passes_gradients_to_features(saved, splits):
    rng_before = torch.get_rng_state()
    loaded = load_tokenizer(saved)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    features = {f: x[:16].clone().requires_grad_(True) for f, x in splits[1].items()}
    latents = loaded.encode(features)
    z_q, _ = loaded.quantize(latents)
    commit = torch.stack([torch.nn.functional.mse_loss(z, q.detach()) for z, q in zip(latents, z_q)]).mean()
    commit.backward()
    for category in FEATURE_CATEGORIES:
        grad = features[category].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in loaded.parameters())


def test_save_refuses_to_overwrite(trained, saved):
    model, history = trained
    with pytest.raises(NoaError, match="not empty"):
        save_tokenizer(model, saved, history, {})
    save_tokenizer(model, saved, history, json.loads((saved / "metrics.json").read_text()), overwrite=True)
    assert not list(saved.glob(".*.tmp"))


def test_load_errors_name_the_problem(saved, tmp_path):
    with pytest.raises(NoaError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")

    def broken(name: str, content: bytes | None):
        target = tmp_path / name
        target.mkdir()
        for f in saved.iterdir():
            (target / f.name).write_bytes(f.read_bytes())
        if content is None:
            (target / name.split("-")[1]).unlink()
        else:
            (target / name.split("-")[1]).write_bytes(content)
        return target

    with pytest.raises(NoaError, match="config.json is missing"):
        load_tokenizer(broken("a-config.json", None))
    with pytest.raises(NoaError, match="weights.pt is missing"):
        load_tokenizer(broken("b-weights.pt", None))
    with pytest.raises(NoaError, match="weights.pt is corrupt"):
        load_tokenizer(broken("c-weights.pt", b"not a torch file" * 8))
    truncated = (saved / "weights.pt").read_bytes()[:500]
    with pytest.raises(NoaError, match="weights.pt is corrupt"):
        load_tokenizer(broken("d-weights.pt", truncated))
    with pytest.raises(NoaError, match="config.json is not valid JSON"):
        load_tokenizer(broken("e-config.json", b'{"format": "noa-tok'))
    config = json.loads((saved / "config.json").read_text())
    config["config"]["hidden"] = 48
    with pytest.raises(NoaError, match="weights.pt does not fit"):
        load_tokenizer(broken("f-config.json", json.dumps(config).encode()))


def test_check_compatible_names_both_sides():
    # The feature columns are checked when a tokenizer is loaded (tests/test_tokenizer_protocol.py);
    # against the data, what it fits: T, channels and grid.
    cfg = small_config()
    check_compatible(cfg, timesteps=T, channels=2, grid=16, source="dataset d.h5")
    with pytest.raises(NoaError) as err:
        check_compatible(cfg, timesteps=T + 4, channels=3, grid=32, source="dataset d.h5")
    message = str(err.value)
    for expected in (
        f"timesteps: tokenizer has {T}, dataset d.h5 has {T + 4}",
        "channels: tokenizer has 2, dataset d.h5 has 3",
        "grid: tokenizer has 16, dataset d.h5 has 32",
    ):
        assert expected in message


def test_encode_refuses_features_of_the_wrong_shape(trained, splits):
    model, _ = trained
    wrong = dict(splits[1])
    wrong["temporal"] = wrong["temporal"][:, :-1]
    with pytest.raises(NoaError, match="temporal features have shape"):
        model.encode(wrong)


def test_tokenizer_info_summarises_the_directory(saved):
    text = tokenizer_info(saved)
    for expected in (
        "recon MSE",
        "total",
        "temporal",
        "perplexity",
        "used",
        f"history ({EPOCHS} epochs)",
        "latent_dim 48",
    ):
        assert expected in text


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_saves_and_loads_on_cuda(splits, tmp_path):
    train = {f: x[:160] for f, x in splits[0].items()}
    val = {f: x[:40] for f, x in splits[1].items()}
    model, history = train_tokenizer(
        train,
        val,
        small_config(),
        epochs=2,
        batch_size=32,
        lr=3e-3,
        seed=0,
        device="cuda",
        log=lambda _: None,
        progress=False,
    )
    save_tokenizer(model, tmp_path / "gpu", history, evaluate_tokenizer(model, val))
    on_gpu, on_cpu = load_tokenizer(tmp_path / "gpu", device="cuda"), load_tokenizer(tmp_path / "gpu")
    gpu_latents = on_gpu.encode({f: x.cuda() for f, x in val.items()})
    assert all(z.is_cuda for z in gpu_latents)
    assert all(torch.allclose(a.cpu(), b, atol=1e-4) for a, b in zip(gpu_latents, on_cpu.encode(val)))
