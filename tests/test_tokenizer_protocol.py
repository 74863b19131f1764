"""Bring your own tokenizer: the protocol, noa's own tokenizer meeting it, the example PCA
tokenizer (examples/custom_tokenizer.py) fitted, trained against with all three losses, resumed
exactly and diagnosed, each bad input's one message, and that no directory or checkpoint makes
noa import code."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import pytest
import torch

import noa
from helpers import EXAMPLE_TOKENIZER, PCA_CLASS, REPO, assert_same_state, run_args
from noa.cli import main
from noa.diagnostics.report import diagnose
from noa.errors import NoaError
from noa.features import compute_features, feature_names
from noa.tokenizer import CategoricalVQVAE, load_tokenizer, open_tokenizer
from noa.tokenizer.frozen import protocol_problems
from noa.tokenizer.protocol import ATTRIBUTES, METHODS, TokenizerProtocol
from noa.tokenizer.user_class import resolve_class
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import train


def quiet(_: str) -> None:
    pass


def _args(dataset: Path, tokenizer: Path, ck: Path, **kw) -> dict:
    # 14 train samples, batch 4 -> 3 batches per epoch, every one a rollout under all three losses.
    values = dict(vqvae_path=str(tokenizer), vqvae_class=PCA_CLASS, enable_latent_loss=True, one_step_steps=0)
    return run_args(dataset, ck, **{**values, **kw})


@pytest.fixture(scope="module")
def pca(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's command, as the user guide prints it: fit on the dataset and save."""
    out = tmp_path_factory.mktemp("pca") / "pca_tokenizer"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE_TOKENIZER), "--dataset", str(tiny_dataset), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    # Fitted on noa train's training rows (--val-split 0.1, --seed 0): diagnose's rows are held out from it too.
    assert "PCATokenizer: fitted on 36 samples of" in done.stdout and f"saved to {out}" in done.stdout
    assert "reconstruction MSE on the 4 held out (--val-split 0.1, --seed 0: noa train's split)" in done.stdout
    return out


@pytest.fixture(scope="module")
def straight(tiny_dataset: Path, pca: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ck = tmp_path_factory.mktemp("straight")
    train(_args(tiny_dataset, pca, ck, epochs=3))
    return ck


def _records(ck: Path) -> list[dict]:
    lines = (ck / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if k != "sec"} for r in map(json.loads, lines) if r["kind"] == "train_batch"]


# ---- the protocol and noa's own tokenizer ----------------------------------------------------


def test_the_member_lists_are_the_protocols() -> None:
    declared = {
        name
        for cls in TokenizerProtocol.__mro__[:-1]
        if cls is not Protocol
        for name in vars(cls)
        if not name.startswith("_")
    }
    assert declared == set(METHODS) | set(ATTRIBUTES)
    assert noa.TokenizerProtocol is TokenizerProtocol


def test_noas_own_tokenizer_meets_the_protocol(tiny_tokenizer: Path, tiny_dataset: Path) -> None:
    assert resolve_class(CategoricalVQVAE) is CategoricalVQVAE
    model = CategoricalVQVAE.load(tiny_tokenizer)
    assert protocol_problems(model) == []
    assert model.feature_names == feature_names(3) and (model.timesteps, model.channels, model.grid) == (8, 3, 16)
    frozen = open_tokenizer(tiny_tokenizer)
    assert frozen.class_spec is None and all(index is None for index in frozen.columns.values())  # read whole
    sample = noa.read_sample(tiny_dataset, 0)
    features = compute_features(noa.replay_cno(sample.ic, sample.theta, 8, noise_seed=sample.noise_seed))
    for ours, direct in zip(frozen.encode(features), load_tokenizer(tiny_tokenizer).encode(features)):
        assert torch.equal(ours, direct)


# ---- the example tokenizer ---------------------------------------------------------------------


def test_the_example_reads_the_columns_it_names(pca: Path, tiny_dataset: Path) -> None:
    frozen = open_tokenizer(pca, PCA_CLASS)
    assert frozen.name == "PCATokenizer" and frozen.entries == [("initial", 0), ("summary", 0), ("temporal", 0)]
    assert frozen.latent_dim == 12 and frozen.codebook_sizes == [16, 16, 16]
    sample = noa.read_sample(tiny_dataset, 0)
    features = compute_features(noa.replay_cno(sample.ic, sample.theta, 8, noise_seed=sample.noise_seed))
    picked = frozen.features(features)
    names = feature_names(3)["temporal"]
    assert torch.equal(picked["temporal"][..., 0], features["temporal"][..., names.index("mean_c0")])
    assert picked["temporal"].shape == (1, 9, 9) and picked["summary"].shape == (1, 15)
    tokenizer = noa.load_tokenizer(pca, device="cpu", vqvae_class=PCA_CLASS)
    tokens = tokenizer.tokens(noa.replay_cno(sample.ic, sample.theta, 8, noise_seed=sample.noise_seed))
    assert tokens.shape == (1, 3) and tokenizer.config is None and tokenizer.grid == 16


