"""Agent settings: defaults, then a TOML file (``--config``), then command-line flags.

Every setting has a config key and a flag; the table in docs/agent.md lists them.
The TOML file holds the keys at top level (or under an ``[agent]`` table).  Sizes
accept suffixes (``512K``, ``256M``, ``2G``); secrets accept ``@/path/to/file`` so
they need not appear on a command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from typing import Any

from profiler.app.options import pid_list, positive
from profiler.errors import SframeProfError

GROUP_BY = ("pid", "service", "container")


@dataclass
class AgentConfig:
    # what to sample
    freq: int = 19
    pids: list[int] = field(default_factory=list)
    exe: list[str] = field(default_factory=list)
    cgroup: list[str] = field(default_factory=list)
    event: str = "cpu-clock"
    stack_size: int = 16384
    scan_interval: float = 1.0          # seconds between /proc scans (exe/cgroup filters)
    # windows and groups
    window: float = 10.0
    group_by: str = "pid"
    host: str = ""
    services: dict[str, str] = field(default_factory=dict)   # match -> service name
    labels: dict[str, str] = field(default_factory=dict)     # extra static labels
    # sinks
    output_dir: str = ""
    output_max_bytes: int = 1 << 30
    pyroscope: str = ""
    pyroscope_token: str = ""
    pyroscope_user: str = ""
    pyroscope_password: str = ""
    tenant: str = ""
    otlp: str = ""
    otlp_headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    retry_min: float = 1.0
    retry_max: float = 30.0
    flush_timeout: float = 10.0
    # spool and state
    spool: str = "/var/lib/sframe-prof/spool"
    spool_max_bytes: int = 256 << 20
    # bounded caches
    cache_objects: int = 256            # ELF files (unwind tables) kept by identity
    cache_object_bytes: int = 32 << 20  # their unwind tables
    cache_symbols: int = 64             # symbol tables
    cache_symbol_bytes: int = 16 << 20
    memory_target: int = 200 << 20      # RSS above which the caches are emptied
    trim_llvm: bool = True              # drop bcc/LLVM code pages from RSS after loading
    # run control (tests, benchmarks)
    duration: float = 0.0               # 0: until SIGTERM/SIGINT
    quiet: bool = False

    def sinks_configured(self) -> bool:
        return bool(self.output_dir or self.pyroscope or self.otlp)

    def hostname(self) -> str:
        return self.host or socket.gethostname()


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")


def parse_size(value: object) -> int:
    """Bytes from 123, "123", "512K", "256M", "2G" (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r}")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def secret(value: str) -> str:
    """A secret given inline, or read from the file named after '@'."""
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise SframeProfError(f"cannot read {value[1:]}: {exc.strerror}") from None
    return value


_TYPES: dict[str, type] = {f.name: f.type for f in dataclasses.fields(AgentConfig)}  # type: ignore[misc]
_SIZE_KEYS = {"output_max_bytes", "spool_max_bytes", "cache_object_bytes",
              "cache_symbol_bytes", "memory_target"}


