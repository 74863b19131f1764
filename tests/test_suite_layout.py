"""The suite's own layout: shared helpers live in helpers.py / conftest.py, so no test module
runs another's module-level code (fixtures, marks) by importing it."""

from __future__ import annotations

import re
from pathlib import Path


def test_no_test_module_imports_another() -> None:
    here = Path(__file__).parent
    pattern = re.compile(r"^\s*(from|import)\s+test_\w+", re.MULTILINE)
    importers = sorted(p.name for p in here.glob("test_*.py") if pattern.search(p.read_text()))
    assert importers == [], f"move what these import from other test modules into tests/helpers.py: {importers}"
