"""`python -m noa ...` is the `noa` command (and what `torchrun -m noa` will launch)."""

import sys

from noa.cli import main

sys.exit(main())
