"""The `noa` command: one sub-command per pipeline stage, each a thin call into the package.

User mistakes surface as :class:`noa.errors.NoaError` and are printed as one line with exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import errno
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from noa.errors import NoaError
from noa.threads import apply_threads

if TYPE_CHECKING:
    from noa.data.generate import Progress


class _DefaultsHelp(argparse.HelpFormatter):
    """Every option that takes a value shows its default in --help (unless its help says it)."""

    @staticmethod
    def _adds_default(action: argparse.Action) -> bool:
        said = "default" in (action.help or "").lower()
        return (
            bool(action.option_strings)
            and action.nargs != 0
            and action.default not in (None, argparse.SUPPRESS)
            and not said
        )

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._adds_default(action):  # argparse shows no help line at all without a help text
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
            return super()._format_action(action)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return f"{text} (default: %(default)s)" if text and self._adds_default(action) else text


class _RenamedFlag(argparse.Action):
    """A flag's former name: sets what the new name sets, and says once on stderr that it was renamed."""

    def __init__(self, option_strings: Sequence[str], dest: str, new_name: str, **kwargs: Any) -> None:
        self.new_name = new_name
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"Warning: {option_string} is deprecated; use {self.new_name} (same values)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: OMP_NUM_THREADS, else half the cores idle at start-up); see docs/user-guide.md",
    )


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate, inspect and featurize datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{generate,info,features}")

    gen = data_sub.add_parser(
        "generate",
        help="sample operators and ICs, replay them and write an HDF5 dataset",
        description="Draw θ from a scrambled Sobol sequence (θ alone defines the operator), an initial condition and a noise seed per "
        "sample, replay every CNO rollout (flagging divergent ones) and write a self-describing HDF5 file. "
        "Interrupted runs continue with --resume.",
    )
    gen.add_argument("--out", required=True, help="path of the .h5 file to write")
    gen.add_argument("--n-samples", type=int, required=True, help="number of samples")
    gen.add_argument("--grid", type=int, default=64, help="grid size (square, periodic); default 64")
    gen.add_argument("--timesteps", type=int, default=256, help="rollout length T; default 256")
    gen.add_argument("--realizations", type=int, default=1, help="stochastic realizations M per sample; default 1")
    gen.add_argument("--seed", type=int, default=0, help="dataset seed; default 0")
    gen.add_argument(
        "--family",
        default="full",
        metavar="FILE|NAME",
        help="the operator family θ is drawn from: a YAML file or a shipped family (full, spinlock, starter; "
        "`noa family show NAME` prints one to copy and edit); default full",
    )
    gen.add_argument(
        "--ic-kinds",
        nargs="+",
        default=None,
        metavar="KIND",
        help="initial-condition kinds to cycle through, of gaussian_random_field multiscale_grf structured "
        "localized sinusoid (default: all; formerly --ic-families)",
    )
    gen.add_argument(  # the flag's name before IC kinds were called kinds
        "--ic-families", nargs="+", dest="ic_kinds", action=_RenamedFlag, new_name="--ic-kinds", help=argparse.SUPPRESS
    )
    gen.add_argument("--store-trajectories", action="store_true", help="also store the replayed trajectories (a cache)")
    gen.add_argument(
        "--no-features",
        action="store_true",
        help="skip the behavioural features (compute later with `noa data features`)",
    )
    gen.add_argument("--batch-size", type=int, default=16, help="operators replayed together; default 16")
    gen.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the replay on this machine (under torchrun every rank is one); default 1",
    )
    gen.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present); default auto")
    gen.add_argument(
        "--resume", action="store_true", help="continue an interrupted generation of the same configuration"
    )
    gen.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out (kept until the new file is complete)"
    )
    gen.add_argument(
        "--no-progress", action="store_true", help="no progress bar on a terminal, no progress lines off one"
    )
    _threads_flag(gen)
    gen.set_defaults(handler=_data_generate)

    info = data_sub.add_parser("info", help="summarize a dataset file")
    info.add_argument("path", help="dataset .h5 file written by `noa data generate`")
    info.set_defaults(handler=_data_info)

    feats = data_sub.add_parser("features", help="replay a dataset and store its behavioural features (resumable)")
    feats.add_argument("path", help="dataset .h5 file written by `noa data generate` (e.g. with --no-features)")
    feats.add_argument("--batch-size", type=int, default=16, help="operators replayed together")
    feats.add_argument("--workers", type=int, default=1, help="processes sharing the replay; default 1")
    feats.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present); default auto")
    feats.add_argument("--overwrite", action="store_true", help="recompute complete features")
    feats.add_argument(
        "--no-progress", action="store_true", help="no progress bar on a terminal, no progress lines off one"
    )
    _threads_flag(feats)
    feats.set_defaults(handler=_data_features)


