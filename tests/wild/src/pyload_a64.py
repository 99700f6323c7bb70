"""pyload.py's main-thread work alone, for the aarch64 ground-truth capture.

qemu-user's gdbstub cannot stop and step one thread of several reliably, so under
qemu the workload must stay single-threaded: this runs pyload.one_round() in a loop
in the main thread and never starts pyload's worker thread.

    python3 pyload_a64.py [SECONDS]     (runs forever without an argument)
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyload  # noqa: E402  (found through the path set just above)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else float("inf")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pyload.one_round()


if __name__ == "__main__":
    main()
