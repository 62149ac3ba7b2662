"""`python -m interestgeo.cli ...`: the same as the `interestgeo` console script."""

import sys

from interestgeo.cli import main

sys.exit(main())