def test_the_api_docs_example_loads_it(pca: Path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    section = (REPO / "docs" / "api.md").read_text().split("### Your own tokenizer", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None and code.group(1).count('"checkpoints/pca_tokenizer"') == 1
    monkeypatch.chdir(REPO)  # the example's path is relative to the repository root
    exec(code.group(1).replace('"checkpoints/pca_tokenizer"', repr(str(pca))), {})  # noqa: S102 -- the doc's own block
    assert (
        "[('initial', 0), ('summary', 0), ('temporal', 0)] ['mean_c0', 'mean_c1', 'mean_c2']" in capsys.readouterr().out
    )


def test_a_noa_trains_against_it_with_all_three_losses(straight: Path) -> None:
    ckpt = load_checkpoint(straight / "epoch_3.pt")
    history = ckpt["history"]
    assert ckpt["args"]["vqvae_class"] == PCA_CLASS  # recorded with its file absolute
    assert ckpt["alignment_state"]["latent_dim"] == 12
    assert all(r["commit"] is not None and r["latent"] is not None for r in _records(straight))
    assert history["train_commit"][-1] < history["train_commit"][0]
    assert history["train_latent"][-1] < history["train_latent"][0]


def test_a_resume_is_exact(straight: Path, tiny_dataset: Path, pca: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    train(_args(tiny_dataset, pca, ck, epochs=3, max_steps=4))  # stops in epoch 2, after step_4.pt
    train({"resume": str(ck / "step_4.pt"), "vqvae_class": PCA_CLASS, "device": "cpu"})
    assert_same_state(load_checkpoint(straight / "epoch_3.pt"), load_checkpoint(ck / "epoch_3.pt"))
    assert _records(straight) == _records(ck)


def test_a_resume_is_told_which_class_to_pass(straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    resume = ["train", "--resume", str(straight / "step_2.pt"), "--checkpoint-dir", str(tmp_path), "--device", "cpu"]
    assert main(resume) == 2
    err = capsys.readouterr().err
    assert "step_2.pt was trained with the tokenizer class PCATokenizer" in err
    # The recorded path is information (it may be another machine's), not a command to paste.
    assert f"(recorded: {PCA_CLASS})" in err and f"--vqvae-class {PCA_CLASS}" not in err
    assert "pass --vqvae-class FILE:PCATokenizer with your copy of that class's file" in err and "Traceback" not in err
    other = tmp_path / "other.py"
    other.write_text(EXAMPLE_TOKENIZER.read_text().replace("class PCATokenizer", "class OtherTokenizer"))
    assert main([*resume, "--vqvae-class", f"{other}:OtherTokenizer"]) == 2
    assert "but --vqvae-class names OtherTokenizer; noa never imports" in capsys.readouterr().err


def test_a_checkpoint_records_a_hash_of_the_class_file(straight: Path) -> None:
    recorded = load_checkpoint(straight / "epoch_3.pt")["fingerprints"]["vqvae_class"]
    assert recorded == hashlib.sha256(EXAMPLE_TOKENIZER.read_bytes()).hexdigest()


def _resume_with(straight: Path, tmp_path: Path, checkpoint: Path, class_file: Path) -> dict:
    return {
        "resume": str(checkpoint),
        "vqvae_class": f"{class_file}:PCATokenizer",
        "checkpoint_dir": str(tmp_path / "ck"),
        "device": "cpu",
    }


def test_a_class_of_the_same_name_from_another_file_is_refused(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Issue 37: the class's name alone let someone else's PCATokenizer resume and diagnose a run."""
    from noa.train.settle import settle

    other = tmp_path / "someone_elses.py"
    other.write_text(EXAMPLE_TOKENIZER.read_text().replace("latent_dim", "latent_dim ") + "\n# edited\n")
    with pytest.raises(NoaError) as err:
        settle(_resume_with(straight, tmp_path, straight / "step_2.pt", other))
    message = str(err.value)
    assert f"--vqvae-class {other}:PCATokenizer: its file is not the one step_2.pt was trained with" in message
    assert f"(recorded: {PCA_CLASS}, sha256 " in message and "a different file can compute other tokens" in message
    argv = ["diagnose", "--noa-checkpoint", str(straight / "best_model.pt"), "--out", str(tmp_path / "d")]
    assert main([*argv, "--device", "cpu", "--vqvae-class", f"{other}:PCATokenizer"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("error: ") and "its file is not the one" in err_text and "Traceback" not in err_text
    assert not (tmp_path / "d").exists()


def test_the_same_class_file_at_another_path_and_an_older_checkpoint_are_accepted(
    straight: Path, tmp_path: Path
) -> None:
    from noa.train.settle import settle

    moved = tmp_path / "moved" / "custom_tokenizer.py"
    moved.parent.mkdir()
    shutil.copy(EXAMPLE_TOKENIZER, moved)
    run = settle(_resume_with(straight, tmp_path, straight / "step_2.pt", moved))
    assert run.tokenizer is not None and run.tokenizer.name == "PCATokenizer"
    # A checkpoint written before the class's file was hashed is told by the class's name, as before.
    ckpt = load_checkpoint(straight / "step_2.pt")
    del ckpt["fingerprints"]["vqvae_class"]
    torch.save(ckpt, tmp_path / "older.pt")
    edited = tmp_path / "edited.py"
    edited.write_text(EXAMPLE_TOKENIZER.read_text() + "\n# edited\n")
    assert settle(_resume_with(straight, tmp_path, tmp_path / "older.pt", edited)).tokenizer is not None


def test_diagnose_reports_its_token_sections(
    straight: Path, pca: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["diagnose", "--noa-checkpoint", str(straight / "best_model.pt"), "--out", str(tmp_path), "--device", "cpu"]
    # Without the class, one line says which to pass (or --no-tokens).
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"(recorded: {PCA_CLASS})" in err and "(or --no-tokens for the rollout measures alone)" in err
    assert main([*argv, "--vqvae-class", PCA_CLASS]) == 0
    assert f"Tokenizer:  {pca} (class {PCA_CLASS})" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["reconstruction"]["per_category"]) == {"initial", "summary", "temporal"}
    assert summary["diversity"]["total"] == 48 and summary["alignment"]["cosine_mean"] is not None
    assert summary["rollout"]["token_agreement"] is not None and summary["tokenizer_class"] == PCA_CLASS


def test_the_config_file_names_the_class_too(tiny_dataset: Path, pca: Path, tmp_path: Path) -> None:
    from noa.train.settle import settle

    config = tmp_path / "run.yaml"
    config.write_text(f"vqvae_path: {pca}\nvqvae_class: {PCA_CLASS}\n")
    run = settle({**run_args(tiny_dataset, tmp_path / "ck"), "config": str(config)})
    assert run.tokenizer is not None and run.tokenizer.name == "PCATokenizer" and run.config.timesteps == 8


# ---- bad input: one message each, exit status 2, no traceback ----------------------------------


def _train_refusal(tiny_dataset: Path, tokenizer: Path, tmp_path: Path, capsys, *extra: str) -> str:
    flags = ["--dataset", str(tiny_dataset), "--vqvae-path", str(tokenizer), "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(["train", *flags, "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and not (tmp_path / "ck").exists()
    return err


BROKEN_MODULES = {
    "raises.py": "raise RuntimeError('no GPU here')\n",
    "syntax.py": "def load(:\n",
    "lacking.py": (
        "class NoQuantize:\n"
        "    @classmethod\n    def load(cls, directory):\n        return cls()\n"
        "    def to(self, device):\n        return self\n"
        "    def encode(self, features):\n        return []\n"
    ),
}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("examples/custom_tokenizer.py", "is not MODULE_OR_FILE:CLASS"),
        ("examples/no_such_file.py:PCATokenizer", "tokenizer class file examples/no_such_file.py does not exist"),
        ("no_such_tokenizer_package.tokens:Tok", "module no_such_tokenizer_package.tokens is not on the Python path"),
        ("{dir}/raises.py:Tok", "raises.py does not import: RuntimeError: no GPU here"),
        ("{dir}/syntax.py:Tok", "syntax.py does not import: SyntaxError"),
        ("examples/custom_tokenizer.py:PCATokenzer", "has no class PCATokenzer; did you mean PCATokenizer?"),
        (
            "{dir}/lacking.py:NoQuantize",
            "NoQuantize lacks the tokenizer protocol's methods quantize, reconstruction_mse",
        ),
    ],
)
def test_a_class_that_cannot_be_used_is_one_message(
    spec: str, message: str, tiny_dataset: Path, pca: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(REPO)  # the relative paths are the guide's, from the repository root
    for name, text in BROKEN_MODULES.items():
        (tmp_path / name).write_text(text)
    spec = spec.format(dir=tmp_path)
    with pytest.raises(NoaError, match=re.escape(message)):
        noa.load_tokenizer(pca, device="cpu", vqvae_class=spec)
    assert message in _train_refusal(tiny_dataset, pca, tmp_path, capsys, "--vqvae-class", spec)


def _edited(pca: Path, tmp_path: Path, **meta) -> Path:
    copy = Path(shutil.copytree(pca, tmp_path / "edited"))
    values = json.loads((copy / "pca_tokenizer.json").read_text())
    (copy / "pca_tokenizer.json").write_text(json.dumps({**values, **meta}))
    return copy


def _subclasses(tmp_path: Path) -> Path:
    """A module of example subclasses whose loaders break one rule of the protocol each."""
    module = tmp_path / "subclasses.py"
    module.write_text(
        "from noa.tokenizer.user_class import resolve_class\n"
        f"Base = resolve_class({PCA_CLASS!r})\n"
        "class Gridless(Base):\n"
        "    @classmethod\n    def load(cls, directory):\n"
        "        loaded = super().load(directory)\n        del loaded.grid\n        return loaded\n"
        "class Misspelt(Base):\n"
        "    @classmethod\n    def load(cls, directory):\n"
        "        loaded = super().load(directory)\n"
        "        loaded.feature_names = {'temporal': ['mean_c0', 'men_c1'], 'sumary': ['growth_rate_c0']}\n"
        "        return loaded\n"
    )
    return module


def test_an_instance_lacking_an_attribute_is_named(pca: Path, tmp_path: Path) -> None:
    with pytest.raises(
        NoaError, match="(?s)does not fit noa's tokenizer protocol.*lacks the protocol's attribute grid"
    ):
        open_tokenizer(pca, f"{_subclasses(tmp_path)}:Gridless")


def test_features_noa_does_not_compute_are_named_with_a_guess(
    tiny_dataset: Path, pca: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = f"{_subclasses(tmp_path)}:Misspelt"
    err = _train_refusal(tiny_dataset, pca, tmp_path, capsys, "--vqvae-class", spec)
    assert "temporal features noa does not compute for 3 channels: 'men_c1' (did you mean 'mean_c1'?)" in err
    assert "feature category 'sumary' is not one noa computes (did you mean 'summary'?)" in err


def test_sizes_that_do_not_fit_the_data_name_both_values(
    tiny_dataset: Path, pca: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    edited = _edited(pca, tmp_path, timesteps=16, grid=32, channels=2, feature_names={"summary": ["growth_rate_c0"]})
    err = _train_refusal(tiny_dataset, edited, tmp_path, capsys, "--vqvae-class", PCA_CLASS, "--timesteps", "8")
    assert f"  - T: tokenizer {edited} was trained on T=16, --timesteps gives T=8" in err
    assert f"  - grid: tokenizer {edited} was trained on 32, dataset {tiny_dataset} has 16" in err
    assert f"  - channels: tokenizer {edited} was trained on 2, dataset {tiny_dataset} has 3" in err


def test_a_directory_or_checkpoint_never_makes_noa_import_code(
    straight: Path, pca: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    """A tokenizer directory that names a module, and a checkpoint that records it, on the Python
    path: loading, training, resuming and diagnosing import nothing (the planted module would say)."""
    marker = tmp_path / "imported"
    (tmp_path / "planted_tokenizer.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Planted: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    planted = Path(shutil.copytree(pca, tmp_path / "planted_dir"))
    for name in ("config.json", "tokenizer.json"):
        (planted / name).write_text(
            json.dumps({"class": "planted_tokenizer:Planted", "vqvae_class": "planted_tokenizer:Planted"})
        )
    with pytest.raises(NoaError, match="pass --vqvae-class MODULE_OR_FILE:CLASS"):
        noa.load_tokenizer(planted, device="cpu")
    assert "--vqvae-class MODULE_OR_FILE:CLASS" in _train_refusal(tiny_dataset, planted, tmp_path, capsys)
    ckpt = load_checkpoint(straight / "best_model.pt")
    ckpt["args"]["vqvae_class"] = "planted_tokenizer:Planted"
    torch.save(ckpt, tmp_path / "planted.pt")
    with pytest.raises(NoaError, match=r"\(recorded: planted_tokenizer:Planted\)"):
        diagnose(tmp_path / "planted.pt", None, None, log=quiet)
    with pytest.raises(NoaError, match=r"\(recorded: planted_tokenizer:Planted\)"):
        train({"resume": str(tmp_path / "planted.pt"), "checkpoint_dir": str(tmp_path / "ck2"), "device": "cpu"})
    assert not marker.exists() and "planted_tokenizer" not in sys.modules
