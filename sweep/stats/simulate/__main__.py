"""python -m sweep.stats.simulate: the coverage and power table."""

import sys

from sweep.stats.simulate.coverage_table import main

sys.exit(main())
