"""Output files written atomically and safely.

Every output goes to a new temporary file in the destination's directory (created with
O_EXCL, mode 0644 before the umask), is flushed and fsync'ed, then renamed over the
destination.  An interrupted run never leaves a truncated profile, and a symlink
planted at the destination is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from profiler.errors import SframeProfError


@contextlib.contextmanager
def atomic_path(dest: str) -> Iterator[str]:
    """Yield a temporary path to write; on success it becomes `dest`."""
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:
        raise SframeProfError(f"cannot write {dest}: {exc.strerror}") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o644 & ~_umask())
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
