"""`--preset NAME` for `noa train` and `noa vqvae train`: the preset fills in what the user left
out, flags override it, the run records it, a resume keeps its run's settings, an unknown name
is refused in one line, and the quickstart trains with the same definitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import REPO, TINY_MODEL
from noa import presets, quickstart
from noa.cli import main
from noa.errors import NoaError
from noa.families import load_family
from noa.train.checkpoint import load_checkpoint
from noa.train.config import PER_RUN
from noa.train.loop import train
from noa.tokenizer.job import tokenizer_settings, train_tokenizer_on_dataset
from noa.train.settle import settle

QUICKSTART = presets.train_preset("quickstart")


def _flags(dataset: Path, checkpoints: Path, **kw: object) -> dict:
    return {"dataset": str(dataset), "checkpoint_dir": str(checkpoints), "device": "cpu", **kw}


def test_a_preset_sets_every_value_it_names_and_its_one_step_rule(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    run = settle(_flags(tiny_dataset, tmp_path / "ck", preset="quickstart", vqvae_path=str(tiny_tokenizer)))
    flat = run.config.flags()
    assert {key: flat[key] for key in QUICKSTART.values} == dict(QUICKSTART.values)
    # 40 samples, 2 held out: 38 // 16 = 2 batches per epoch, 34 in all; all but the last 4 are one-step.
    assert flat["one_step_steps"] == 30 and flat["preset"] == "quickstart"
    guide = settle(_flags(tiny_dataset, tmp_path / "ck2", preset="guide")).config.flags()
    asked = {key: value for key, value in presets.train_preset("guide").values.items() if key != "bptt_window"}
    assert {key: guide[key] for key in asked} == asked
    # The guide's window of 32 shrinks to the data's T = 8, as the default's does; its warmup follows the run
    # (36 training samples: 9 batches of 4 per epoch, 90 in all, so a warmup of 9.)
    assert guide["bptt_window"] == 8 and guide["warmup_steps"] == 9


def test_flags_and_a_config_file_override_the_preset(tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.0005\nepochs: 3\n")
    flat = settle(
        _flags(
            tiny_dataset,
            tmp_path / "ck",
            preset="quickstart",
            vqvae_path=str(tiny_tokenizer),
            config=str(config),
            epochs=2,
            batch_size=4,
            base_channels=8,
            one_step_steps=3,
        )
    ).config.flags()
    assert (flat["epochs"], flat["batch_size"], flat["base_channels"], flat["one_step_steps"]) == (2, 4, 8, 3)
    assert flat["lr"] == 0.0005  # the file's, over the preset's 2e-3
    assert (flat["modes"], flat["val_every"], flat["projector_hidden"]) == (8, 6, 64)  # the preset's


def test_a_preset_with_l_latent_asks_for_a_tokenizer_in_its_own_terms(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(
        NoaError, match=r"--preset quickstart trains with L_commit and L_latent, which need a tokenizer"
    ):
        settle(_flags(tiny_dataset, tmp_path / "ck", preset="quickstart"))
    flat = settle(_flags(tiny_dataset, tmp_path / "ck", preset="quickstart", enable_latent_loss=False)).config.flags()
    assert not flat["enable_latent_loss"] and flat["batch_size"] == 16


def test_the_run_records_its_preset_and_a_resume_keeps_its_settings(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    ck = tmp_path / "ck"
    small = dict(TINY_MODEL, batch_size=4, epochs=2, save_every=2)
    train(_flags(tiny_dataset, ck, preset="quickstart", vqvae_path=str(tiny_tokenizer), max_steps=3, **small))
    assert any(line.startswith("noa train: fresh run (preset quickstart) on cpu") for line in train_log)
    args = load_checkpoint(ck / "step_3.pt")["args"]
    assert args["preset"] == "quickstart" and args["lr"] == 2e-3 and args["batch_size"] == 4
    with pytest.raises(NoaError, match=r"--preset guide: step_3.pt's run started with --preset quickstart"):
        train({"resume": "auto", "checkpoint_dir": str(ck), "device": "cpu", "preset": "guide"})
    # The same command line restarts the run (torchrun's restarts): the preset it recorded changes nothing.
    train_log.clear()
    result = train(
        _flags(tiny_dataset, ck, preset="quickstart", vqvae_path=str(tiny_tokenizer), resume="auto", **small)
    )
    assert any(line.startswith("noa train: resume run (preset quickstart)") for line in train_log)
    last = load_checkpoint(ck / "epoch_2.pt")["args"]
    settings = lambda flags: {k: v for k, v in flags.items() if k not in PER_RUN}  # noqa: E731
    assert result.global_step == 2 * 9 and settings(last) == settings(args)


def test_a_fine_tune_keeps_its_checkpoints_architecture_and_takes_the_presets_budget(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    train(_flags(tiny_dataset, source, epochs=1, batch_size=4, bptt_window=2, **TINY_MODEL))
    flat = settle(
        _flags(tiny_dataset, tmp_path / "tuned", init_from=str(source / "epoch_1.pt"), preset="quickstart")
    ).config.flags()
    assert (flat["base_channels"], flat["modes"], flat["batch_size"], flat["bptt_window"]) == (8, 4, 4, 2)
    assert (flat["epochs"], flat["lr"], flat["val_every"], flat["one_step_steps"]) == (17, 2e-3, 6, 0)
    assert flat["preset"] == "quickstart" and not flat["enable_latent_loss"]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--preset", "quikstart"],
        ["vqvae", "train", "--preset", "quikstart", "--out", "TOK"],
    ],
)
def test_an_unknown_preset_is_one_line_naming_the_known_ones(
    argv: list[str], tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a run with the default --checkpoint-dir would write
    argv = [str(tmp_path / "tok") if a == "TOK" else a for a in argv] + ["--dataset", str(tiny_dataset)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    command = "noa vqvae train" if argv[0] == "vqvae" else "noa train"
    assert err == (
        f"error: unknown --preset 'quikstart' (did you mean quickstart?); {command} knows: quickstart, guide "
        f"(`{command} --help` says what each sets)\n"
    )
    assert not any(tmp_path.iterdir())


def test_vqvae_train_takes_a_preset_under_its_flags_and_records_it(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tok"
    argv = ["vqvae", "train", "--dataset", str(tiny_dataset), "--out", str(out), "--preset", "quickstart"]
    assert main([*argv, "--epochs", "1", "--hidden", "16", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["levels"], config["codebook_size"], config["latent_dim"], config["hidden"]) == (4, 16, 8, 16)
    assert json.loads((out / "metrics.json").read_text())["preset"] == "quickstart"
    assert "Training tokenizer (preset quickstart) on 36 samples" in capsys.readouterr().out
    # From Python the preset applies the same way: what is left out comes from it.
    metrics = train_tokenizer_on_dataset(
        tiny_dataset, tmp_path / "api", preset="quickstart", epochs=1, hidden=16, log=lambda _: None, progress=False
    )
    config = json.loads((tmp_path / "api" / "config.json").read_text())["config"]
    assert (config["levels"], config["codebook_size"], config["hidden"]) == (4, 16, 16) and metrics[
        "preset"
    ] == "quickstart"


def test_the_quickstart_trains_with_the_presets_it_always_had() -> None:
    """`noa quickstart` is `--preset quickstart` at its own data sizes: the settings it trained
    with before presets existed, value for value, and 965 of its 969 batches one-step."""
    assert quickstart.noa_settings() == dict(
        n_samples=960,
        val_split=0.05,
        epochs=17,
        val_every=6,
        num_workers=1,
        batch_size=16,
        lr=2e-3,
        bptt_window=8,
        timesteps=16,
        warmup_steps=20,
        one_step_states=1,
        base_channels=16,
        encoder_levels=2,
        modes=8,
        afno_blocks=2,
        projector_hidden=64,
        lambda_commit=0.5,
        enable_latent_loss=True,
        lambda_latent=0.5,
        latent_sample_steps=3,
        save_every=20,
        log_every=10,
    )
    assert QUICKSTART.one_step_steps((960 - 48) // 16 * 17) == 965
    assert tokenizer_settings(quickstart.PRESET, {}) == dict(
        epochs=25, batch_size=64, lr=3e-3, levels=4, codebook_size=16, latent_dim=8, hidden=128, val_split=0.1
    )


def test_the_user_guides_example_family_is_starters_kind_at_other_ranges() -> None:
    """docs/user-guide.md trains examples/my_family.yaml with the presets: it must stay a family
    file `noa data generate --family` reads, restricting what `starter` restricts."""
    mine, starter = load_family(str(REPO / "examples" / "my_family.yaml")), load_family("starter")
    assert mine.name == "my-family" and mine.as_dict()["dimensions"].keys() == starter.as_dict()["dimensions"].keys()
    assert mine.as_dict() != starter.as_dict()
