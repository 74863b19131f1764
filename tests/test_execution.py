"""How the step executes changes speed and memory, not the result: each mode against float32
eager, the reference, with stated tolerances; exact where exactness is promised."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from helpers import SMALL, assert_same_state, run_args
from noa.cli import main
from noa.data.loader import SampleSource, usable_rows
from noa.errors import NoaError
from noa.model import UAFNO, LatentProjector, UAFNOConfig
from noa.tokenizer import load_tokenizer
from noa.train.checkpoint import load_checkpoint
from noa.train.execution import Execution, resolve_execution
from noa.train.loop import train
from noa.train.rollout import sample_steps
from noa.train.step import BatchLosses, Objective, train_batch

# Tolerances against float32 eager, relative. bf16 keeps 8 bits of mantissa (rounding ~4e-3 per
# operation); the state stays float32, so errors do not compound step over step.
BF16_LOSS_RTOL = 2e-2
BF16_GRAD_COSINE = 0.995
COMPILED_RTOL = 1e-4  # same float32 arithmetic, other kernel fusion and summation order
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _models(seed: int, device: str, tokenizer_latent_dim: int | None = None) -> tuple[UAFNO, LatentProjector | None]:
    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(seed)
        model = UAFNO(UAFNOConfig(**SMALL)).to(device)
        projector = (
            LatentProjector(model.bottleneck_channels, tokenizer_latent_dim, 16).to(device)
            if tokenizer_latent_dim
            else None
        )
    return model, projector


def _batch(dataset: Path, device: str, n: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = SampleSource(dataset, usable_rows(dataset, None), with_trajectories=True)
    batch = src.get_batch(list(range(n)))
    src.close()
    return batch["ic"].to(device), batch["params"].to(device), batch["trajectory"].mean(dim=1).to(device)


def _one_batch(
    execution: Execution, dataset: Path, tokenizer_dir: Path | None, device: str = "cpu"
) -> tuple[BatchLosses, dict[str, torch.Tensor]]:
    """All three losses (L_traj alone without a tokenizer) and the gradients of one batch."""
    tokenizer = load_tokenizer(tokenizer_dir, device=device) if tokenizer_dir else None
    model, projector = _models(0, device, tokenizer.latent_dim if tokenizer else None)
    steps = sample_steps(8, 3) if tokenizer else []
    obj = Objective(model, projector, tokenizer, 0.5, 0.5, 4, steps, execution=execution)
    losses = train_batch(obj, *_batch(dataset, device, n=4))
    grads = {f"model.{k}": p.grad.detach().clone() for k, p in model.named_parameters()}
    if projector is not None:
        grads.update({f"projector.{k}": p.grad.detach().clone() for k, p in projector.named_parameters()})
    return losses, grads


def _close(a: float | None, b: float | None, rtol: float) -> bool:
    return (a is None and b is None) or abs(a - b) <= rtol * abs(b)


def _assert_losses_close(got: BatchLosses, ref: BatchLosses, rtol: float) -> None:
    for key, value in ref.as_dict().items():
        assert _close(got.as_dict()[key], value, rtol), (key, got.as_dict()[key], value)


def _grad_agreement(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Cosine similarity and relative norm error of the whole flattened gradient."""
    a = torch.cat([got[k].flatten().double() for k in ref])
    b = torch.cat([ref[k].flatten().double() for k in ref])
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0)), float((a - b).norm() / b.norm())


# ------------------------------------------------------------------ resolution and refusals


def test_defaults_are_float32_eager_on_a_cpu() -> None:
    assert resolve_execution("cpu") == Execution("cpu", "fp32", False, False, False)
    assert resolve_execution("cpu", "bf16", True, False, True) == Execution("cpu", "bf16", True, False, True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(compile=True, cuda_graphs=True), "--cuda-graphs needs a CUDA device"),
        (dict(precision="fp16"), "--precision must be one of auto, fp32, bf16"),
    ],
)
def test_impossible_modes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(NoaError, match=message):
        resolve_execution("cpu", **kwargs)


