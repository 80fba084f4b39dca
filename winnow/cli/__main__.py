"""`python -m winnow.cli` and `torchrun -m winnow.cli`: the same entry point as `winnow`."""

import sys

from winnow.cli import main

sys.exit(main())
