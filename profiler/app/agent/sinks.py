"""Where profiles go: a local directory, Pyroscope's HTTP ingest, an OTLP endpoint.

Any number of sinks run at once.  The directory sink writes at the end of each window.
A network sink puts every payload into its own :class:`~profiler.app.agent.spool.Spool`
and a sender thread delivers the spool in order, one request per group and window:

* 2xx: delivered, the item is deleted;
* connection errors, timeouts, 408, 429 and 5xx: the sink is down or slow; the same
  item is retried after a delay that doubles from ``retry_min`` to ``retry_max`` (with
  jitter), while new windows queue up behind it;
* any other 4xx: the store refuses this payload and always will; it is deleted and
  counted as rejected, so one bad item never blocks the queue.

Pyroscope (docs/peers.md section 9): ``POST /ingest?name=SERVICE{k=v,...}&from=S&until=S
&format=pprof&sampleRate=HZ&spyName=sframe-prof&units=samples&aggregationType=sum``, the
body a gzip'd pprof; basic auth (``pyroscope_user``/``pyroscope_password``, or user
info in the URL) or ``Authorization: Bearer`` (``pyroscope_token``); ``X-Scope-OrgID``
from ``tenant``.  OTLP: ``POST .../v1development/profiles``, ``application/x-protobuf``,
the body built from the shipment's ProfileData (profiler.emit.otlp).
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from typing import Any

from profiler.app.agent.spool import Spool
from profiler.app.agent.windows import Shipment, iso_name, safe_name

log = logging.getLogger("sframe-prof.agent")

RETRY_STATUS = {408, 425, 429}
# Files a DirectorySink keeps at most, whatever their bytes: an agent writes a few
# per window for days, and a directory (and the list of it kept here) of millions
# of small files is of use to nobody.
MAX_FILES = 20_000


class SendError(Exception):
    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class DirectorySink:
    """Profiles as files, ``<window start>-<service>[-<pid>]-<seq>.pb.gz``, oldest
    deleted first beyond a byte budget or MAX_FILES files."""

    name = "dir"

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        os.makedirs(directory, exist_ok=True)
        self.files: deque[tuple[str, int]] = deque()
        self.bytes = 0
        self.written = 0
        self.deleted = 0
        self.errors = 0
        for name in sorted(os.listdir(directory)):
            if name.endswith((".pb.gz", ".json")) and not name.startswith("."):
                try:
                    size = os.stat(os.path.join(directory, name)).st_size
                except OSError:
                    continue
                self.files.append((name, size))
                self.bytes += size
        self._rotate()

    def file_name(self, s: Shipment) -> str:
        pid = s.labels.get("pid")
        parts = [iso_name(s.window_start_ns), safe_name(s.service)]
        if pid:
            parts.append(pid)
        parts.append(f"{s.seq:04d}")
        return "-".join(parts) + ".pb.gz"

    def write(self, name: str, data: bytes) -> None:
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(self.dir, name))
        except OSError as exc:
            self.errors += 1
            log.warning("cannot write %s in %s: %s", name, self.dir, exc.strerror)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        self.files.append((name, len(data)))
        self.bytes += len(data)
        self.written += 1
        self._rotate()

    def submit(self, s: Shipment) -> None:
        self.write(self.file_name(s), s.pprof_gz)

    def _rotate(self) -> None:
        while (self.bytes > self.max_bytes or len(self.files) > MAX_FILES) \
                and len(self.files) > 1:
            name, size = self.files.popleft()
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
            self.bytes -= size
            self.deleted += 1

    def pending(self) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        return {"written": self.written, "deleted": self.deleted, "errors": self.errors,
                "bytes": self.bytes}


class HttpSink:
    """A network sink: spool + sender thread.  Subclasses say how to send one item."""

    name = "http"

    def __init__(self, spool: Spool, *, timeout: float, retry_min: float,
                 retry_max: float, run_id: str) -> None:
        self.spool = spool
        self.timeout = timeout
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.run_id = run_id
        self.shipped = 0
        self.rejected = 0
        self.failures = 0
        self.last_error = ""
        self.down_since = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._conn_key: tuple[str, str] = ("", "")
        self.thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    # -- producer side --

    def header(self, s: Shipment) -> dict[str, Any]:
        raise NotImplementedError

    def payload(self, s: Shipment) -> bytes:
        raise NotImplementedError

    def submit(self, s: Shipment) -> None:
        name = f"{s.window_start_ns // 1_000_000:014d}-{self.run_id}-{s.seq:05d}"
        dropped = self.spool.put(name, self.header(s), self.payload(s))
        if dropped:
            log.warning("%s spool over its %d bytes: dropped the %d oldest window(s)",
                        self.name, self.spool.max_bytes, dropped)

    def window_done(self) -> None:
        self.spool.sync_dir()
        self._wake.set()

    def pending(self) -> int:
        return len(self.spool)

    def stats(self) -> dict[str, Any]:
        return {"shipped": self.shipped, "spooled": len(self.spool),
                "spool_bytes": self.spool.bytes, "dropped": self.spool.dropped,
                "rejected": self.rejected, "failures": self.failures,
                "resumed": self.spool.resumed,
                "down_for_s": round(time.monotonic() - self.down_since, 1)
                if self.down_since else 0.0,
                "last_error": self.last_error}

    # -- sender thread --

    def start(self) -> None:
        self.thread.start()

    def stop(self, deadline: float) -> None:
        """Keep sending until the spool is empty or `deadline` (monotonic) passes."""
        self._deadline = deadline
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _finished(self) -> bool:
        if not self._stop.is_set():
            return False
        return not len(self.spool) or time.monotonic() >= (self._deadline or 0.0)

    def _sleep(self, seconds: float) -> None:
        if self._stop.is_set() and self._deadline is not None:
            seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        self._wake.wait(seconds)
        self._wake.clear()

    def _run(self) -> None:
        delay = self.retry_min
        while not self._finished():
            item = self.spool.peek()
            if item is None:
                self._close_connection()     # idle until the next window
                self._sleep(1.0)
                continue
            got = self.spool.read(item)
            if got is None:
                continue
            header, payload = got
            try:
                self.send(header, payload)
            except SendError as exc:
                self.last_error = str(exc)
                if exc.permanent:
                    self.rejected += 1
                    self.spool.remove(item)
                    log.warning("%s rejected %s for good: %s", self.name, item.name, exc)
                    continue
                self.failures += 1
                self._close_connection()
                if not self.down_since:
                    self.down_since = time.monotonic()
                    log.warning("%s: %s; keeping windows in the spool and retrying",
                                self.name, exc)
                self._sleep(delay * random.uniform(0.8, 1.2))
                delay = min(self.retry_max, delay * 2)
                continue
            except Exception as exc:  # noqa: BLE001 - a sender must never die
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.failures += 1
                self._sleep(delay)
                delay = min(self.retry_max, delay * 2)
                continue
            self.spool.remove(item)
            self.shipped += 1
            delay = self.retry_min
            if self.down_since:
                log.warning("%s is back after %.0f s", self.name,
                            time.monotonic() - self.down_since)
                self.down_since = 0.0
                self.last_error = ""
        self._close_connection()

    def send(self, header: dict[str, Any], payload: bytes) -> None:
        raise NotImplementedError

    # -- HTTP --

    def post(self, url: str, payload: bytes, headers: dict[str, str]) -> None:
        """POST over one kept-alive connection for the items of a window (urllib would
        open a connection and build an opener for every item); through urllib when a
        proxy is configured for the URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or (
                urllib.request.getproxies().get(parts.scheme)
                and not urllib.request.proxy_bypass(parts.hostname)):
            return self._post_urllib(url, payload, headers)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.netloc)
        for attempt in (0, 1):
            reused = self._conn is not None and self._conn_key == key
            if not reused:
                self._close_connection()
                cls = (http.client.HTTPSConnection if parts.scheme == "https"
                       else http.client.HTTPConnection)
                self._conn = cls(parts.hostname, parts.port, timeout=self.timeout)
                self._conn_key = key
            conn = self._conn
            assert conn is not None
            try:
                conn.request("POST", target, body=payload, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            except (http.client.HTTPException, OSError, TimeoutError) as exc:
                self._close_connection()
                if attempt == 0 and reused and isinstance(
                        exc, (http.client.RemoteDisconnected, ConnectionResetError,
                              BrokenPipeError)):
                    continue          # the server closed the idle connection: once more
                raise SendError(f"{url.split('?')[0]}: {exc}") from None
            if resp.will_close:
                self._close_connection()
            if 200 <= resp.status < 300:
                return
            text = body[:300].decode("utf-8", "replace").strip().replace("\n", " ")
            permanent = 400 <= resp.status < 500 and resp.status not in RETRY_STATUS
            raise SendError(f"HTTP {resp.status} {text[:200]}".rstrip(), permanent)

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _post_urllib(self, url: str, payload: bytes, headers: dict[str, str]) -> None:
        req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            body = b""
            try:
                body = exc.read(300)
            except Exception:  # noqa: BLE001
                pass
            text = body.decode("utf-8", "replace").strip().replace("\n", " ")
            permanent = 400 <= exc.code < 500 and exc.code not in RETRY_STATUS
            raise SendError(f"HTTP {exc.code} {text[:200]}".rstrip(), permanent) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SendError(f"{url.split('?')[0]}: {reason}") from None


def _split_userinfo(url: str) -> tuple[str, str, str]:
    """(url without user info, user, password)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, "", ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    clean = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query,
                                     parts.fragment))
    return (clean, urllib.parse.unquote(parts.username),
            urllib.parse.unquote(parts.password or ""))


_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._:/@+-]")
_APP_BAD = re.compile(r"[^A-Za-z0-9._-]")


def pyroscope_name(service: str, labels: dict[str, str]) -> str:
    """``service{k=v,...}``: Pyroscope parses the name as a label set; characters that
    would break that syntax become '_'."""
    app = _APP_BAD.sub("_", service) or "unknown"
    pairs = [f"{k}={_LABEL_VALUE_BAD.sub('_', v)}" for k, v in sorted(labels.items())
             if k != "service" and v]
    return f"{app}{{{','.join(pairs)}}}"


class PyroscopeSink(HttpSink):
    name = "pyroscope"

    def __init__(self, url: str, spool: Spool, *, freq: int, token: str = "", user: str = "",
                 password: str = "", tenant: str = "", **kw: Any) -> None:
        super().__init__(spool, **kw)
        base, url_user, url_password = _split_userinfo(url)
        self.base = base.rstrip("/")
        if self.base.endswith("/ingest"):
            self.base = self.base[: -len("/ingest")]
        self.freq = freq
        self.headers = {"Content-Type": "application/octet-stream",
                        "User-Agent": "sframe-prof-agent"}
        user = user or url_user
        password = password or url_password
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user:
            cred = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {cred}"
        if tenant:
            self.headers["X-Scope-OrgID"] = tenant

    def header(self, s: Shipment) -> dict[str, Any]:
        return {"name": pyroscope_name(s.service, s.labels),
                "from": s.window_start_ns // 1_000_000_000,
                "until": max(s.window_start_ns // 1_000_000_000 + 1,
                             -(-s.window_end_ns // 1_000_000_000)),
                "window": s.window_id, "seq": s.seq, "count": s.count}

    def payload(self, s: Shipment) -> bytes:
        return s.pprof_gz

    def send(self, header: dict[str, Any], payload: bytes) -> None:
        query = urllib.parse.urlencode({
            "name": header["name"], "from": header["from"], "until": header["until"],
            "format": "pprof", "sampleRate": self.freq, "spyName": "sframe-prof",
            "units": "samples", "aggregationType": "sum"})
        self.post(f"{self.base}/ingest?{query}", payload, self.headers)


class OtlpSink(HttpSink):
    name = "otlp"

    def __init__(self, url: str, spool: Spool, *, version: str, headers: dict[str, str],
                 tenant: str = "", **kw: Any) -> None:
        super().__init__(spool, **kw)
        from profiler.emit.otlp import CONTENT_TYPE, OTLP_PATH
        parts = urllib.parse.urlsplit(url)
        self.url = url if parts.path not in ("", "/") else url.rstrip("/") + OTLP_PATH
        self.version = version
        self.headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "sframe-prof-agent",
                        **headers}
        if tenant:
            self.headers.setdefault("X-Scope-OrgID", tenant)

    def header(self, s: Shipment) -> dict[str, Any]:
        return {"window": s.window_id, "seq": s.seq, "count": s.count}

    def payload(self, s: Shipment) -> bytes:
        from profiler.emit.otlp import encode_request
        return encode_request(s.data, s.labels, scope_version=self.version)

    def send(self, header: dict[str, Any], payload: bytes) -> None:
        self.post(self.url, payload, self.headers)
