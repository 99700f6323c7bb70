"""The command a run starts itself (`sframe-prof -- CMD`): forked and held before exec
until sampling runs, polled, and stopped when the run ends first."""

from __future__ import annotations

import os
import shutil
import signal
import time

from profiler.errors import SframeProfError


def launch(command: list[str]) -> tuple[Child, int]:
    """Fork `command`, held before exec until one byte is written to the returned fd."""
    exe = shutil.which(command[0])
    if exe is None:
        raise SframeProfError(f"cannot run {command[0]}: command not found")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(w)
            os.read(r, 1)
            os.close(r)
            os.execv(exe, command)
        except BaseException as exc:  # noqa: BLE001
            os.write(2, f"sframe-prof: cannot run {exe}: {exc}\n".encode())
        finally:
            os._exit(127)
    os.close(r)
    return Child(pid), w


class Child:
    """The command started with `-- CMD`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def stop(self) -> None:
        """Terminate the command (it outlived -d or the run failed) and reap it."""
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            if self.poll() is not None:
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            end = time.monotonic() + wait
            while time.monotonic() < end and self.poll() is None:
                time.sleep(0.02)