def _data_generate(args: argparse.Namespace) -> None:
    from noa.data.generate import GenerateConfig, generate
    from noa.data.ics import IC_KINDS
    from noa.data.info import describe
    from noa.families import load_family
    from noa.runtime import resolve_device

    cfg = GenerateConfig(
        n_samples=args.n_samples,
        grid=args.grid,
        timesteps=args.timesteps,
        realizations=args.realizations,
        seed=args.seed,
        ic_kinds=list(args.ic_kinds or IC_KINDS),
        store_trajectories=args.store_trajectories,
        features=not args.no_features,
        family=load_family(args.family).as_dict(),
    )
    path = generate(
        cfg,
        args.out,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        workers=args.workers,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=_bar_or_lines(args),
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 wrote the file and reports it
        print(f"Wrote {path}")
        print(describe(path))


def _data_info(args: argparse.Namespace) -> None:
    from noa.data.info import describe

    print(describe(args.path))


def _data_features(args: argparse.Namespace) -> None:
    from noa.data.generate import add_features
    from noa.runtime import resolve_device

    add_features(
        args.path,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        workers=args.workers,
        overwrite=args.overwrite,
        progress=_bar_or_lines(args),
    )
    print(f"Features stored in {args.path}")


def _add_family(sub: argparse._SubParsersAction) -> None:
    family = sub.add_parser("family", help="show the operator families θ can be drawn from")
    family_sub = family.add_subparsers(dest="family_command", required=True, metavar="{show,list}")
    show = family_sub.add_parser(
        "show",
        help="print a family as the YAML file --family reads, and how hard its maps are to emulate",
        description="Print a shipped family, a family file or a dataset's recorded family as the YAML that "
        "`noa data generate --family` reads (redirect it to a file to edit it), followed by comments: the family "
        "in words and a training-free measure of how hard its operators' maps are to emulate, per update rule.",
    )
    show.add_argument("family", metavar="NAME|FILE|DATASET", help="a shipped family, a YAML file or a dataset .h5")
    show.add_argument("--no-difficulty", action="store_true", help="skip the difficulty measure (a few seconds)")
    show.add_argument("--operators", type=int, default=32, help="operators drawn for the difficulty measure")
    show.set_defaults(handler=_family_show)
    listing = family_sub.add_parser("list", help="the families shipped with noa, one line each")
    listing.set_defaults(handler=_family_list)


def _family_show(args: argparse.Namespace) -> None:
    from noa.families.show import show_family

    if args.operators < 2:
        raise NoaError(f"--operators must be at least 2; got {args.operators}")
    print(show_family(args.family, difficulty=not args.no_difficulty, operators=args.operators), end="")


def _family_list(args: argparse.Namespace) -> None:
    from noa.families import load_family, named_families

    for name in named_families():
        print(f"{name:<10} {load_family(name).description}")


def _add_vqvae(sub: argparse._SubParsersAction) -> None:
    vq = sub.add_parser("vqvae", help="train and inspect the behavioural tokenizer (categorical hierarchical VQ-VAE)")
    vq_sub = vq.add_subparsers(dest="vqvae_command", required=True, metavar="{train,info}")
    tr = vq_sub.add_parser(
        "train",
        help="train the tokenizer on a dataset's features",
        description="Train the frozen behavioural tokenizer (INITIAL / SUMMARY / TEMPORAL categories, residual "
        "levels of EMA codebooks) on a dataset's stored features and write its checkpoint directory.",
    )
    tr.add_argument("--dataset", required=True, help="dataset with features (see `noa data features`)")
    tr.add_argument("--out", required=True, help="checkpoint directory to create")
    _tokenizer_settings_flags(tr)
    tr.add_argument("--n-samples", type=int, default=None, help="use the first N valid samples (default: all)")
    tr.add_argument("--seed", type=int, default=0, help="seed of the split, the data order and the initialisation")
    tr.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present); default auto")
    tr.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    _threads_flag(tr)
    tr.set_defaults(handler=_vqvae_train)
    info = vq_sub.add_parser("info", help="print a tokenizer's config and metrics")
    info.add_argument("path", help="tokenizer directory written by `noa vqvae train`")
    info.set_defaults(handler=_vqvae_info)


