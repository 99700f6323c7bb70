"""`python3 -m profiler` runs the sframe-prof command line."""

import sys

from profiler.cli import main

sys.exit(main())
