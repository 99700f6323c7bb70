"""Agent settings: defaults < TOML file < flags; sizes, secrets and checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.app.agent.config import AgentConfig, build, load_file, parse_size, secret
from profiler.errors import SframeProfError


def test_defaults_match_the_peers() -> None:
    cfg = AgentConfig()
    assert cfg.freq == 19 and cfg.window == 10.0 and cfg.group_by == "pid"
    assert cfg.spool == "/var/lib/sframe-prof/spool"


@pytest.mark.parametrize(("text", "value"), [
    ("123", 123), ("512K", 512 << 10), ("256M", 256 << 20), ("2G", 2 << 30),
    ("1.5M", 3 << 19), ("64MiB", 64 << 20), (42, 42)])
def test_sizes(text: object, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "M", "12Q", "-1", True])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_file_then_flags(tmp_path: Path) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text("""
freq = 49
window = 15
output_dir = "out"
spool_max_bytes = "64M"
exe = ["nginx"]
[services]
nginx = "edge"
[labels]
region = "eu-1"
""")
    cfg, _ = build(["--config", str(conf), "--window", "5", "--label", "zone=b",
                    "--service", "cgroup:billing=billing", "--spool", str(tmp_path / "s")])
    assert cfg.freq == 49                      # from the file
    assert cfg.window == 5.0                   # the flag wins
    assert cfg.spool_max_bytes == 64 << 20
    assert cfg.exe == ["nginx"]
    assert cfg.labels == {"region": "eu-1", "zone": "b"}        # merged
    assert cfg.services == {"nginx": "edge", "cgroup:billing": "billing"}
    assert cfg.output_dir == str(Path("out").resolve())


def test_agent_table_and_dashes(tmp_path: Path) -> None:
    conf = tmp_path / "a.toml"
    conf.write_text('[agent]\npyroscope = "http://127.0.0.1:4040"\ngroup-by = "service"\n')
    assert load_file(str(conf)) == {"pyroscope": "http://127.0.0.1:4040", "group_by": "service"}


@pytest.mark.parametrize(("text", "message"), [
    ("bogus = 1", "unknown setting"), ("freq = 'x'", "expected an integer"),
    ("pids = [0]", "positive"), ("labels = 3", "expected a table"), ("freq =", "TOML")])
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "a.toml"
    conf.write_text(text)
    with pytest.raises(SframeProfError, match=message):
        load_file(str(conf))


@pytest.mark.parametrize(("argv", "message"), [
    ([], "no sink"), (["--output-dir", "x", "--stack-size", "1000"], "multiple of 512"),
    (["--pyroscope", "ftp://x"], "http"), (["--output-dir", "x", "--label", "a-b=c"], "label"),
    (["--output-dir", "x", "--retry-min", "5", "--retry-max", "1"], "retry_max")])
def test_checks(argv: list[str], message: str) -> None:
    with pytest.raises(SframeProfError, match=message):
        build(argv)


def test_status_needs_no_sink() -> None:
    cfg, args = build(["--status", "--spool", "/nonexistent"])
    assert args.status and cfg.spool == "/nonexistent"


def test_secret_from_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("s3cret\n")
    assert secret(f"@{f}") == "s3cret"
    assert secret("plain") == "plain"
    with pytest.raises(SframeProfError):
        secret(f"@{tmp_path / 'missing'}")


def test_every_setting_has_a_flag() -> None:
    from dataclasses import fields

    from profiler.app.agent.config import parser
    dests = {a.dest for a in parser()._actions}
    missing = {f.name for f in fields(AgentConfig)} - dests
    assert not missing, missing
