"""The fleet agent: continuous whole-host profiling shipped to a profile store.

``sframe-prof agent`` samples every process (or those matched by PID, executable name
or cgroup) at a low rate, cuts the samples into wall-clock aligned windows, writes one
pprof per process group and window, and ships it to any number of sinks (a local
directory, Pyroscope's HTTP ingest, an OTLP profiles endpoint) through an on-disk spool
that survives outages and restarts.  docs/agent.md describes it for operators.

Modules, in pipeline order:

* :mod:`.config`  -- settings: defaults, a TOML file, command-line flags;
* :mod:`.procs`   -- processes with their identity (service, container), bounded caches;
* :mod:`.windows` -- wall-clock windows, per-group aggregation, pprof with fleet labels;
* :mod:`.spool`   -- the bounded on-disk queue every network sink reads from;
* :mod:`.sinks`   -- directory, Pyroscope and OTLP sinks, senders with backoff;
* :mod:`.metrics` -- self-metrics and the status file;
* :mod:`.agent`   -- the loop that ties them together.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """`sframe-prof agent ...` (imported lazily by profiler.app.cli)."""
    from profiler.app.agent.agent import run
    return run(argv)
