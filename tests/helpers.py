"""Helpers the test modules share (test modules never import each other): the tiny run's
flags, the small model's sizes, the example tokenizer's class, and the comparisons of two runs
or two dataset files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from noa.operators.space import CNO_SPACE

SMALL = dict(channels=3, param_dim=CNO_SPACE.size, base_channels=8, encoder_levels=2, modes=4, afno_blocks=1)
TINY_MODEL = dict(base_channels=8, encoder_levels=2, modes=4, afno_blocks=1, projector_hidden=16)

REPO = Path(__file__).resolve().parents[1]
# The tokenizer of another class than noa's (examples/custom_tokenizer.py), as --vqvae-class names it.
EXAMPLE_TOKENIZER = REPO / "examples" / "custom_tokenizer.py"
PCA_CLASS = f"{EXAMPLE_TOKENIZER}:PCATokenizer"


def run_args(dataset: Path, ckdir: Path, **kw) -> dict:
    values = dict(
        dataset=str(dataset),
        n_samples=16,
        epochs=2,
        batch_size=4,
        lr=1e-3,
        bptt_window=2,
        timesteps=8,
        warmup_steps=2,
        checkpoint_dir=str(ckdir),
        save_every=2,
        device="cpu",
        **TINY_MODEL,
    )
    values.update(kw)
    return values


def assert_same_state(a: dict, b: dict) -> None:
    for key in a["model_state_dict"]:
        assert torch.equal(a["model_state_dict"][key], b["model_state_dict"][key]), key
    for key in a["alignment_state"]["state_dict"]:
        assert torch.equal(a["alignment_state"]["state_dict"][key], b["alignment_state"]["state_dict"][key]), key
    sa, sb = a["optimizer_state_dict"]["state"], b["optimizer_state_dict"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in sa[i]:
            assert torch.equal(sa[i][key], sb[i][key]), (i, key)
    assert a["scheduler_state_dict"] == b["scheduler_state_dict"]
    assert a["global_step"] == b["global_step"]
    timeless = lambda h: {k: v for k, v in h.items() if k != "epoch_seconds"}  # noqa: E731 (wall time differs)
    assert timeless(a["history"]) == timeless(b["history"])


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_file(a: Path, b: Path) -> None:
    left, right = h5_arrays(a), h5_arrays(b)
    assert left.keys() == right.keys()
    for name in left:
        assert np.array_equal(left[name], right[name], equal_nan=True), name
