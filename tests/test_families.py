"""Operator families: files, their messages, the draw, the dataset's record and a cross-family fine-tune."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.stats import qmc

from helpers import run_args
from noa.cli import main
from noa.data.generate import GenerateConfig, generate
from noa.data.h5 import open_dataset, read_info
from noa.data.info import describe
from noa.errors import NoaError
from noa.families import FULL, Choices, Fixed, OperatorFamily, Range, family_from_text, load_family, named_families
from noa.families.difficulty import family_difficulty
from noa.families.show import show_family
from noa.operators.space import CNO_SPACE
from noa.seeding import derive_seed

quiet = lambda _: None  # noqa: E731


def _bad(text: str) -> str:
    with pytest.raises(NoaError) as err:
        family_from_text(text, "f.yaml")
    return str(err.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dimensions: {activation: [gelu", "f.yaml is not valid YAML at the end of line 1"),
        ("- just\n- a list\n", "a family is a mapping with 'dimensions:'"),
        ("dimension: {}\n", "unknown key 'dimension' (did you mean 'dimensions'?)"),
        ("dimensions:\n  activaton: gelu\n", "unknown dimension 'activaton' (did you mean 'activation'?)"),
        (
            "dimensions:\n  weight_gain: {range: [0.1, 1.0]}\n",
            "range [0.1, 1] is outside the dimension's bounds [0.5, 2.5]",
        ),
        ("dimensions:\n  weight_gain: {range: [1.5, 1.0]}\n", "range [1.5, 1] is empty"),
        ("dimensions:\n  n_layers: {range: [2.5, 4]}\n", "needs integer bounds"),
        ("dimensions:\n  weight_gain: {range: [1.0]}\n", "range must be two numbers [low, high]"),
        ("dimensions:\n  activation: {range: [0, 1]}\n", "is a choice (tanh, gelu, silu, sin, relu)"),
        ("dimensions:\n  activation: {choices: [gelu, swish]}\n", "unknown choice 'swish'"),
        ("dimensions:\n  activation: {choices: [gelu, gleu]}\n", "unknown choice 'gleu' (did you mean 'gelu'?)"),
        ("dimensions:\n  activation: {choices: []}\n", "choices must be a non-empty list"),
        ("dimensions:\n  activation: {choices: [gelu, gelu]}\n", "list an option twice"),
        ("dimensions:\n  dt: {choices: [0.01]}\n", "is a numeric dimension"),
        ("dimensions:\n  update_policy: {choices: [residual, convex], weights: [1, 0]}\n", "weights must be positive"),
        ("dimensions:\n  update_policy: {choices: [residual, convex], weights: [-1, 2]}\n", "weights must be positive"),
        ("dimensions:\n  update_policy: {choices: [residual, convex], weights: [1]}\n", "weights must be a list of 2"),
        ("dimensions:\n  dt: {range: [0.01, 0.1], weights: [1]}\n", "weights go with choices"),
        ("dimensions:\n  dt: {range: [0.01, 0.1], fixed: 0.05}\n", "give exactly one of range, choices or fixed"),
        ("dimensions:\n  dt: {rnage: [0.01, 0.1]}\n", "unknown key 'rnage' (did you mean 'range'?)"),
        ("dimensions:\n  n_layers: {fixed: three}\n", "fixed value must be an integer in [2, 5], got 'three'"),
        ("dimensions:\n  n_layers: 2.5\n", "fixed value must be an integer in [2, 5], got 2.5"),
        ("dimensions:\n  weight_gain: {fixed: strong}\n", "fixed value must be a number in [0.5, 2.5], got 'strong'"),
        ("dimensions:\n  activation: {fixed: swish}\n", "unknown option 'swish'; its options are tanh, gelu"),
        ("dimensions:\n  weight_gain: {fixed: 9}\n", "fixed value 9 is outside the dimension's bounds [0.5, 2.5]"),
        # issue 37: a numeric-looking text is still text, and refused where a number is expected
        ("dimensions:\n  noise_scale: {range: ['1e-4', 1e-2]}\n", "range must be two numbers [low, high]"),
        ("dimensions:\n  dt: [0.01, 0.1]\n", "a bare list is ambiguous; write {range: [low, high]}"),
    ],
)
def test_each_bad_family_file_gets_one_clear_message(text: str, expected: str) -> None:
    message = _bad(text)
    assert message.startswith("f.yaml") and expected in message, message


def test_family_files_are_read_with_a_safe_loader(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    text = f"name: !!python/object/apply:os.system ['touch {planted}']\ndimensions: {{}}\n"
    assert "is not valid YAML" in _bad(text)
    assert not planted.exists()


def test_named_families_and_a_custom_one_round_trip_through_yaml() -> None:
    assert named_families() == ["full", "spinlock", "starter"]
    custom = OperatorFamily(
        "mine",
        "convex, one activation",
        {
            "activation": Fixed("gelu"),
            "kernel_size": Choices(("3", "7"), (1.0, 2.0)),
            "n_layers": Range(2, 4),
            "noise_scale": Range(1e-4, 1e-2),
            "update_policy": Fixed("convex"),
        },
    )
    for family in [*(load_family(n) for n in named_families()), custom]:
        assert family_from_text(family.to_yaml(), "round trip") == family
    assert load_family("full") == FULL


def test_a_family_that_narrows_nothing_draws_the_full_spaces_sobol_points() -> None:
    sampler = qmc.Sobol(d=CNO_SPACE.size, scramble=True, seed=derive_seed(5, "sobol"))
    assert np.array_equal(FULL.draw(100, 5), sampler.random_base2(7)[:100].astype(np.float32))
    starter = load_family("starter")
    assert np.array_equal(starter.draw(5, 1), starter.draw(8, 1)[:5])  # a prefix of a longer draw


def test_draw_honours_choice_weights_fixed_values_and_ranges() -> None:
    family = family_from_text(
        "dimensions:\n"
        "  update_policy: {choices: [residual, convex], weights: [0.75, 0.25]}\n"
        "  activation: {choices: [gelu, tanh, relu], weights: [1, 1, 2]}\n"
        "  kernel_size: {fixed: 5}\n"
        "  base_channels: {range: [20, 23]}\n"
        "  noise_scale: {range: [0.001, 0.1]}\n"
        "  weight_gain: {fixed: 1.25}\n",
        "weights.yaml",
    )
    n = 2000
    rows = [CNO_SPACE.decode(r) for r in torch.from_numpy(family.draw(n, 3))]

    def within_binomial(count: int, p: float) -> bool:
        return abs(count - n * p) <= 4 * (n * p * (1 - p)) ** 0.5

    assert within_binomial(sum(r["update_policy"] == "convex" for r in rows), 0.25)
    assert within_binomial(sum(r["activation"] == "relu" for r in rows), 0.5)
    assert within_binomial(sum(r["activation"] == "gelu" for r in rows), 0.25)
    assert {r["kernel_size"] for r in rows} == {5}
    assert all(r["weight_gain"] == pytest.approx(1.25, rel=1e-6) for r in rows)
    assert {r["base_channels"] for r in rows} == {20, 21, 22, 23}
    noise = np.log10([r["noise_scale"] for r in rows])  # log scale kept: log10 uniform on [-3, -1]
    assert noise.min() >= -3 - 1e-6 and noise.max() <= -1 + 1e-6 and abs(np.median(noise) + 2) < 0.05
    assert all(family.contains(r) for r in family.draw(n, 3))
    assert not family.contains(FULL.draw(1, 0)[0])


def test_starter_is_a_family_of_real_maps_not_constant_fields() -> None:
    measured = family_difficulty(load_family("starter"), operators=16, seed=1)
    assert set(measured) == {"residual", "convex"}
    assert all(m["relative"] >= 0.5 for m in measured.values()), measured


def test_the_dataset_records_its_family_and_info_and_show_print_it(tmp_path: Path) -> None:
    family_file = tmp_path / "convex.yaml"
    family_file.write_text("name: convex-gelu\ndimensions:\n  update_policy: convex\n  activation: {fixed: gelu}\n")
    out = tmp_path / "convex.h5"
    assert main(["data", "generate", "--out", str(out), "--n-samples", "6", "--grid", "16", "--timesteps", "2",
                 "--no-features", "--no-progress", "--family", str(family_file), "--seed", "4"]) == 0  # fmt: skip
    with open_dataset(out) as f:
        info = read_info(f)
        theta = f["parameters/params"][:]
    assert info.operator_family.name == "convex-gelu" and info.operator_family == load_family(str(family_file))
    assert {CNO_SPACE.decode(r)["update_policy"] for r in theta} == {"convex"}
    text = describe(out)
    assert "operator family: convex-gelu" in text and "update_policy      fixed at convex" in text
    shown = show_family(str(out), difficulty=False)
    assert "recorded by dataset" in shown and "--seed 4 --n-samples 6" in shown
    # The shown family regenerates the same θ with the same seed.
    copy = tmp_path / "copy.yaml"
    copy.write_text(shown)
    again = tmp_path / "again.h5"
    generate(GenerateConfig(n_samples=6, grid=16, timesteps=2, seed=4, features=False,
                            family=load_family(str(copy)).as_dict()), again, progress=False, log=quiet)  # fmt: skip
    with h5py.File(again) as f:
        assert np.array_equal(f["parameters/params"][:], theta)


def test_a_bad_family_file_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dimensions:\n  weight_gain: {range: [2, 3]}\n")
    out = tmp_path / "d.h5"
    assert main(["data", "generate", "--out", str(out), "--n-samples", "4", "--family", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the dimension's bounds" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
    assert main(["data", "generate", "--out", str(out), "--n-samples", "4", "--family", "startr"]) == 2
    assert "did you mean 'starter'?" in capsys.readouterr().err
    assert main(["family", "show", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_family_show_prints_a_file_that_family_reads_with_its_difficulty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["family", "show", "spinlock", "--operators", "8"]) == 0
    shown = capsys.readouterr().out
    assert "residual" in shown and "relative gain" in shown and "activation: {fixed: gelu}" in shown
    path = tmp_path / "spinlock-copy.yaml"
    path.write_text(shown)
    assert load_family(str(path)) == load_family("spinlock")
    assert main(["family", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("full")


def test_files_made_before_families_read_as_the_full_family(tiny_dataset: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.h5"
    old.write_bytes(tiny_dataset.read_bytes())
    with h5py.File(old, "r+") as f:
        del f.attrs["operator_family"]
    with open_dataset(old) as f:
        assert read_info(f).operator_family == FULL


def test_a_noa_trained_on_one_family_evaluates_and_fine_tunes_on_another(tiny_dataset: Path, tmp_path: Path) -> None:
    from noa.diagnostics import diagnose
    from noa.train.loop import train

    starter = tmp_path / "starter.h5"
    generate(GenerateConfig(n_samples=16, grid=16, timesteps=8, seed=2, store_trajectories=True,
                            family=load_family("starter").as_dict()), starter, progress=False, log=quiet)  # fmt: skip
    general = train(run_args(tiny_dataset, tmp_path / "general", epochs=1, bptt_window=4, warmup_steps=1))
    assert general.global_step > 0
    on_starter = diagnose(tmp_path / "general" / "best_model.pt", None, starter, n_samples=4, log=quiet)
    assert on_starter.rollout.overall_mse > 0
    pretrained = str(tmp_path / "general" / "best_model.pt")
    tuned = train(run_args(starter, tmp_path / "tuned", epochs=1, bptt_window=4, init_from=pretrained, lr=1e-4))
    assert tuned.global_step > 0
    result = diagnose(tmp_path / "tuned" / "best_model.pt", None, starter, n_samples=4, log=quiet)
    assert np.isfinite(result.rollout.overall_mse)
    assert "Family:     starter" in result.text and result.run["data"]["operator_family"]["name"] == "starter"


def test_a_new_noa_scales_theta_to_its_datasets_family_and_a_fine_tune_keeps_that_box(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from noa.train.checkpoint import load_checkpoint
    from noa.train.loop import train

    caplog.set_level(logging.INFO, logger="noa.train")

    starter = load_family("starter")
    data = tmp_path / "starter.h5"
    generate(GenerateConfig(n_samples=16, grid=16, timesteps=8, seed=3, store_trajectories=True,
                            family=starter.as_dict()), data, progress=False, log=quiet)  # fmt: skip
    train(run_args(data, tmp_path / "starter_run", epochs=1, bptt_window=4, warmup_steps=1))
    saved = load_checkpoint(tmp_path / "starter_run" / "best_model.pt")
    assert saved["config"]["theta_box"] == starter.unit_box()
    assert "θ scaled to family starter's box, the data's family" in caplog.text  # the start line says whose
    # A fine-tune on the full family's data keeps the model it starts from, box included.
    pretrained = str(tmp_path / "starter_run" / "best_model.pt")
    train(run_args(tiny_dataset, tmp_path / "tuned", epochs=1, bptt_window=4, init_from=pretrained, lr=1e-4))
    tuned = load_checkpoint(tmp_path / "tuned" / "best_model.pt")
    assert tuned["config"]["theta_box"] == starter.unit_box()
    # A NOA of the full family's data has no box: its θ embedding reads 2θ - 1, as before the box.
    train(run_args(tiny_dataset, tmp_path / "full_run", epochs=1, bptt_window=4, warmup_steps=1))
    full = load_checkpoint(tmp_path / "full_run" / "best_model.pt")
    assert full["config"]["theta_box"] is None


# ---- issue 37, item 8: numbers as researchers write them, a key given twice, one clean message ----


def test_exponent_notation_without_a_dot_reads_as_a_number() -> None:
    family = family_from_text("dimensions:\n  noise_scale: {range: [1e-4, 1e-2]}\n  dt: {fixed: 5E-2}\n", "f.yaml")
    assert family.restrictions["noise_scale"] == Range(1e-4, 1e-2)
    assert family.restrictions["dt"] == Fixed(0.05)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "name: mine\ndimensions:\n  dt: {range: [0.05, 0.2]}\n  alpha: 0.5\n  dt: {range: [0.1, 0.2]}\n",
            "f.yaml: dimension 'dt' is given twice (lines 3 and 5); keep one of them",
        ),
        ("name: a\ndimensions: {}\nname: b\n", "f.yaml: key 'name' is given twice (lines 1 and 3); keep one"),
        (
            "dimensions:\n  dt: {range: [0.05, 0.2], range: [0.1, 0.2]}\n",
            "f.yaml: key 'range' is given twice (both on line 2)",
        ),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(text: str, expected: str) -> None:
    assert _bad(text).startswith(expected)


@pytest.mark.parametrize("written, meant", [("Tanh", "tanh"), ("GELU", "gelu"), ("gleu", "gelu")])
def test_a_mistyped_fixed_option_gets_one_message_with_a_suggestion(written: str, meant: str) -> None:
    message = _bad(f"dimensions:\n  activation: {written}\n")
    assert message == (
        f"f.yaml: activation: unknown option {written!r} (did you mean {meant!r}?); "
        "its options are tanh, gelu, silu, sin, relu"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        # the unclosed bracket is on line 3 of 3: no line 4 is named as where the mistake is
        (
            "name: x\ndimensions:\n  dt: {range: [0.1, 0.2]\n",
            "f.yaml is not valid YAML at the end of line 3: expected ',' or '}', but got '<stream end>' "
            "(while parsing a flow mapping from line 3, column 7)",
        ),
        (
            "name: x\ndimensions:\n  dt: {range: [0.1, 0.2]\n  alpha: 0.3\n",
            "(while parsing a flow mapping from line 3, column 7)",
        ),
        ("name: x\ndimensions:\n\tdt: 0.1\n", "f.yaml is not valid YAML at line 3, column 1: found character '\\t'"),
    ],
)
def test_a_yaml_error_names_the_line_the_mistake_is_on(text: str, expected: str) -> None:
    message = _bad(text)
    assert expected in message, message


def test_drawing_no_operators_gives_no_rows_and_a_negative_count_is_refused() -> None:
    starter = load_family("starter")
    assert starter.draw(0, 0).shape == (0, CNO_SPACE.size)
    assert FULL.draw(0, 3).dtype == np.float32
    with pytest.raises(NoaError, match="a family draws a whole number of operators"):
        starter.draw(-1, 0)


@pytest.mark.parametrize(
    "rule, inert, active",
    [("convex", "dt", "alpha"), ("residual", "alpha", "dt"), ("{choices: [convex]}", "dt", "alpha")],
)
def test_a_one_rule_family_fixes_the_parameter_its_rule_never_reads(
    rule: str, inert: str, active: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = family_from_text(f"dimensions:\n  update_policy: {rule}\n  dt: {{range: [0.05, 0.2]}}\n", "f.yaml")
    theta = family.draw(64, 2)
    i, j = CNO_SPACE.position(inert), CNO_SPACE.position(active)
    assert len(set(theta[:, i].tolist())) == 1 and len(set(theta[:, j].tolist())) == 64
    low, high = family.unit_box()[i]
    assert low == high == pytest.approx(float(theta[0, i]))
    value = CNO_SPACE.decode(theta[0])[inert]
    expected = 0.1 if inert == "dt" else 0.525  # the centre, in unit coordinates, of what the family allows
    assert value == pytest.approx(expected, rel=1e-5)
    assert all(family.contains(r) for r in theta)
    assert any("(inert: no operator has update_policy" in line for line in family.describe())
    # The operators are those drawn before the inert dimension was fixed: only its column differs.
    monkeypatch.setattr(OperatorFamily, "inert", lambda self: {})
    before = family.draw(64, 2)
    assert len(set(before[:, i].tolist())) == 64
    others = [k for k in range(CNO_SPACE.size) if k != i]
    assert np.array_equal(theta[:, others], before[:, others])


def test_a_family_with_both_rules_keeps_dt_and_alpha_varying() -> None:
    starter = load_family("starter")
    assert starter.inert() == {} and starter.rules() == dict(starter.restrictions)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dimensions:\n  dt: {range: [0.05, 0.2]}\n  dt: 0.1\n", "dimension 'dt' is given twice (lines 2 and 3)"),
        ("dimensions:\n  activation: Tanh\n", "unknown option 'Tanh' (did you mean 'tanh'?)"),
        ("dimensions:\n  dt: {range: [0.05, 0.2]\n", "is not valid YAML at the end of line 2"),
    ],
)
def test_the_new_family_messages_are_one_line_from_the_cli_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["data", "generate", "--out", str(tmp_path / "d.h5"), "--n-samples", "4", "--family", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and err.count("\n") == 1 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
    assert main(["family", "show", str(bad)]) == 2
    assert expected in capsys.readouterr().err
