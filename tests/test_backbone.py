"""`--backbone`: the θ-generated stack beside the U-AFNO (hybrid) or alone (generated) in every
stage (train, exact resume, fine-tune, noa.load, diagnose, compare, bf16), and checkpoints
written before it existed computing exactly what they did."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import noa
from helpers import SMALL, assert_same_state, run_args
from noa.cli import main
from noa.diagnostics import diagnose
from noa.errors import NoaError
from noa.families.family import load_family
from noa.model import UAFNO, UAFNOConfig
from noa.model.generated import discrete_dimensions, largest_shape
from noa.operators.space import CNO_SPACE
from noa.train.checkpoint import build_model, load_checkpoint
from noa.train.loop import train

# A generated stack small enough for the tiny dataset (its family is the whole space: 64 channels).
GEN = dict(generated_channels=8, generated_layers=2, generated_kernel=3, generated_banks=2)


def _inputs(batch: int = 2, grid: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, grid, grid, generator=g), torch.rand(batch, CNO_SPACE.size, generator=g)


def _hybrid_args(dataset: Path, tokenizer: Path, ck: Path, **kw) -> dict:
    # 3 batches per epoch, all three losses on: L_latent reads the U-AFNO bottleneck the hybrid keeps.
    return run_args(dataset, ck, vqvae_path=str(tokenizer), enable_latent_loss=True, backbone="hybrid", **GEN, **kw)


@pytest.fixture(scope="module")
def hybrid(tiny_dataset: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ck = tmp_path_factory.mktemp("hybrid")
    train(_hybrid_args(tiny_dataset, tiny_tokenizer, ck))
    return ck


# ----------------------------------------------------------------------------- the model


def test_a_checkpoint_config_without_the_backbone_computes_what_it_did_before_the_generated_stack() -> None:
    # The figures were computed by the code before the generated stack existed (commit 90adba7)
    # with this seed and these inputs: the same modules, built in the same order, compute them.
    old = dict(SMALL, update_rule=None, theta_box=None)
    torch.manual_seed(0)
    model = UAFNO(UAFNOConfig.from_dict(old)).eval()
    x, p = _inputs()
    with torch.no_grad():
        out, bottleneck = model(x, p, True)
    assert model.config.backbone == "uafno" and model.generated is None
    assert len(model.state_dict()) == 84 and not any(k.startswith("generated") for k in model.state_dict())
    assert (out - x).double().abs().sum().item() == pytest.approx(4.066065664635971, rel=1e-5)
    assert bottleneck.double().sum().item() == pytest.approx(328.36726688221097, rel=1e-5)
    torch.testing.assert_close(
        (out - x)[0, 0, 0, :3], torch.tensor([-0.0023363828659057617, -0.006735861301422119, -0.003400146961212158])
    )


def test_the_generated_stack_starts_near_zero_so_the_hybrid_starts_as_its_uafno() -> None:
    x, p = _inputs()
    torch.manual_seed(0)
    uafno = UAFNO(UAFNOConfig(**SMALL))
    generated = UAFNO(UAFNOConfig(**SMALL, backbone="generated", **GEN))
    hybrid = UAFNO(UAFNOConfig(**SMALL, backbone="hybrid", **GEN))
    hybrid.load_state_dict({**uafno.state_dict(), **generated.state_dict()})  # both branches' weights
    assert not any(name.startswith(("stem", "afno", "head")) for name in generated.state_dict())
    with torch.no_grad():
        f_u, f_h, f_g = (m(x, p) - x for m in (uafno, hybrid, generated))
    assert 0 < f_g.abs().max() < 0.05  # near zero at init, yet not zero: it already depends on x and θ
    torch.testing.assert_close(f_h, f_u + f_g, rtol=0, atol=1e-6)  # f = f_uafno + f_generated
    # θ alone (the state fixed) changes the generated stack's f: it is θ-generated, not a fixed net.
    with torch.no_grad():
        other = generated(x, torch.rand(p.shape, generator=torch.Generator().manual_seed(5))) - x
    assert (other - f_g).abs().max() > 0.01 * f_g.abs().max()


def test_the_generated_stack_is_sized_from_the_family_and_reads_discrete_dimensions_one_hot() -> None:
    assert largest_shape(CNO_SPACE, load_family("starter").unit_box()) == dict(channels=20, layers=3, kernel=5)
    assert largest_shape(CNO_SPACE, load_family("spinlock").unit_box()) == dict(channels=64, layers=5, kernel=7)
    discrete = discrete_dimensions(CNO_SPACE)
    assert discrete == [[0, 4], [1, 49], [2, 3], [3, 5], [6, 2]]  # n_layers .. update_policy
    model = UAFNO(UAFNOConfig(**SMALL, backbone="generated", **GEN, theta_discrete=discrete))
    assert model.generated is not None
    theta = CNO_SPACE.encode(
        dict(CNO_SPACE.decode([0.5] * CNO_SPACE.size), kernel_size=7, n_layers=3, activation="sin")
    ).float()[None]
    codes = model.generated.codes(theta)[0]
    assert codes.shape == (4 + 49 + 3 + 5 + 2,) and codes.sum() == 5
    assert codes[1] == 1 and codes[4 + 49 + 2] == 1 and codes[4 + 49 + 3 + 3] == 1  # 3 layers, kernel 7, sin
    with pytest.raises(NoaError, match="generated_kernel must be odd"):
        UAFNOConfig(**SMALL, backbone="hybrid", generated_kernel=4)
    with pytest.raises(NoaError, match="theta_discrete must be"):
        UAFNOConfig(**SMALL, theta_discrete=[[CNO_SPACE.size, 2]])  # no such θ dimension
    with pytest.raises(NoaError, match="backbone must be one of uafno, hybrid, generated"):
        UAFNOConfig(**SMALL, backbone="hyper")


def test_bf16_autocast_runs_the_hybrid_close_to_float32() -> None:
    torch.manual_seed(0)
    model = UAFNO(UAFNOConfig(**SMALL, backbone="hybrid", **GEN))
    x, p = _inputs()
    with torch.no_grad():
        ref = model(x, p) - x
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, p)
    assert low.dtype == torch.float32  # the state stays float32 (x + f promotes)
    assert (low - x - ref).abs().max() < 0.05 * ref.abs().max()


# ----------------------------------------------------------------------------- the stages


def test_a_hybrid_run_records_its_backbone_and_resumes_exactly(
    hybrid: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    final = load_checkpoint(hybrid / "epoch_2.pt")
    assert final["config"]["backbone"] == "hybrid" and final["args"]["backbone"] == "hybrid"
    assert {k: final["config"][f"generated_{k}"] for k in ("channels", "layers", "kernel", "banks")} == {
        "channels": 8,
        "layers": 2,
        "kernel": 3,
        "banks": 2,
    }
    assert final["config"]["theta_discrete"] == discrete_dimensions(CNO_SPACE)
    assert any(k.startswith("generated.") for k in final["model_state_dict"])
    assert final["alignment_state"] is not None  # L_latent trained its projector on the U-AFNO bottleneck
    ck = tmp_path / "ck"
    train(_hybrid_args(tiny_dataset, tiny_tokenizer, ck, max_steps=2))
    train_log.clear()
    train({"resume": str(ck / "step_2.pt"), "device": "cpu"})  # the backbone comes from the checkpoint
    assert_same_state(final, load_checkpoint(ck / "epoch_2.pt"))
    header = next(line for line in train_log if line.startswith("noa train:"))
    assert "U-AFNO + θ-generated stack (8 channels, 2 layers, 3x3, 2 banks)" in header


def test_a_fine_tune_keeps_the_backbone_and_another_backbone_is_refused_in_one_line(
    hybrid: Path, tiny_dataset: Path, tmp_path: Path, train_log: list[str], capsys: pytest.CaptureFixture
) -> None:
    train(
        {
            "init_from": str(hybrid / "epoch_2.pt"),
            "dataset": str(tiny_dataset),
            "epochs": 1,
            "n_samples": 16,
            "checkpoint_dir": str(tmp_path / "ft"),
            "device": "cpu",
            "timesteps": 8,
            "bptt_window": 2,
        }
    )
    tuned = load_checkpoint(tmp_path / "ft" / "epoch_1.pt")
    assert tuned["config"]["backbone"] == "hybrid"
    assert any("--backbone hybrid" in line and "kept:" in line for line in train_log)
    argv = [
        "train",
        "--init-from",
        str(hybrid / "epoch_2.pt"),
        "--dataset",
        str(tiny_dataset),
        "--backbone",
        "uafno",
        "--checkpoint-dir",
        str(tmp_path / "other"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--backbone: checkpoint hybrid, asked uafno" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_a_fine_tune_adds_the_generated_stack_beside_a_trained_uafno(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    pretrained = tmp_path / "uafno"
    train(run_args(tiny_dataset, pretrained, epochs=1))
    source = load_checkpoint(pretrained / "epoch_1.pt")
    # One batch at a negligible learning rate: the fine-tune's weights are where it started.
    flags = dict(epochs=1, lr=1e-12, max_steps=1, checkpoint_dir=str(tmp_path / "ft"), device="cpu")
    train(
        {
            "init_from": str(pretrained / "epoch_1.pt"),
            "dataset": str(tiny_dataset),
            "backbone": "hybrid",
            **GEN,
            **flags,
        }
    )
    assert any("the θ-generated stack beside them starts near zero" in line for line in train_log)
    tuned = load_checkpoint(tmp_path / "ft" / "step_1.pt")
    assert tuned["config"]["backbone"] == "hybrid" and tuned["config"]["generated_channels"] == 8
    for key, value in source["model_state_dict"].items():
        torch.testing.assert_close(tuned["model_state_dict"][key], value, rtol=0, atol=1e-9, msg=key)
    (uafno, _), (hybrid, _) = build_model(source), build_model(tuned)
    x, p = _inputs()
    with torch.no_grad():
        f_u, f_h = uafno(x, p) - x, hybrid(x, p) - x
    assert 0 < (f_h - f_u).abs().max() < 0.1 * f_u.abs().max()  # the stack is there, and starts near zero
    with pytest.raises(NoaError, match="--backbone: checkpoint uafno, asked generated"):
        train(
            {
                "init_from": str(pretrained / "epoch_1.pt"),
                "dataset": str(tiny_dataset),
                "backbone": "generated",
                "checkpoint_dir": str(tmp_path / "refused"),
                "device": "cpu",
            }
        )


def test_the_generated_stack_alone_trains_and_refuses_l_latent_in_one_line(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ck = tmp_path / "gen"
    # 4 encoder levels would leave the U-AFNO a 1x1 bottleneck on the 16x16 grid: the stack alone never halves it.
    train(run_args(tiny_dataset, ck, epochs=1, backbone="generated", **{**GEN, "encoder_levels": 4}))
    saved = load_checkpoint(ck / "epoch_1.pt")
    assert saved["config"]["backbone"] == "generated"
    assert not any(k.startswith(("stem.", "afno.", "head.")) for k in saved["model_state_dict"])
    model, _ = build_model(saved)
    x, p = _inputs()
    with torch.no_grad():
        assert torch.isfinite(model(x, p)).all()
    report = diagnose(ck / "best_model.pt", None, None, n_samples=4, out_dir=tmp_path / "diag", log=lambda _: None)
    assert report.rollout.overall_mse > 0  # diagnose takes the grid the U-AFNO alone could not
    argv = [
        "train",
        "--dataset",
        str(tiny_dataset),
        "--backbone",
        "generated",
        "--vqvae-path",
        str(tiny_tokenizer),
        "--enable-latent-loss",
        "--checkpoint-dir",
        str(tmp_path / "refused"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--backbone generated does not have" in err and "--backbone hybrid" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "refused").exists()


def test_noa_load_diagnose_and_compare_read_a_hybrid_checkpoint(
    hybrid: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    best = hybrid / "best_model.pt"
    agent = noa.load(best, device="cpu")
    assert "U-AFNO + θ-generated stack (8 channels, 2 layers, 3x3, 2 banks)" in repr(agent)
    model, _ = build_model(load_checkpoint(best))
    x, p = _inputs(1)
    frames = agent.rollout(x, p, timesteps=2)
    with torch.no_grad():
        expected = model(model(x, p), p)
    torch.testing.assert_close(frames[:, -1], expected, rtol=0, atol=0)
    result = diagnose(best, tiny_tokenizer, None, n_samples=4, out_dir=tmp_path / "diag", log=lambda _: None)
    assert result.alignment is not None and result.rollout.overall_mse > 0  # the projector reads the bottleneck
    assert "1 AFNO blocks; --backbone hybrid" in (tmp_path / "diag" / "report.md").read_text()
    other = tmp_path / "uafno"
    train(run_args(tiny_dataset, other, epochs=1))
    argv = [
        "compare",
        str(best),
        str(other / "best_model.pt"),
        "--dataset",
        str(tiny_dataset),
        "--out",
        str(tmp_path / "cmp"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0 and (tmp_path / "cmp" / "summary.json").exists()


# ----------------------------------------------------------------------------- slow: torchrun, torch.compile


@pytest.mark.slow
def test_two_ranks_train_the_generated_stack_as_one_rank_does(tiny_dataset: Path, tmp_path: Path) -> None:
    # The generated stack alone: no GroupNorm, so no bias whose true gradient is 0 (see
    # test_distributed._close); every weight within half an Adam step of one rank's.
    one, two = tmp_path / "one", tmp_path / "two"
    train(run_args(tiny_dataset, one, backbone="generated", **GEN))
    flags = []
    for key, value in run_args(tiny_dataset, two, backbone="generated", batch_size=2, **GEN).items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "noa"]
    done = subprocess.run(
        [*cmd, "train", *flags], capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 4 (2 per rank)" in done.stdout
    a, b = load_checkpoint(one / "epoch_2.pt"), load_checkpoint(two / "epoch_2.pt")
    assert b["config"]["backbone"] == "generated"
    for key in a["model_state_dict"]:
        torch.testing.assert_close(a["model_state_dict"][key], b["model_state_dict"][key], rtol=0, atol=5e-4, msg=key)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on a CPU needs a C++ compiler"
)
def test_the_compiled_generated_step_agrees_with_eager_on_a_cpu() -> None:
    # The stack alone: the U-AFNO's compiled step is test_execution's (with it, compiling took 7 minutes).
    torch.manual_seed(0)
    model = UAFNO(UAFNOConfig(**SMALL, backbone="generated", **GEN, theta_discrete=discrete_dimensions(CNO_SPACE)))
    x, p = _inputs()

    def loss_and_grads(step) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        out, bottleneck = step(x, p, True)
        assert bottleneck.shape == (2, 0, 1, 1)  # the stack alone has no bottleneck
        loss = out.pow(2).mean()
        loss.backward()
        return loss.detach(), {k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None}

    ref_loss, ref_grads = loss_and_grads(model)
    loss, grads = loss_and_grads(torch.compile(model))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    assert grads.keys() == ref_grads.keys() and any(k.startswith("generated.") for k in grads)
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], rtol=1e-3, atol=1e-6, msg=key)
