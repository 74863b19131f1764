#!/usr/bin/env python
"""The guide's training command: the same flags as `noa train`, run by the package."""

import sys

from noa.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
