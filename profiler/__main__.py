"""`python3 -m profiler` runs the sframe-prof command line."""

import sys

from profiler.app.cli import main

sys.exit(main())
