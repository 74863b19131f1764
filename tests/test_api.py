"""The public API (docs/api.md): its example runs as written, and each wrapper is the toolkit's own code path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

import noa
from noa import CNO_SPACE, NoaError

REPO = Path(__file__).resolve().parents[1]
API_DOC = REPO / "docs" / "api.md"
TINY_MODEL = {"base_channels": 8, "encoder_levels": 2, "modes": 4, "afno_blocks": 1}


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best_model.pt of a one-epoch `noa train` run on the tiny dataset (grid 16, T 8)."""
    from noa.train.loop import train

    ckdir = tmp_path_factory.mktemp("noa")
    train(
        dict(
            dataset=str(tiny_dataset),
            n_samples=16,
            epochs=1,
            batch_size=4,
            lr=1e-3,
            bptt_window=4,
            timesteps=8,
            warmup_steps=1,
            checkpoint_dir=str(ckdir),
            save_every=0,
            device="cpu",
            **TINY_MODEL,
        )
    )
    return ckdir / "best_model.pt"


@pytest.fixture(scope="module")
def samples(tiny_dataset: Path) -> dict:
    """The first rows of the tiny dataset: what a replay needs and the stored trajectories."""
    with h5py.File(tiny_dataset, "r") as f:
        kinds = json.loads(f.attrs["ic_families"])  # the recorded name of the IC kinds
        rows = slice(0, 5)
        return {
            "params": torch.from_numpy(f["parameters/params"][rows]),
            "fields": torch.from_numpy(f["inputs/fields"][rows]),
            "kinds": [kinds[int(i)] for i in f["metadata/ic_family"][rows]],
            "ic_seeds": f["metadata/ic_seed"][rows].tolist(),
            "noise_seeds": f["metadata/noise_seed"][rows].tolist(),
            "trajectories": torch.from_numpy(f["trajectories"][rows]),
        }


def doc_example() -> str:
    """The first python block after '## Example' in docs/api.md."""
    text = API_DOC.read_text()
    section = text.split("## Example", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "docs/api.md has no python block under '## Example'"
    return match.group(1)


def test_the_doc_example_runs_on_a_tiny_trained_checkpoint(
    tiny_checkpoint: Path, tiny_tokenizer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = doc_example()
    substitutions = {
        '"noa-quickstart/checkpoints/noa/best_model.pt"': repr(str(tiny_checkpoint)),
        '"noa-quickstart/checkpoints/production/quickstart_vqvae"': repr(str(tiny_tokenizer)),
        "GRID, T = 32, 16": "GRID, T = 16, 8",  # the tiny dataset's grid and horizon
    }
    for old, new in substitutions.items():
        assert code.count(old) == 1, f"the example no longer contains {old} exactly once; update this test with it"
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, str(API_DOC), "exec"), namespace)  # noqa: S102 -- the doc's own example, by design
    assert namespace["noa_frames"].shape == (1, 9, 3, 16, 16)
    assert namespace["cno_frames"].shape == (1, 2, 9, 3, 16, 16)
    assert torch.isfinite(namespace["mse"]).all() and namespace["mse"][0] == 0  # frame 0 is the IC on both sides
    printed = capsys.readouterr().out
    assert "MSE at step T: NOA " in printed and "token agreement with the CNO: " in printed


def test_every_public_name_is_documented_and_import_noa_is_cheap() -> None:
    text = API_DOC.read_text()
    for name in noa.__all__:
        assert f"noa.{name}" in text or name in ("CNO_SPACE", "ParameterSpace"), name
        assert getattr(noa, name) is not None
    assert "CNO_SPACE.encode" in text
    probe = "import sys, noa; print('torch' in sys.modules); from noa import load; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
    ).stdout.split()
    assert out == ["False", "True"]
    with pytest.raises(AttributeError, match="no attribute 'rollout'"):
        noa.rollout  # noqa: B018


def test_the_theta_table_lists_the_parameter_space() -> None:
    text = API_DOC.read_text()
    for dim in CNO_SPACE.dims:
        values = ", ".join(f"`{c}`" for c in dim.choices) if dim.kind == "choice" else f"{dim.low:g} – {dim.high:g}"
        assert f"| `{dim.name}` | {dim.kind} | {values} | {dim.description} |" in text, dim.name