def _coerce(key: str, value: Any) -> Any:
    default = getattr(AgentConfig(), key)
    if key in _SIZE_KEYS:
        return parse_size(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            value = [value]
        if key == "pids":
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise ValueError("pids: expected a list of positive integers")
            return list(value)
        return [str(v) for v in value]
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a table")
        return {str(k): str(v) for k, v in value.items()}
    raise ValueError(f"{key}: unsupported")  # pragma: no cover


def load_file(path: str) -> dict[str, Any]:
    """The settings of a TOML file, checked and coerced; unknown keys are errors."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise SframeProfError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SframeProfError(f"{path}: not valid TOML: {exc}") from None
    if isinstance(doc.get("agent"), dict):
        doc = {**{k: v for k, v in doc.items() if k != "agent"}, **doc["agent"]}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        k = key.replace("-", "_")
        if k not in _TYPES:
            raise SframeProfError(f"{path}: unknown setting {key!r}")
        try:
            out[k] = _coerce(k, value)
        except ValueError as exc:
            raise SframeProfError(f"{path}: {exc}") from None
    return out


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sframe-prof agent",
        description="Continuous whole-host profiling: one pprof per process group and "
                    "window, shipped to a directory, Pyroscope and/or an OTLP endpoint "
                    "through an on-disk spool. Every flag is also a config key "
                    "(docs/agent.md).",
        epilog="Needs root (BPF). SIGTERM or SIGINT flushes the current window, then "
               "exits; what the sinks did not take stays in the spool for the next start.")
    p.add_argument("--config", metavar="FILE", help="TOML settings file")
    p.add_argument("--status", action="store_true",
                   help="print the running agent's last metrics (from the spool dir) and exit")
    g = p.add_argument_group("what to sample")
    g.add_argument("-F", "--freq", type=positive(int, "a number"), metavar="HZ",
                   help="samples per second per CPU (default 19)")
    g.add_argument("-p", "--pid", dest="pids", type=pid_list, action="extend",
                   metavar="PID[,PID...]", help="only these processes (and their children)")
    g.add_argument("--exe", action="append", metavar="NAME",
                   help="only processes running this executable (basename or full path); "
                        "repeatable")
    g.add_argument("--cgroup", action="append", metavar="PATTERN",
                   help="only processes whose cgroup path contains PATTERN, or whose "
                        "container id starts with it; repeatable")
    g.add_argument("-e", "--event", choices=("cpu-clock", "task-clock", "cycles"))
    g.add_argument("--stack-size", type=positive(int, "a number"), metavar="BYTES")
    g.add_argument("--scan-interval", type=positive(float, "a number"), metavar="SECONDS",
                   help="how often /proc is scanned for new matching processes (default 1)")
    g = p.add_argument_group("windows and labels")
    g.add_argument("--window", type=positive(float, "a number"), metavar="SECONDS",
                   help="profile length, aligned to wall-clock multiples (default 10)")
    g.add_argument("--group-by", choices=GROUP_BY,
                   help="one profile per pid (default), per service or per container")
    g.add_argument("--host", metavar="NAME", help="host label (default: the hostname)")
    g.add_argument("--service", dest="services", type=_kv, action="append",
                   metavar="MATCH=NAME",
                   help="service name for an executable (basename or path) or, with "
                        "MATCH 'cgroup:PATTERN', a cgroup; repeatable")
    g.add_argument("--label", dest="labels", type=_kv, action="append", metavar="KEY=VALUE",
                   help="extra label on every profile; repeatable")
    g = p.add_argument_group("sinks")
    g.add_argument("--output-dir", metavar="DIR", help="write profiles here (rotated)")
    g.add_argument("--output-max-bytes", type=_size_arg, metavar="SIZE",
                   help="disk budget of --output-dir, oldest deleted first (default 1G)")
    g.add_argument("--pyroscope", metavar="URL", help="Pyroscope server (HTTP /ingest)")
    g.add_argument("--pyroscope-token", metavar="TOKEN|@FILE", help="bearer token")
    g.add_argument("--pyroscope-user", metavar="USER", help="basic-auth user")
    g.add_argument("--pyroscope-password", metavar="PASSWORD|@FILE",
                   help="basic-auth password")
    g.add_argument("--tenant", metavar="ID", help="X-Scope-OrgID header (multi-tenant)")
    g.add_argument("--otlp", metavar="URL",
                   help="OTLP profiles over HTTP (base URL or full /v1development/profiles)")
    g.add_argument("--otlp-header", dest="otlp_headers", type=_kv, action="append",
                   metavar="KEY=VALUE", help="extra HTTP header for --otlp; repeatable")
    g.add_argument("--timeout", type=positive(float, "a number"), metavar="SECONDS",
                   help="HTTP request timeout (default 10)")
    g.add_argument("--retry-min", type=positive(float, "a number"), metavar="SECONDS",
                   help="first retry delay after a failed send (default 1)")
    g.add_argument("--retry-max", type=positive(float, "a number"), metavar="SECONDS",
                   help="longest retry delay, doubling from --retry-min (default 30)")
    g.add_argument("--flush-timeout", type=float, metavar="SECONDS",
                   help="at exit, how long to keep sending the spool (default 10)")
    g = p.add_argument_group("spool and caches")
    g.add_argument("--spool", metavar="DIR",
                   help="on-disk queue and status (default /var/lib/sframe-prof/spool)")
    g.add_argument("--spool-max-bytes", type=_size_arg, metavar="SIZE",
                   help="per sink; the oldest windows are dropped (and counted) beyond it "
                        "(default 256M)")
    g.add_argument("--cache-objects", type=positive(int, "a number"), metavar="N",
                   help="ELF files kept with their unwind tables (default 256)")
    g.add_argument("--cache-object-bytes", type=_size_arg, metavar="SIZE",
                   help="byte budget of their unwind tables (default 32M)")
    g.add_argument("--cache-symbols", type=positive(int, "a number"), metavar="N",
                   help="symbol tables kept (default 64)")
    g.add_argument("--cache-symbol-bytes", type=_size_arg, metavar="SIZE",
                   help="estimated byte budget of those tables (default 16M)")
    g.add_argument("--memory-target", type=_size_arg, metavar="SIZE",
                   help="when the agent's RSS exceeds this at the end of a window, the "
                        "caches are emptied (at most once a minute; default 200M)")
    g.add_argument("--no-trim-llvm", dest="trim_llvm", action="store_const", const=False,
                   help="keep bcc's compiler code pages resident after loading")
    g = p.add_argument_group("run")
    g.add_argument("-d", "--duration", type=positive(float, "a number"), metavar="SECONDS",
                   help="stop after this long (default: run until SIGTERM)")
    g.add_argument("-q", "--quiet", action="store_const", const=True,
                   help="no log line per window")
    return p


_LISTS_OF_PAIRS = {"services", "labels", "otlp_headers"}


def build(argv: list[str]) -> tuple[AgentConfig, argparse.Namespace]:
    """The effective settings: defaults < config file < flags."""
    args = parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_file(args.config))
    for key in _TYPES:
        flag = getattr(args, key, None)
        if flag is None:
            continue
        if key in _LISTS_OF_PAIRS:
            merged = dict(values.get(key, {}))
            merged.update(dict(flag))
            values[key] = merged
        else:
            values[key] = flag
    cfg = AgentConfig(**values)
    check(cfg, need_sink=not args.status)
    return cfg, args


def check(cfg: AgentConfig, need_sink: bool = True) -> None:
    if cfg.group_by not in GROUP_BY:
        raise SframeProfError(f"group_by must be one of {', '.join(GROUP_BY)}")
    if cfg.freq <= 0 or cfg.freq > 10000:
        raise SframeProfError("freq must be between 1 and 10000 Hz")
    if cfg.window < 1:
        raise SframeProfError("window must be at least 1 second")
    if cfg.stack_size % 512 or not 0 < cfg.stack_size <= 65536:
        raise SframeProfError("stack_size must be a multiple of 512, at most 65536")
    for url in (cfg.pyroscope, cfg.otlp):
        if url and not re.match(r"^https?://", url):
            raise SframeProfError(f"not an http(s) URL: {url}")
    if need_sink and not cfg.sinks_configured():
        raise SframeProfError("no sink: give --output-dir, --pyroscope and/or --otlp")
    if cfg.retry_max < cfg.retry_min:
        raise SframeProfError("retry_max must be at least retry_min")
    for name in cfg.labels:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise SframeProfError(f"label name {name!r} is not [A-Za-z_][A-Za-z0-9_]*")
    cfg.spool = os.path.abspath(cfg.spool)
    if cfg.output_dir:
        cfg.output_dir = os.path.abspath(cfg.output_dir)
