"""Loading ``.pt`` files that noa wrote, safely and with one clear message when they are not.

noa writes checkpoints and tokenizer weights with ``torch.save`` (a zip archive of tensors and
plain containers) and reads them with ``weights_only=True``, so opening one never runs code.
A file that is not such an archive (random bytes, a truncated copy, another program's file) is
told apart from an intact archive that holds pickled Python objects: the first is "corrupt or
not a noa file", the second is refused as unsafe.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from noa.errors import NoaError

# torch.save's format before the zip archive (torch < 1.6) opens with this pickled magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
# An HDF5 file (a dataset given where a .pt file belongs) opens with this signature.
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# What torch.load raises, besides UnpicklingError, on damaged bytes inside an archive.
_DAMAGED = (
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    UnicodeDecodeError,
    zipfile.BadZipFile,
)


def load_pt(path: str | Path, what: str, fix: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, or NoaError naming ``what`` and how to ``fix`` it."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(len(_LEGACY_MAGIC))
    if head.startswith(_HDF5_MAGIC):
        raise NoaError(f"{path} is an HDF5 file (a dataset?), not a {what}; {fix}")
    if not (zipfile.is_zipfile(path) or head == _LEGACY_MAGIC):
        raise NoaError(
            f"{what} {path} is corrupt or not a noa file (not a complete torch archive: truncated, damaged or another program's file); {fix}"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Unsupported global" in text or "GLOBAL" in text:
            detail = next(
                (line.strip() for line in text.splitlines() if "GLOBAL" in line or "Unsupported global" in line), ""
            )
            raise NoaError(
                f"{what} {path} needs arbitrary unpickling to load (it holds Python objects, not just tensors and "
                f"containers), which could run code; refusing it ({detail}). {fix}"
            ) from err
        raise NoaError(f"{what} {path} is corrupt or not a noa file (its contents do not unpickle); {fix}") from err
    except _DAMAGED as err:
        raise NoaError(
            f"{what} {path} is corrupt or not a noa file ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else 'damaged data'}); {fix}"
        ) from err