def test_ic_and_replay_rebuild_the_dataset_samples_bit_for_bit(samples: dict) -> None:
    for i, (kind, ic_seed, noise_seed) in enumerate(zip(samples["kinds"], samples["ic_seeds"], samples["noise_seeds"])):
        ic = noa.make_initial_condition(kind, grid=16, channels=3, seed=ic_seed)
        assert torch.equal(ic, samples["fields"][i])
        cno = noa.replay_cno(ic, samples["params"][i], 8, noise_seed=noise_seed)
        assert torch.equal(cno[0], samples["trajectories"][i])
    # A batch with one noise seed per row is the same rollouts.
    batch = noa.replay_cno(samples["fields"], samples["params"], 8, noise_seed=samples["noise_seeds"])
    assert torch.equal(batch, samples["trajectories"])


def test_theta_as_physical_values_is_the_same_operator_as_its_unit_row(samples: dict) -> None:
    row = samples["params"][0]
    physical = CNO_SPACE.decode(row)
    assert CNO_SPACE.decode(noa.as_theta(physical)[0]) == physical
    assert torch.equal(noa.as_theta([physical, physical]), noa.as_theta(physical).expand(2, -1))
    from_dict = noa.replay_cno(samples["fields"][0], physical, 8, noise_seed=samples["noise_seeds"][0])
    assert torch.equal(from_dict[0], samples["trajectories"][0])


def test_rollout_is_the_trainers_rollout_and_broadcasts_one_ic_over_many_theta(
    tiny_checkpoint: Path, samples: dict
) -> None:
    from noa.train.checkpoint import build_model, load_checkpoint
    from noa.train.rollout import rollout_noa

    agent = noa.load(tiny_checkpoint, device="cpu")
    assert isinstance(agent, noa.NeuralOperatorAgent) and agent.device == torch.device("cpu")
    assert agent.config.base_channels == 8 and agent.training_args["timesteps"] == 8 and agent.space == CNO_SPACE
    model, _ = build_model(load_checkpoint(tiny_checkpoint))
    ics, params = samples["fields"][:3], samples["params"][:3]
    expected, _ = rollout_noa(model, ics, params, 5)
    frames = agent.rollout(ics, params, 5)
    assert frames.shape == (3, 6, 3, 16, 16) and torch.equal(frames, expected)
    # One IC, three θ (as physical values): row k is that IC rolled out under θ_k alone.
    physical = [CNO_SPACE.decode(p) for p in params]
    many = agent.rollout(ics[0], physical, 5)
    for k in range(3):
        torch.testing.assert_close(many[k], agent.rollout(ics[0], physical[k], 5)[0], rtol=1e-5, atol=1e-6)
    assert agent.to("cpu") is agent


def test_tokens_are_the_codes_noa_diagnose_counts(tiny_tokenizer: Path, samples: dict) -> None:
    tokenizer = noa.load_tokenizer(tiny_tokenizer, device="cpu")
    trajectories = samples["trajectories"]  # [B, M=1, T+1, C, H, W]
    tokens = tokenizer.tokens(trajectories)
    assert tokens.shape == (5, len(tokenizer.entries)) and tokens.dtype == torch.int64
    assert all(0 <= int(t) < size for row in tokens for t, size in zip(row, tokenizer.codebook_sizes))
    _, codes = tokenizer.model.quantize(tokenizer.model.encode(noa.compute_features(trajectories)))
    assert torch.equal(tokens, torch.stack(codes, dim=1))  # what diagnose's FrozenTokenizer.tokens counts
    assert torch.equal(tokenizer.tokens(trajectories[:, 0]), tokens)  # one realization: the same features
    with pytest.raises(NoaError, match=r"timesteps: tokenizer has 8, rollouts of shape \(5, 5, 3, 16, 16\) has 4"):
        tokenizer.tokens(trajectories[:, 0, :5])


def test_initial_conditions_from_a_generator_follow_its_state() -> None:
    first = noa.make_initial_condition("sinusoid", grid=16, generator=torch.Generator().manual_seed(4))
    again = noa.make_initial_condition("sinusoid", grid=16, generator=torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)
    pair = [noa.make_initial_condition("localized", grid=16, channels=2, generator=gen) for _ in range(2)]
    assert torch.equal(first, again) and first.shape == (3, 16, 16)
    assert pair[0].shape == (2, 16, 16) and not torch.equal(pair[0], pair[1])


