#!/usr/bin/env python
"""The guide's diagnostics command: the same flags as `noa diagnose`, run by the package."""

import sys

from noa.cli import main

if __name__ == "__main__":
    sys.exit(main(["diagnose", *sys.argv[1:]]))