# The tokenizer's settings a --preset sets: (type, help); their defaults are noa.tokenizer.job.DEFAULTS.
_TOKENIZER_SETTINGS: dict[str, tuple[type, str]] = {
    "epochs": (int, "training epochs (AdamW with cosine decay)"),
    "batch_size": (int, "samples per batch"),
    "lr": (float, "peak learning rate"),
    "levels": (int, "residual quantization levels per category"),
    "codebook_size": (int, "codes per codebook"),
    "latent_dim": (int, "latent width per category and level"),
    "hidden": (int, "encoder/decoder width"),
    "val_split": (float, "fraction of samples held out for the metrics"),
}


def _tokenizer_settings_flags(parser: argparse.ArgumentParser) -> None:
    """The settings --preset fills in, with no argparse default: a flag given overrides the preset."""
    from noa.presets import TOKENIZER_PRESETS, help_text
    from noa.tokenizer.job import DEFAULTS

    parser.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help=help_text(
            TOKENIZER_PRESETS, "Flags given override its values; metrics.json records its name (default: none)"
        ),
    )
    for key, (kind, text) in _TOKENIZER_SETTINGS.items():
        parser.add_argument(
            "--" + key.replace("_", "-"),
            type=kind,
            default=None,
            help=f"{text} (default: {DEFAULTS[key]}, or the preset's)",
        )


def _vqvae_train(args: argparse.Namespace) -> None:
    from noa.runtime import resolve_device
    from noa.tokenizer import tokenizer_info
    from noa.tokenizer.job import train_tokenizer_on_dataset

    train_tokenizer_on_dataset(
        args.dataset,
        args.out,
        **{key: getattr(args, key) for key in _TOKENIZER_SETTINGS},
        preset=args.preset,
        seed=args.seed,
        device=resolve_device(args.device),
        n_samples=args.n_samples,
        overwrite=args.overwrite,
        progress=_bars(args),
    )
    print(tokenizer_info(args.out))


def _vqvae_info(args: argparse.Namespace) -> None:
    from noa.tokenizer import tokenizer_info

    print(tokenizer_info(args.path))


def _add_train(sub: argparse._SubParsersAction) -> None:
    from noa.train.config import add_train_arguments

    train = sub.add_parser(
        "train",
        help="train a NOA against CNO rollouts (L_traj + λ_commit·L_commit + λ_latent·L_latent, TBPTT)",
        description="Train a θ-conditioned U-AFNO to reproduce CNO rollouts with truncated BPTT, optionally "
        "aligned with a frozen tokenizer (--vqvae-path, --enable-latent-loss). Checkpoints step_N.pt, "
        "epoch_N.pt and best_model.pt go to --checkpoint-dir; --resume continues a run exactly.",
    )
    add_train_arguments(train)
    _threads_flag(train)
    train.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from noa.train.loop import TrainingInterrupted, train

    try:
        result = train(vars(args))
    except TrainingInterrupted as stop:  # a stop asked for (Ctrl-C, a scheduler's SIGTERM), not an error
        print(f"Stopped: {stop}", file=sys.stderr)
        return stop.exit_code
    logging.getLogger("noa.train").info(
        f"\nTraining finished at step {result.global_step}; {result.validation}; checkpoints in {result.checkpoint_dir}"
    )
    return 0