def test_cuda_graphs_without_compile_or_with_checkpointing_are_refused() -> None:
    # Checked before the device: the combination is wrong on any machine.
    with pytest.raises(NoaError, match="works through torch.compile; add --compile"):
        resolve_execution("cuda", cuda_graphs=True)
    with pytest.raises(NoaError, match="does not combine with CUDA graphs"):
        resolve_execution("cuda", compile=True, cuda_graphs=True, activation_checkpointing=True)
    with pytest.raises(NoaError, match="--cuda-graphs is for one process"):
        resolve_execution("cuda", compile=True, cuda_graphs=True, world_size=2)


def test_the_cli_refuses_cuda_graphs_on_a_cpu_in_one_line(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        [
            "train",
            "--dataset",
            str(tiny_dataset),
            "--device",
            "cpu",
            "--compile",
            "--cuda-graphs",
            "--timesteps",
            "8",
            "--bptt-window",
            "4",
            "--checkpoint-dir",
            str(tmp_path / "ck"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --cuda-graphs needs a CUDA device") and "Traceback" not in err, err
    assert not (tmp_path / "ck").exists()


# ------------------------------------------------------------------ agreement on a CPU


def test_bf16_autocast_agrees_with_float32(tiny_dataset: Path, tiny_tokenizer: Path) -> None:
    ref_losses, ref_grads = _one_batch(Execution(), tiny_dataset, tiny_tokenizer)
    losses, grads = _one_batch(Execution(precision="bf16"), tiny_dataset, tiny_tokenizer)
    _assert_losses_close(losses, ref_losses, BF16_LOSS_RTOL)
    cosine, _ = _grad_agreement(grads, ref_grads)
    assert cosine > BF16_GRAD_COSINE, cosine
    assert losses.traj != ref_losses.traj  # bf16 did run: it rounds differently


def test_bf16_keeps_the_state_and_bottleneck_float32(tiny_dataset: Path) -> None:
    model, _ = _models(0, "cpu")
    obj = Objective(model, None, None, 0.5, 0.5, 4, [], execution=Execution(precision="bf16"))
    ic, params, _ = _batch(tiny_dataset, "cpu")
    x, bottleneck = obj.train_step(ic, params, return_bottleneck=True)
    assert x.dtype == torch.float32 and bottleneck.dtype == torch.float32


def test_activation_checkpointing_gives_the_same_gradients_exactly(tiny_dataset: Path, tiny_tokenizer: Path) -> None:
    ref_losses, ref_grads = _one_batch(Execution(), tiny_dataset, tiny_tokenizer)
    losses, grads = _one_batch(Execution(activation_checkpointing=True), tiny_dataset, tiny_tokenizer)
    assert losses == ref_losses
    for key in ref_grads:
        assert torch.equal(grads[key], ref_grads[key]), key


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on a CPU needs a C++ compiler"
)
def test_compiled_step_agrees_with_eager_on_a_cpu(tiny_dataset: Path) -> None:
    # L_traj alone: one compiled graph (forward + backward), about 90 s of compilation on 2 cores.
    ref_losses, ref_grads = _one_batch(Execution(), tiny_dataset, None)
    losses, grads = _one_batch(Execution(compile=True), tiny_dataset, None)
    _assert_losses_close(losses, ref_losses, COMPILED_RTOL)
    cosine, rel = _grad_agreement(grads, ref_grads)
    assert rel < COMPILED_RTOL, (cosine, rel)


def test_bf16_training_resumes_exactly_within_its_mode(tiny_dataset: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(run_args(tiny_dataset, straight, precision="bf16"))
    train(run_args(tiny_dataset, split, precision="bf16", max_steps=2))
    train({"resume": str(split / "step_2.pt"), "dataset": str(tiny_dataset), "device": "cpu"})
    a, b = load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(split / "epoch_2.pt")
    assert b["args"]["precision"] == "bf16"  # inherited by the resume
    for key in a["model_state_dict"]:
        assert torch.equal(a["model_state_dict"][key], b["model_state_dict"][key]), key


def test_the_run_header_says_how_the_step_runs(tiny_dataset: Path, tmp_path: Path, train_log: list[str]) -> None:
    train(
        run_args(tiny_dataset, tmp_path / "ck", precision="bf16", activation_checkpointing=True, epochs=1, max_steps=1)
    )
    assert any("step: bf16, eager, activation checkpointing" in line for line in train_log), train_log[:3]


# ------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@CUDA
def test_cuda_training_with_the_defaults_resumes_exactly(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    args = dict(vqvae_path=str(tiny_tokenizer), enable_latent_loss=True, device="cuda")
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(run_args(tiny_dataset, straight, **args))
    assert any("step: bf16, eager" in line for line in train_log), train_log[:3]
    train(run_args(tiny_dataset, split, max_steps=2, **args))
    train(
        {"resume": str(split / "step_2.pt"), "dataset": str(tiny_dataset), "device": "cuda", "enable_latent_loss": True}
    )
    assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(split / "epoch_2.pt"))


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize(
    "execution, loss_rtol, min_cosine",
    [
        (Execution("cuda", "bf16"), BF16_LOSS_RTOL, BF16_GRAD_COSINE),
        (Execution("cuda", "fp32", activation_checkpointing=True), 1e-6, 0.999999),
        (Execution("cuda", "fp32", compile=True), COMPILED_RTOL * 10, 0.9999),
        (Execution("cuda", "bf16", compile=True), BF16_LOSS_RTOL, BF16_GRAD_COSINE),
        (Execution("cuda", "bf16", compile=True, cuda_graphs=True), BF16_LOSS_RTOL, BF16_GRAD_COSINE),
    ],
    # Cheapest first: each compiled mode compiles for a minute or more.
    ids=["bf16-eager", "fp32-checkpointed", "fp32-compiled", "bf16-compiled", "bf16-cuda-graphs"],
)
def test_cuda_modes_agree_with_float32_eager(
    execution: Execution, loss_rtol: float, min_cosine: float, tiny_dataset: Path, tiny_tokenizer: Path
) -> None:
    # TF32 is off for the reference and the mode alike (torch's default for matmuls; convolutions
    # may use it, in both).
    ref_losses, ref_grads = _one_batch(Execution("cuda"), tiny_dataset, tiny_tokenizer, "cuda")
    losses, grads = _one_batch(execution, tiny_dataset, tiny_tokenizer, "cuda")
    _assert_losses_close(losses, ref_losses, loss_rtol)
    cosine, rel = _grad_agreement(grads, ref_grads)
    assert cosine > min_cosine, (cosine, rel)
    # Twice the same: a mode that is not repeatable cannot resume exactly.
    again_losses, again_grads = _one_batch(execution, tiny_dataset, tiny_tokenizer, "cuda")
    assert again_losses == losses
    for key in grads:
        assert torch.equal(again_grads[key], grads[key]), key


@pytest.mark.cuda
@CUDA
def test_host_synchronisations_do_not_grow_with_the_rollout(tiny_dataset: Path) -> None:
    # Losses stay on the device until the batch ends: a batch of 8 steps and one of 4 steps wait
    # for the GPU equally often (only to read the final loss values).
    import warnings

    model, _ = _models(0, "cuda")
    ic, params, target = _batch(tiny_dataset, "cuda", n=4)
    counts = {}
    for steps in (4, 8):
        obj = Objective(model, None, None, 0.5, 0.5, 2, [], execution=Execution("cuda", "bf16"))
        train_batch(obj, ic, params, target[:, : steps + 1])  # warm-up: allocator and handles
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_batch(obj, ic, params, target[:, : steps + 1])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[steps] = sum("synchronizing" in str(w.message) for w in caught)
    assert counts[4] == counts[8], counts
