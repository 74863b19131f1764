"""A tokenizer class the user names (``--vqvae-class MODULE_OR_FILE:CLASS``), and nothing else.

noa imports code only from what the user typed or passed: never from a name stored in a
checkpoint or a tokenizer directory, so opening either can not run code. A checkpoint records
the class it was trained with so that a resume or diagnosis can say which one to pass.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType

from noa.errors import NoaError
from noa.tokenizer.protocol import METHODS

FORM = "MODULE_OR_FILE:CLASS (e.g. examples/custom_tokenizer.py:PCATokenizer or mypackage.tokens:MyTokenizer)"
OWN = "noa's own tokenizer"


def spec_of(vqvae_class: str | type) -> str:
    """The text that names a class: as given, or ``module:qualname`` for a class object."""
    return vqvae_class if isinstance(vqvae_class, str) else f"{vqvae_class.__module__}:{vqvae_class.__qualname__}"


def class_name(spec: str | None) -> str:
    """The CLASS of ``MODULE_OR_FILE:CLASS`` (what two specs of one class share), or noa's own."""
    return OWN if spec is None else spec.rpartition(":")[2]


def resolve_class(vqvae_class: str | type) -> type:
    """The class ``vqvae_class`` names (imported from the user's module or file), checked to have
    every method of the tokenizer protocol; NoaError with one message otherwise."""
    if isinstance(vqvae_class, str):
        cls = _import_class(vqvae_class)
    elif isinstance(vqvae_class, type):
        cls = vqvae_class
    else:
        raise NoaError(f"a tokenizer class is {FORM} or a class object, not a {type(vqvae_class).__name__}")
    missing = [name for name in METHODS if not callable(getattr(cls, name, None))]
    if missing:
        raise NoaError(
            f"tokenizer class {spec_of(vqvae_class)} lacks the tokenizer protocol's "
            f"{'method' if len(missing) == 1 else 'methods'} {', '.join(missing)}; "
            "see docs/api.md (noa.TokenizerProtocol) for what noa calls"
        )
    return cls


def _import_class(spec: str) -> type:
    source, colon, name = spec.strip().rpartition(":")
    if not colon or not source or not name.isidentifier():
        raise NoaError(f"tokenizer class {spec!r} is not {FORM}")
    module = _import_file(source) if names_a_file(source) else _import_module(source)
    found = getattr(module, name, None)
    if found is None:
        classes = [n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")]
        close = difflib.get_close_matches(name, classes, n=1)
        hint = f"did you mean {close[0]}?" if close else f"it defines {', '.join(sorted(classes)) or 'no class'}"
        raise NoaError(f"tokenizer class {spec}: {source} has no class {name}; {hint}")
    if not isinstance(found, type):
        raise NoaError(f"tokenizer class {spec}: {name} in {source} is a {type(found).__name__}, not a class")
    return found


def absolute(spec: str) -> str:
    """``FILE:CLASS`` with its file made absolute (what a checkpoint records, so the command a
    resume is told to pass works from any directory); a module's name is kept as it is."""
    source, colon, name = spec.rpartition(":")
    return f"{os.path.abspath(source)}:{name}" if colon and names_a_file(source) else spec


def names_a_file(source: str) -> bool:
    """Whether the MODULE_OR_FILE part names a file (a path) rather than a module."""
    return source.endswith(".py") or "/" in source or "\\" in source


def _import_file(source: str) -> ModuleType:
    path = Path(source)
    if not path.is_file():
        raise NoaError(
            f"tokenizer class file {source} does not exist; give the path of a .py file (or a module name "
            "importable from the Python path)"
        )
    resolved = path.resolve()
    # One module per file, under a name no other module has: importing it twice reuses it.
    name = "noa_tokenizer_class_" + hashlib.blake2b(str(resolved).encode(), digest_size=6).hexdigest()
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise NoaError(f"tokenizer class file {source} is not a Python module; give the path of a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as import does (dataclasses look their module up)
    try:
        spec.loader.exec_module(module)
    # The user's module can raise anything while it runs; each is one message naming the file.
    except Exception as err:
        del sys.modules[name]
        raise NoaError(f"tokenizer class file {source} does not import: {type(err).__name__}: {err}") from err
    return module


def _import_module(source: str) -> ModuleType:
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as err:
        if err.name is not None and (source == err.name or source.startswith(err.name + ".")):
            raise NoaError(
                f"tokenizer class module {source} is not on the Python path; give a .py file's path "
                f"({FORM}) or install the package that holds it"
            ) from err
        raise NoaError(f"tokenizer class module {source} does not import: {type(err).__name__}: {err}") from err
    # As in _import_file: the user's module can raise anything while it runs.
    except Exception as err:
        raise NoaError(f"tokenizer class module {source} does not import: {type(err).__name__}: {err}") from err


def class_fingerprint(vqvae_class: str | type) -> str | None:
    """A hash of the file that defines the class (sha256 of its bytes), which a checkpoint records
    so that a class of the same name from another file is told apart; None where the class has no
    file (one defined in an interactive session). It covers that file alone, not what it imports."""
    cls = resolve_class(vqvae_class)
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:  # a built-in class: no file to hash
        return None
    if source is None or not Path(source).is_file():
        return None
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def class_problem(
    recorded: str | None, given: str | None, where: str, recorded_fingerprint: str | None = None
) -> str | None:
    """Why ``given`` is not the tokenizer class ``where`` (a checkpoint) was trained with; None
    when it is: the same CLASS, from a file with the content the checkpoint recorded wherever it now
    lies (a checkpoint from before the fingerprint was recorded is told by the name alone).

    noa never imports what a checkpoint names, so the recorded class is shown as information for
    the user to check, not as a command: it may be someone else's path on another machine."""
    if class_name(recorded) != class_name(given):
        if recorded is None:
            return f"{where} was trained with {OWN}, not the class {class_name(given)}; drop --vqvae-class"
        asked = "no --vqvae-class was given" if given is None else f"--vqvae-class names {class_name(given)}"
        return (
            f"{where} was trained with the tokenizer class {class_name(recorded)} (recorded: {recorded}), but {asked}; "
            f"noa never imports a class a checkpoint names: pass --vqvae-class FILE:{class_name(recorded)} "
            "with your copy of that class's file"
        )
    if given is None or recorded_fingerprint is None:
        return None
    found = class_fingerprint(given)
    if found is None or found == recorded_fingerprint:
        return None
    return (
        f"--vqvae-class {given}: its file is not the one {where} was trained with (recorded: {recorded}, "
        f"sha256 {recorded_fingerprint[:12]}; given: sha256 {found[:12]}), and a different file can compute other "
        "tokens; pass the file the run was trained with"
    )
