"""Self-metrics: what the agent did and what it cost, per window and in total.

Each window's metrics go into a log line, a comment of every profile of that window
and ``status.json`` in the spool directory, which ``sframe-prof agent --status``
prints.  CPU and RSS are the agent process's own (psutil): CPU as the percentage of
one core used since the previous window, RSS in MiB.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from profiler.unwind.process import pid_alive

STATUS_FILE = "status.json"


@dataclass
class Totals:
    samples: int = 0            # samples read from the kernel
    kept: int = 0               # after the exe/cgroup filter
    user_samples: int = 0
    reliable: int = 0
    lost: int = 0               # the kernel could not hand over (buffer full)
    filtered: int = 0
    late: int = 0               # arrived after their window was shipped
    windows: int = 0
    profiles: int = 0
    shrinks: int = 0            # caches emptied for the memory target


@dataclass
class WindowMetrics:
    window_start: str = ""
    samples: int = 0
    lost: int = 0
    reliable_pct: float = 0.0
    groups: int = 0
    processes: int = 0
    cpu_pct: float = 0.0
    rss_mb: float = 0.0
    build_ms: float = 0.0
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def comment(self) -> str:
        parts = [f"samples={self.samples}", f"lost={self.lost}",
                 f"reliable={self.reliable_pct:.1f}%", f"cpu={self.cpu_pct:.2f}%",
                 f"rss={self.rss_mb:.1f}MB"]
        for name, st in sorted(self.sinks.items()):
            if "shipped" in st:
                parts.append(f"{name}:shipped={st['shipped']},spooled={st['spooled']},"
                             f"dropped={st['dropped']}")
        return "agent metrics: " + " ".join(parts)

    def log_line(self) -> str:
        return self.comment().replace("agent metrics: ", f"window {self.window_start}: ")


class ResourceMeter:
    """The agent's CPU % (of one core) between calls, and its RSS."""

    def __init__(self) -> None:
        import psutil  # type: ignore[import-untyped, unused-ignore]
        self.proc = psutil.Process()
        self._last_cpu = self._cpu()
        self._last_t = time.monotonic()
        self.start_cpu = self._last_cpu
        self.start_t = self._last_t

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def sample(self) -> tuple[float, float]:
        now, cpu = time.monotonic(), self._cpu()
        dt = now - self._last_t
        pct = 100.0 * (cpu - self._last_cpu) / dt if dt > 0 else 0.0
        self._last_t, self._last_cpu = now, cpu
        return pct, self.rss_mb()

    def total_pct(self) -> float:
        dt = time.monotonic() - self.start_t
        return 100.0 * (self._cpu() - self.start_cpu) / dt if dt > 0 else 0.0

    def rss_mb(self) -> float:
        return float(self.proc.memory_info().rss) / (1 << 20)


def write_status(directory: str, doc: dict[str, Any]) -> None:
    path = os.path.join(directory, STATUS_FILE)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def status_doc(*, pid: int, version: str, started: float, totals: Totals,
               window: WindowMetrics, cpu_total_pct: float, state: str) -> dict[str, Any]:
    user = totals.user_samples
    return {"pid": pid, "version": version, "state": state,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "uptime_s": round(time.time() - started, 1),
            "totals": {**asdict(totals),
                       "reliable_pct": round(100.0 * totals.reliable / user, 2) if user else 0.0,
                       "cpu_pct": round(cpu_total_pct, 3)},
            "last_window": asdict(window)}


def read_status(directory: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(directory, STATUS_FILE), encoding="utf-8") as f:
            doc: dict[str, Any] = json.load(f)
            return doc
    except (OSError, ValueError):
        return None


def format_status(doc: dict[str, Any]) -> str:
    alive = pid_alive(int(doc.get("pid", 0)))
    t = doc.get("totals", {})
    w = doc.get("last_window", {})
    lines = [
        f"sframe-prof agent {doc.get('version', '?')}, pid {doc.get('pid')} "
        f"({'running' if alive and doc.get('state') != 'stopped' else 'not running'}), "
        f"up {doc.get('uptime_s', 0):.0f} s, status of {doc.get('updated', '?')}",
        f"  samples {t.get('samples', 0)} (kept {t.get('kept', 0)}), lost {t.get('lost', 0)}, "
        f"reliable {t.get('reliable_pct', 0):.1f}%, windows {t.get('windows', 0)}, "
        f"profiles {t.get('profiles', 0)}",
        f"  cpu {t.get('cpu_pct', 0):.2f}% of one core on average; last window "
        f"cpu {w.get('cpu_pct', 0):.2f}%, rss {w.get('rss_mb', 0):.1f} MB",
    ]
    for name, st in sorted(w.get("sinks", {}).items()):
        if "shipped" in st:
            lines.append(f"  {name}: shipped {st['shipped']}, spooled {st['spooled']} "
                         f"({st.get('spool_bytes', 0)} bytes), dropped {st['dropped']}, "
                         f"rejected {st.get('rejected', 0)}, failures {st.get('failures', 0)}"
                         + (f", last error: {st['last_error']}" if st.get("last_error") else ""))
        else:
            lines.append(f"  {name}: written {st.get('written', 0)}, rotated away "
                         f"{st.get('deleted', 0)}, errors {st.get('errors', 0)}")
    return "\n".join(lines)