def test_amplitude_and_length_scale_can_be_fixed_by_hand() -> None:
    from noa.data.ics import correlation_length, draw_spec

    drawn = draw_spec("gaussian_random_field", 5)
    same = noa.make_initial_condition(
        "gaussian_random_field", grid=32, seed=5, amplitude=drawn.amplitude_level, length_scale=drawn.length_scale
    )
    assert torch.equal(same, noa.make_initial_condition("gaussian_random_field", grid=32, seed=5))
    loud = noa.make_initial_condition("gaussian_random_field", grid=32, seed=5, amplitude="high", length_scale=0.08)
    assert torch.allclose(loud.square().mean(dim=(1, 2)).sqrt(), torch.full((3,), 2.5))
    assert correlation_length(loud) == pytest.approx(0.08, rel=0.1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: noa.make_initial_condition("sinusoid", grid=16), "exactly one of seed="),
        (lambda: noa.make_initial_condition("sinusoid", seed=1, generator=torch.Generator()), "exactly one of seed="),
        (lambda: noa.make_initial_condition("vortex", seed=1), "unknown IC kind 'vortex'"),
        (lambda: noa.make_initial_condition("sinusoid", grid=4, seed=1), "at least 8"),
        (lambda: noa.make_initial_condition("sinusoid", seed=1.5), "seed must be an integer"),
        (lambda: noa.make_initial_condition("sinusoid", seed=1, amplitude="loud"), "unknown IC amplitude level 'loud'"),
        (
            lambda: noa.make_initial_condition("sinusoid", seed=1, length_scale=0.9),
            r"length_scale must be .* \(0, 0.5\]",
        ),
        (lambda: noa.make_initial_condition("sinusoid", seed=1, length_scale="0.1"), "length_scale must be a number"),
        (lambda: noa.as_theta(torch.full((13,), 1.5)), r"unit coordinates in \[0, 1\]"),
        (lambda: noa.as_theta(torch.zeros(2, 12)), r"\[P\] or \[B, P\] with P = 13"),
        (lambda: noa.as_theta([0.5] * 13), "a tensor of unit coordinates"),
        (
            lambda: noa.replay_cno(torch.zeros(2, 3, 16, 16), torch.zeros(3, 13), 2, noise_seed=0),
            "2 initial conditions but 3",
        ),
        (
            lambda: noa.replay_cno(torch.zeros(2, 3, 16, 16), torch.zeros(13), 2, noise_seed=[1, 2, 3]),
            "3 noise seeds for 2 rows",
        ),
        (
            lambda: noa.replay_cno(torch.zeros(3, 16, 16), torch.zeros(13), 2.0, noise_seed=0),
            "timesteps must be an integer",
        ),
        (
            lambda: noa.replay_cno(torch.zeros(16, 16), torch.zeros(13), 2, noise_seed=0),
            r"\[C, H, W\] or \[B, C, H, W\]",
        ),
        (lambda: noa.load("no/such/checkpoint.pt"), "does not exist"),
        (lambda: noa.load_tokenizer("no/such/tokenizer"), "does not exist"),
    ],
)
def test_user_mistakes_are_one_clear_error(call, message: str) -> None:
    with pytest.raises(NoaError, match=message):
        call()


