"""A loopback profile store for tests, benchmarks and trying the agent out.

It implements the parts of Pyroscope's ingest contract the agent uses
(``POST /ingest?name=...&from=...&until=...&format=pprof``, docs/peers.md section 9) and
the OTLP profiles HTTP endpoint (``POST /v1development/profiles``), decodes every body
(pprof through the project's protobuf module and its validity rules, OTLP through the
generated classes of ``opentelemetry-proto`` and profiler.emit.otlp's checks) and
answers 400 to anything malformed, 401 to wrong credentials.
Accepted profiles are kept in memory and, with ``--log FILE``, appended to a JSON-lines
file (one object per request).

    python -m profiler.app.agent.receiver --port 4040 --log received.jsonl
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_COMMENT = re.compile(r"window=(\d+).*group=(\d+)/(\d+)")
_NAME = re.compile(r"^([^{}]+)\{(.*)\}$")


def parse_pyroscope_name(name: str) -> tuple[str, dict[str, str]]:
    """``app{k=v,...}`` as Pyroscope parses it: (app, labels)."""
    m = _NAME.match(name)
    if not m:
        return name, {}
    labels = {}
    for pair in filter(None, m.group(2).split(",")):
        k, _, v = pair.partition("=")
        labels[k.strip()] = v.strip()
    return m.group(1), labels


def decode_pprof(body: bytes) -> dict[str, Any]:
    """Summary of a (gzip'd or raw) pprof body; raises ValueError when it is invalid."""
    from profiler.emit.pprof import find_problems
    from profiler.proto import profile_pb2
    raw = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
    prof = profile_pb2.Profile()
    try:
        prof.ParseFromString(raw)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"not a pprof profile: {exc}") from None
    problems = find_problems(prof)
    if problems:
        raise ValueError("; ".join(problems[:5]))
    strings = prof.string_table
    comments = [strings[c] for c in prof.comment]
    window = group = count = 0
    for c in comments:
        m = _COMMENT.search(c)
        if m:
            window, group, count = (int(x) for x in m.groups())
    labels: dict[str, set[str]] = {}
    for s in prof.sample:
        for lab in s.label:
            labels.setdefault(strings[lab.key], set()).add(
                strings[lab.str] if lab.str else str(lab.num))
    functions = sorted({strings[f.name] for f in prof.function})
    return {"samples": sum(s.value[0] for s in prof.sample if s.value),
            "stacks": len(prof.sample), "window": window, "group": group, "count": count,
            "time_nanos": prof.time_nanos, "duration_nanos": prof.duration_nanos,
            "labels": {k: sorted(v) for k, v in labels.items()}, "comments": comments,
            "functions": functions}


class Receiver:
    """The server and what it received; start/stop it to simulate outages."""

    def __init__(self, port: int = 0, *, token: str = "", user: str = "", password: str = "",
                 tenant: str = "", log_path: str = "", delay: float = 0.0) -> None:
        self.port = port
        self.token = token
        self.user = user
        self.password = password
        self.tenant = tenant
        self.log_path = log_path
        self.delay = delay
        self.received: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.connections: set[Any] = set()     # open (kept-alive) client sockets

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver.connections.add(self.connection)

            def finish(self) -> None:
                with receiver.lock:
                    receiver.connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                receiver.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut the kept-alive connections: a stopped store is down."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.lock:
            conns = list(self.connections)
            self.connections.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _auth_ok(self, h: BaseHTTPRequestHandler) -> bool:
        auth = h.headers.get("Authorization", "")
        if self.token and auth != f"Bearer {self.token}":
            return False
        if self.user:
            want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if auth != f"Basic {want}":
                return False
        return not self.tenant or h.headers.get("X-Scope-OrgID") == self.tenant

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length", "0"))
        body = h.rfile.read(length)
        if self.delay:
            time.sleep(self.delay)
        url = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if not self._auth_ok(h):
            return self._answer(h, 401, "unauthorized")
        try:
            if url.path == "/ingest":
                entry = self._ingest(query, body)
            elif url.path == "/v1development/profiles":
                entry = self._otlp(body)
            else:
                return self._answer(h, 404, "no such endpoint")
        except ValueError as exc:
            with self.lock:
                self.rejected.append(str(exc))
            return self._answer(h, 400, str(exc))
        entry["received_at"] = time.time()
        with self.lock:
            self.received.append(entry)
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry, sort_keys=True) + "\n")
        self._answer(h, 200, "")

    def _ingest(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        for key in ("name", "from", "until"):
            if key not in query:
                raise ValueError(f"missing query parameter {key}")
        if query.get("format") != "pprof":
            raise ValueError(f"format {query.get('format')!r}: only pprof is accepted here")
        start, until = int(query["from"]), int(query["until"])
        if until < start:
            raise ValueError("until before from")
        app, labels = parse_pyroscope_name(query["name"])
        summary = decode_pprof(body)
        return {"kind": "pyroscope", "app": app, "name_labels": labels, "from": start,
                "until": until, "sample_rate": query.get("sampleRate", ""), **summary}

    def _otlp(self, body: bytes) -> dict[str, Any]:
        from profiler.emit.otlp import check_request, parse_request, plain_value
        req = parse_request(body)           # ValueError when it is not a request
        problems = check_request(req)
        if problems:
            raise ValueError("; ".join(problems[:5]))
        strings = req.dictionary.string_table
        resource: dict[str, Any] = {}
        samples = 0
        for rp in req.resource_profiles:
            resource.update((kv.key, plain_value(kv.value)) for kv in rp.resource.attributes)
            for sp in rp.scope_profiles:
                for p in sp.profiles:
                    samples += sum(s.values[0] for s in p.samples if s.values)
        functions = {strings[f.name_strindex] for f in req.dictionary.function_table
                     if f.name_strindex}
        return {"kind": "otlp", "resource": resource, "samples": samples,
                "functions": sorted(functions)}

    def _answer(self, h: BaseHTTPRequestHandler, code: int, text: str) -> None:
        data = text.encode()
        h.send_response(code)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m profiler.app.agent.receiver",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=4040)
    p.add_argument("--log", default="", help="append every accepted request here (JSON lines)")
    p.add_argument("--token", default="")
    p.add_argument("--tenant", default="")
    args = p.parse_args()
    r = Receiver(args.port, token=args.token, tenant=args.tenant, log_path=args.log).start()
    print(f"listening on {r.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        r.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