def _add_diagnose(sub: argparse._SubParsersAction) -> None:
    from noa.diagnostics.report import add_diagnose_arguments, run_diagnose

    diag = sub.add_parser(
        "diagnose",
        help="evaluate a trained NOA: the guide's alignment report, rollout quality, plots",
        description="Roll out a NOA checkpoint on held-out samples and report VQ reconstruction, token diversity, "
        "alignment correlation, temporal consistency and rollout quality (noise floor, family floor, persistence, VRMSE); "
        "writes report.md, summary.json and plots to --out.",
    )
    add_diagnose_arguments(diag)
    _threads_flag(diag)
    diag.set_defaults(handler=run_diagnose)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from noa.diagnostics.report import add_evaluation_arguments

    cmp = sub.add_parser(
        "compare",
        help="score several NOA checkpoints on the same held-out rows: a table per update rule and horizon, a plot, JSON",
        description="Evaluate every checkpoint on the same rows of --dataset, those held out from every run (each run's "
        "training rows left out), and write compare.md (MSE / noise floor, persistence, VRMSE per horizon step and "
        "update rule; one-step skill; non-INITIAL token agreement where a run's tokenizer fits), error_vs_horizon.png "
        "(one line per run) and summary.json to --out.",
    )
    cmp.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="NOA checkpoint files (.pt), two or more")
    cmp.add_argument("--dataset", required=True, help="dataset .h5 to score every run on")
    cmp.add_argument("--out", required=True, help="directory for compare.md, summary.json and error_vs_horizon.png")
    cmp.add_argument(
        "--names",
        default=None,
        metavar="A,B,...",
        help="labels of the runs in the tables, one per checkpoint in their order (default: the parts of the "
        "checkpoints' paths that tell them apart)",
    )
    add_evaluation_arguments(cmp, "the dataset's T", runs=True)
    _threads_flag(cmp)
    cmp.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from noa import outputs
    from noa.diagnostics.compare import check_compare_dir, compare, format_comparison, split_flag, write_comparison
    from noa.diagnostics.report import evaluation_options

    options = evaluation_options(args)
    options["vqvae_class"] = split_flag(args.vqvae_class)
    names = split_flag(args.names)
    out = Path(args.out)
    with outputs.exclusive(out, "--out"):
        check_compare_dir(out)
        result = compare(
            args.checkpoints, args.dataset, names=names, log=logging.getLogger("noa.compare").info, **options
        )
        print(format_comparison(result), end="")
        print(f"Comparison written to {write_comparison(result, out)}")
    return 0


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    qs = sub.add_parser(
        "quickstart",
        help="the whole pipeline on a small embedded default: data, tokenizer, NOA (stop + resume), diagnosis",
        description="Run the whole pipeline at a laptop's scale. Interrupted, the same command continues where it "
        "stopped (finished stages are kept); --overwrite starts over.",
    )
    qs.add_argument("--out", default="noa-quickstart", help="working directory; default ./noa-quickstart")
    qs.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present); default auto")
    qs.add_argument("--seed", type=int, default=0, help="seed of every stage (data, tokenizer, NOA)")
    qs.add_argument(
        "--overwrite",
        action="store_true",
        help="start over: replace what an earlier quickstart wrote in --out (a folder without its marker is refused)",
    )
    _threads_flag(qs)
    qs.set_defaults(handler=_quickstart)


def _quickstart(args: argparse.Namespace) -> int:
    from noa.quickstart import run_quickstart
    from noa.runtime import resolve_device

    run_quickstart(args.out, device=resolve_device(args.device), seed=args.seed, overwrite=args.overwrite)
    return 0


