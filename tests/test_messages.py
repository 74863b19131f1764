"""Messages that say what is wrong in the user's terms: the file given is a directory or the
other kind of noa file, a flag is misspelt, a resume changes several locked settings at once."""

from __future__ import annotations

from pathlib import Path

import pytest

import noa
from helpers import run_args
from noa.cli import main
from noa.errors import NoaError
from noa.train.loop import train


@pytest.fixture(scope="module")
def finished(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint directory of a finished one-epoch run (3 batches of 4, window 2)."""
    ck = tmp_path_factory.mktemp("run") / "checkpoints" / "noa"
    train(run_args(tiny_dataset, ck, epochs=1))
    return ck


def test_a_checkpoint_directory_is_named_as_a_directory(
    finished: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(
        NoaError,
        match=rf"checkpoint {finished} is a directory, not a checkpoint file \(it holds .*best_model.pt.*\); "
        rf"name the file, e\.g\. {finished / 'best_model.pt'}",
    ):
        noa.load(finished)
    code = main(
        ["diagnose", "--noa-checkpoint", str(finished), "--dataset", str(tiny_dataset), "--out", str(tmp_path / "r")]
    )
    assert code == 2 and "is a directory, not a checkpoint file" in capsys.readouterr().err


def test_the_api_gives_python_advice_and_names_a_dataset_given_as_a_checkpoint(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        NoaError, match=r"tiny.h5 is an HDF5 file \(a dataset\?\), not a checkpoint; pass a checkpoint file"
    ) as refused:
        noa.load(tiny_dataset)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(NoaError, match="junk.pt is corrupt or not a noa file") as refused:
        noa.load(junk)
    assert "--resume" not in str(refused.value) and "best_model.pt, epoch_N.pt or step_N.pt" in str(refused.value)


def test_data_info_on_a_checkpoint_says_what_it_is(finished: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info", str(finished / "best_model.pt")]) == 2
    err = capsys.readouterr().err
    assert (
        "is a torch archive (a checkpoint or tokenizer weights?), not an HDF5 dataset" in err
        and "regenerate" not in err
    )


def test_an_unknown_device_is_refused_before_the_run_says_where_it_writes(
    finished: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch, train_log: list[str]
) -> None:
    monkeypatch.chdir(
        finished.parents[1]
    )  # the default directory, checkpoints/noa, is taken: a new run would pick a sibling
    args = {k: v for k, v in run_args(tiny_dataset, finished).items() if k != "checkpoint_dir"}
    with pytest.raises(NoaError, match="unknown --device 'gpu'"):
        train({**args, "device": "gpu"})
    assert not any("this run writes to" in line for line in train_log)


def test_a_misspelt_flag_names_the_flag_meant(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--bptt_window", "3"])
    err = capsys.readouterr().err
    assert (
        stopped.value.code == 2
        and "noa train: error: unrecognized arguments: --bptt_window 3 (--bptt_window: did you mean --bptt-window?)"
        in err
    )
    with pytest.raises(SystemExit):
        main(["data", "generate", "--out", "x.h5", "--n-samples", "2", "--gird", "16"])
    assert "noa data generate: error:" in capsys.readouterr().err


def test_a_resume_that_changes_several_locked_settings_names_them_all(finished: Path) -> None:
    with pytest.raises(NoaError) as refused:
        train({"resume": str(finished / "epoch_1.pt"), "batch_size": 1, "bptt_window": 1, "epochs": 2, "device": "cpu"})
    text = str(refused.value)
    assert (
        "--batch-size 1 on 1 rank(s) is a global batch of 1, but the run was trained with a global batch of 4" in text
    )
    assert "--bptt-window: checkpoint 2, now 1" in text and "--init-from" in text


def test_a_tokenizer_that_does_not_fit_the_data_lists_every_mismatch_with_its_origin(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A tokenizer trained at T=16 on a 32x32 grid; the dataset has T=8 on 16x16. No --timesteps is given.
    from noa.data.generate import GenerateConfig, generate
    from noa.tokenizer.job import train_tokenizer_on_dataset

    big = tmp_path / "t16.h5"
    generate(GenerateConfig(n_samples=8, grid=32, timesteps=16, seed=3), big, progress=False, log=lambda _: None)
    tokenizer = tmp_path / "vq16"
    sizes = dict(epochs=1, batch_size=8, levels=1, codebook_size=4, latent_dim=2, hidden=8, val_split=0.25)
    train_tokenizer_on_dataset(big, tokenizer, **sizes, device="cpu", log=lambda _: None, progress=False)
    flags = ["--dataset", str(tiny_dataset), "--vqvae-path", str(tokenizer), "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(["train", *flags, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the dataset, the tokenizer and the settings do not fit each other:")
    assert (
        f"  - T: T=16 is tokenizer {tokenizer}'s (no --timesteps given: T follows the tokenizer), "
        f"more than dataset {tiny_dataset}'s T=8" in err
    )
    assert f"  - grid: tokenizer {tokenizer} was trained on 32, dataset {tiny_dataset} has 16" in err
    assert "--timesteps 16 is more than" not in err and not (tmp_path / "ck").exists()
    # Given explicitly, the flag is named as the source, and the tokenizer's own T as a second mismatch.
    assert main(["train", *flags, "--timesteps", "12", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "  - T: --timesteps gives T=12, more than" in err
    assert f"  - T: tokenizer {tokenizer} was trained on T=16, --timesteps gives T=12" in err


def test_stopping_before_any_validation_says_so_rather_than_best_val_loss_inf(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in run_args(tiny_dataset, tmp_path / "ck").items()]
    assert main(["train", *flags, "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "Training finished at step 1; no validation yet (it runs at the end of each epoch); checkpoints in" in out
    assert "inf" not in out.split("Training finished")[1]


def test_stopping_before_the_first_validation_of_val_every_says_when_it_runs(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # 3 batches per epoch: epoch 1 ends without validation, the stop comes after epoch 2.
    flags = run_args(tiny_dataset, tmp_path / "ck", epochs=4, val_every=3, max_steps=6)
    assert main(["train", *(f"--{k.replace('_', '-')}={v}" for k, v in flags.items())]) == 0
    out = capsys.readouterr().out
    assert "Val:   not this epoch (--val-every 3)" in out
    assert "no validation yet (--val-every 3: the first runs at the end of epoch 3); checkpoints in" in out


def test_resume_auto_with_another_dataset_names_both_and_what_to_do(
    finished: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    from noa.data.generate import GenerateConfig, generate

    other = tmp_path / "other.h5"
    generate(GenerateConfig(n_samples=16, grid=16, timesteps=8, seed=5), other, progress=False, log=lambda _: None)
    monkeypatch.chdir(finished.parent.parent)  # where checkpoints/noa is the default --checkpoint-dir
    before = sorted(p.name for p in finished.parent.iterdir())
    for where, shown in (([], "checkpoints/noa"), (["--checkpoint-dir", str(finished)], str(finished))):
        assert main(["train", "--resume", "auto", "--dataset", str(other), "--device", "cpu", *where]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "continue that run with --resume auto" not in err, err
        assert f"--dataset {other} holds other data than the one it was trained on, {tiny_dataset.resolve()}" in err
        assert "to continue it, drop --dataset" in err
        assert f"to fine-tune it on {other}, start a new run from its weights: noa train --init-from {shown}/" in err
        assert sorted(p.name for p in finished.parent.iterdir()) == before  # no fine-tune directory started


def test_one_step_states_without_a_one_step_phase_warns(
    finished: Path, tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    train(run_args(tiny_dataset, tmp_path / "ck", one_step_steps=0, one_step_states=2, max_steps=0))
    said = [line for line in train_log if "--one-step-states" in line]
    assert said == [
        "Warning: --one-step-states 2 does nothing: this run has no one-step phase (--one-step-steps 0); drop it, "
        "or give --one-step-steps N for a one-step phase of N batches"
    ]
    train_log.clear()
    flags = {"init_from": str(finished / "best_model.pt"), "dataset": str(tiny_dataset), "one_step_states": 2}
    train({**flags, "checkpoint_dir": str(tmp_path / "ft"), "max_steps": 0, "device": "cpu"})
    assert any("no one-step phase (a fine-tune has none)" in line for line in train_log), train_log
    train_log.clear()
    train(run_args(tiny_dataset, tmp_path / "fresh", one_step_states=2, max_steps=0))  # half the run is one-step
    assert not [line for line in train_log if "--one-step-states" in line]


def test_loading_a_tokenizer_directory_as_a_noa_points_to_load_tokenizer(
    tiny_tokenizer: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(NoaError) as refused:
        noa.load(tiny_tokenizer)
    message = str(refused.value)
    assert f"{tiny_tokenizer} is a tokenizer directory (noa vqvae train wrote it), not a NOA checkpoint" in message
    assert f"noa.load_tokenizer({str(tiny_tokenizer)!r})" in message and "best_model.pt" not in message
    argv = ["diagnose", "--noa-checkpoint", str(tiny_tokenizer), "--dataset", str(tiny_dataset), "--out", str(tmp_path)]
    assert main(argv) == 2 and "pass it as --vqvae-path" in capsys.readouterr().err


def test_typod_config_file_keys_get_a_did_you_mean(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("bptt_windw: 4\nlearning_rate: 0.001\nepochs: 1\n")
    assert main(["train", "--config", str(config), "--dataset", str(tiny_dataset)]) == 2
    assert (
        f"error: --config {config} has unknown keys: bptt_windw (did you mean bptt_window?), learning_rate"
        in capsys.readouterr().err
    )