def test_rollout_refuses_bad_inputs_and_a_model_of_another_theta_space(tiny_checkpoint: Path) -> None:
    from noa.model import UAFNO, UAFNOConfig

    agent = noa.load(tiny_checkpoint, device="cpu")
    with pytest.raises(NoaError, match="timesteps must be an integer >= 1"):
        agent.rollout(torch.zeros(3, 16, 16), torch.zeros(13), 0)
    with pytest.raises(NoaError, match="not divisible by 2\\*\\*encoder_levels"):
        agent.rollout(torch.zeros(3, 18, 18), torch.zeros(13), 1)
    with pytest.raises(NoaError, match="trained on another family"):
        noa.NeuralOperatorAgent(UAFNO(UAFNOConfig(param_dim=5, **TINY_MODEL)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rollout_and_replay_on_cuda_match_the_cpu(tiny_checkpoint: Path, samples: dict) -> None:
    agent = noa.load(tiny_checkpoint, device="cuda")
    assert agent.device.type == "cuda"
    ics, params = samples["fields"][:2], samples["params"][:2]
    on_gpu = agent.rollout(ics, params, 4)
    on_cpu = agent.to("cpu").rollout(ics, params, 4)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-4)
    cno = noa.replay_cno(ics, params, 4, noise_seed=samples["noise_seeds"][:2], device="cuda")
    assert cno.device.type == "cuda"
    torch.testing.assert_close(cno.cpu(), samples["trajectories"][:2, :, :5], rtol=1e-4, atol=1e-5)


def test_the_former_names_of_ic_kinds_still_work_and_say_they_are_deprecated(tiny_dataset: Path) -> None:
    with pytest.warns(DeprecationWarning, match="noa.IC_FAMILIES is deprecated; use noa.IC_KINDS"):
        assert noa.IC_FAMILIES == noa.IC_KINDS
    with pytest.warns(DeprecationWarning, match="noa.IC_FAMILIES"):  # every access warns, not only the first
        noa.IC_FAMILIES
    assert "IC_FAMILIES" not in noa.__all__ and "IC_FAMILIES" not in dir(noa)
    sample = noa.read_sample(tiny_dataset, 2)
    with pytest.warns(DeprecationWarning, match="Sample.ic_family is deprecated; use Sample.ic_kind"):
        assert sample.ic_family == sample.ic_kind
    with pytest.warns(DeprecationWarning, match="family=.* is deprecated"):
        old = noa.make_initial_condition(family="localized", grid=16, seed=3)
    assert torch.equal(old, noa.make_initial_condition(kind="localized", grid=16, seed=3))
    with pytest.raises(NoaError, match="give the IC kind once"):
        noa.make_initial_condition("localized", family="localized", grid=16, seed=3)
    with pytest.raises(NoaError, match="give the IC kind"):
        noa.make_initial_condition(grid=16, seed=3)


def test_dir_of_the_package_lists_the_public_api_only() -> None:
    names = dir(noa)
    assert {"load", "CNO_SPACE", "NoaError", "__version__"} <= set(names)
    assert not {"Any", "TYPE_CHECKING", "importlib"} & set(names)


def test_read_sample_gives_what_replays_the_stored_rollout(tiny_dataset: Path, samples: dict) -> None:
    sample = noa.read_sample(tiny_dataset, 3)
    assert sample.row == 3 and sample.valid
    assert torch.equal(sample.theta, samples["params"][3])
    assert torch.equal(sample.ic, samples["fields"][3])
    assert sample.ic_kind == samples["kinds"][3] and sample.ic_kind in noa.IC_KINDS
    assert sample.noise_seed == samples["noise_seeds"][3]
    assert sample.physical == CNO_SPACE.decode(sample.theta)
    # θ, IC and noise seed are all a rollout needs: replaying them gives the stored trajectory.
    cno = noa.replay_cno(sample.ic, sample.theta, 8, noise_seed=sample.noise_seed)
    assert torch.equal(cno[0], samples["trajectories"][3])


@pytest.mark.parametrize("row", [-1, 40, 2.0, True])
def test_read_sample_refuses_a_row_the_dataset_does_not_have(tiny_dataset: Path, row: object) -> None:
    with pytest.raises(NoaError, match=r"row must be an integer in \[0, 39\]"):
        noa.read_sample(tiny_dataset, row)  # type: ignore[arg-type]


def test_training_split_is_the_runs_split_and_its_held_out_rows_are_diagnoses(
    tiny_checkpoint: Path, tiny_dataset: Path
) -> None:
    from noa.diagnostics.evaluate import held_out_rows
    from noa.train.checkpoint import load_checkpoint

    split = noa.training_split(tiny_checkpoint)
    assert split.dataset == tiny_dataset
    # --n-samples 16 with the default 10% validation: 14 + 2 rows, the other 24 never used.
    assert (len(split.train), len(split.validation), len(split.unused)) == (14, 2, 24)
    assert not set(split.train) & set(split.held_out)
    assert sorted([*split.train, *split.held_out]) == list(range(40))
    args = load_checkpoint(tiny_checkpoint)["args"]
    diagnosed, _ = held_out_rows(tiny_dataset, args, n_samples=100, seed=0, same_data=True)
    assert diagnosed.tolist() == split.held_out.tolist()