class _SubParser(argparse.ArgumentParser):
    """Sub-command parsers (at every depth) format their help with :class:`_DefaultsHelp`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _DefaultsHelp)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # The deepest parser that parses sets this last: the one an unknown flag is reported by.
        self.set_defaults(leaf_parser=self)

    def add_subparsers(self, **kwargs: object) -> argparse._SubParsersAction:
        kwargs.setdefault("parser_class", _SubParser)
        return super().add_subparsers(**kwargs)  # type: ignore[call-overload]


def _version() -> str:
    """The installed distribution's version, else the package's own (a source checkout on PYTHONPATH)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("noa")
    except PackageNotFoundError:
        from noa import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _SubParser(
        prog="noa",
        description="Neural Operator Agents: generate CNO datasets, train the behavioural tokenizer, "
        "train and diagnose U-AFNO agents.",
    )
    parser.add_argument("--version", action="version", version=f"noa {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_SubParser)
    _add_data(sub)
    _add_family(sub)
    _add_vqvae(sub)
    _add_train(sub)
    _add_diagnose(sub)
    _add_compare(sub)
    _add_quickstart(sub)
    return parser


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of each line (it may be redirected)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _bars(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: in a log file their carriage returns are noise."""
    return not args.no_progress and sys.stderr.isatty()


def _bar_or_lines(args: argparse.Namespace) -> Progress:
    """A bar on a terminal; off one (nohup, Slurm, a pipe), a plain line per tenth of the work."""
    if args.no_progress:
        return False
    return True if sys.stderr.isatty() else "lines"


def _show_progress_lines() -> None:
    """The library logs through ``logging`` ("noa.*"); the command prints those lines as they are."""
    logger = logging.getLogger("noa")
    if not logger.handlers:
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        # Under torchrun every rank runs this; rank 0 tells the story, the others only warn.
        logger.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    _show_progress_lines()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    leaf = args.__dict__.pop("leaf_parser", parser)
    if unknown:
        leaf.error(_unrecognized(leaf, unknown))
    try:
        if "threads" in args:
            logging.getLogger("noa").info(f"CPU threads: {apply_threads(args.threads)}")
        status = args.handler(args)
    except NoaError as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except BrokenPipeError:
        return _reader_went_away()
    except OSError as err:
        if not _environment_fault(err):
            raise
        print(f"error: {_environment_message(err)}; {_ENVIRONMENT_FIX}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "Stopped: interrupted (Ctrl-C); outputs are only ever replaced whole, so none was left half-written: run the command again",
            file=sys.stderr,
        )
        return 130
    return int(status or 0)


def _unrecognized(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """argparse's message, naming the sub-command's flag each unknown one is closest to."""
    known = [option for action in parser._actions for option in action.option_strings]
    guesses = []
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        close = (
            difflib.get_close_matches(flag.replace("_", "-"), known, n=1, cutoff=0.75) if flag.startswith("-") else []
        )
        if close:
            guesses.append(f"{flag}: did you mean {close[0]}?")
    return f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(guesses)})" if guesses else "")


def _reader_went_away() -> int:
    """``noa data info X | head``: the reader closed the pipe. Stop quietly, as a Unix tool does
    (and keep Python's exit-time flush of stdout from failing again into a traceback)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13  # SIGPIPE's status


# Faults of the machine rather than of noa: the message names the file and the cause, no traceback.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
_ENVIRONMENT_FIX = (
    "free disk space or fix the permissions, then rerun (an interrupted generation or training continues with --resume)"
)


def _environment_message(err: OSError) -> str:
    """One line: the file and the cause (h5py's messages span lines and name both inside)."""
    text = str(err)
    match = re.search(r"filename = '([^']+)'", text)
    filename = err.filename or (match.group(1) if match else "a file")
    cause = err.strerror or next(
        (
            t
            for t in ("No space left on device", "Read-only file system", "Permission denied", "Disk quota exceeded")
            if t in text
        ),
        text,
    )
    return f"{cause} while writing {filename}"


def _environment_fault(err: OSError) -> bool:
    """A full disk, a read-only file system or a permission refusal (h5py reports them in its message only)."""
    return err.errno in _ENVIRONMENT_ERRNOS or any(
        text in str(err)
        for text in ("No space left on device", "Read-only file system", "Permission denied", "Disk quota exceeded")
    )


if __name__ == "__main__":
    sys.exit(main())
