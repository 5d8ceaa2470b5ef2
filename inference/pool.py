"""The router's view of its replicas: which are up, what each holds, how busy
each is, and forwarding one request with retries (stdlib ``http.client``, no
Django, no torch).

A replica is read every ``probe_seconds`` (``GET /internal/status``: the
versions its engine holds and the completions it is answering). A version
goes to the least busy replica that holds it (or that the router sent it to
lately: it is loading it), unless that one has ``spill`` more requests in
flight than the least busy replica; otherwise to the least busy one, which
then loads it. A replica that refuses the connection, times out, drops it
before its answer starts, or answers 5xx without an answer of ours (a proxy
or a crashed worker) is left out for ``down_seconds`` and probed again; the
request goes to the next replica. An answer is relayed chunk by chunk as it
arrives: once its first byte went to the client it cannot be retried.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        # the router's own server sets these
        "date",
        "server",
    }
)
# How long a version the router sent to a replica counts as held there
# before the replica's status shows it (or not: evicted, failed to load).
ASSIGNED_SECONDS = 30.0
CHUNK = 64 * 1024


class ReplicaFailed(Exception):
    """The replica did not answer (the request may go elsewhere); ``answer``
    is its 5xx answer when it gave one."""

    def __init__(self, message: str, answer: Buffered | None = None) -> None:
        super().__init__(message)
        self.answer = answer


@dataclasses.dataclass(eq=False)
class Replica:
    url: str
    host: str
    port: int
    name: str  # the replica's own id once its status was read
    up: bool = True
    down_until: float = 0.0
    reason: str = ""
    versions: frozenset[str] = frozenset()
    reported_active: int = 0
    inflight: int = 0  # requests this router has open on it
    assigned: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> Replica:
        parts = urlsplit(url.strip().rstrip("/"))
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(
                f"ARBITER_INFERENCE_REPLICAS: {url!r} is not an http://host:port URL"
            )
        port = parts.port or 80
        return cls(
            url=f"http://{parts.hostname}:{port}",
            host=parts.hostname,
            port=port,
            name=parts.netloc,
        )

    @property
    def load(self) -> int:
        # The replica's own count includes this router's requests and those of
        # anyone else calling it; ours is fresher.
        return max(self.inflight, self.reported_active)

    def holds(self, version: str, now: float) -> bool:
        if version in self.versions:
            return True
        sent = self.assigned.get(version)
        return sent is not None and now - sent < ASSIGNED_SECONDS

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "replica": self.name,
            "up": self.up,
            "reason": self.reason,
            "versions": sorted(self.versions),
            "active": self.reported_active,
            "inflight": self.inflight,
        }


@dataclasses.dataclass(frozen=True)
class PoolSettings:
    secret: str
    secret_header: str
    status_path: str
    connect_timeout: float = 3.0
    timeout: float = 300.0
    down_seconds: float = 10.0
    probe_seconds: float = 2.0
    spill: int = 8


class ReplicaPool:
    def __init__(self, urls: Sequence[str], settings: PoolSettings) -> None:
        self.replicas = [Replica.from_url(u) for u in urls if u.strip()]
        if not self.replicas:
            raise ValueError("ARBITER_INFERENCE_REPLICAS names no replica")
        self.settings = settings
        self._lock = threading.Lock()
        self._turn = 0
        self._started = False
        self._stopped = threading.Event()

    # ------------------------------------------------------------ status
    def start(self) -> None:
        """Read every replica's status once, then keep reading it in the
        background (idempotent)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.probe_all()
        threading.Thread(
            target=self._probe_loop, name="replica-probe", daemon=True
        ).start()

    def stop(self) -> None:
        self._stopped.set()

    def _probe_loop(self) -> None:
        while not self._stopped.wait(self.settings.probe_seconds):
            self.probe_all()

    def probe_all(self) -> None:
        now = time.monotonic()
        due = [r for r in self.replicas if r.up or r.down_until <= now]
        threads = [
            threading.Thread(target=self.probe, args=(r,), daemon=True) for r in due
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def probe(self, replica: Replica) -> bool:
        try:
            status = self._status(replica)
        except TimeoutError as error:
            # Every thread of a replica may be busy answering (a stream holds
            # one): slow is not dead while our requests there go on.
            if replica.inflight > 0:
                return False
            self.mark_down(replica, f"status: {error}")
            return False
        except (OSError, http.client.HTTPException, ValueError, ReplicaFailed) as error:
            self.mark_down(replica, f"status: {error}")
            return False
        now = time.monotonic()
        with self._lock:
            was_down = not replica.up
            replica.up = True
            replica.reason = ""
            replica.name = str(status.get("replica") or replica.name)
            replica.versions = frozenset(str(v) for v in status.get("versions", ()))
            replica.reported_active = int(status.get("active", 0))
            replica.assigned = {
                v: t
                for v, t in replica.assigned.items()
                if v not in replica.versions and now - t < ASSIGNED_SECONDS
            }
        if was_down:
            logger.warning("inference.replica.up url=%s", replica.url)
        return True

    def _status(self, replica: Replica) -> Mapping[str, Any]:
        conn = http.client.HTTPConnection(
            replica.host, replica.port, timeout=self.settings.connect_timeout
        )
        try:
            conn.request(
                "GET",
                self.settings.status_path,
                headers={self.settings.secret_header: self.settings.secret},
            )
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise ReplicaFailed(f"HTTP {response.status}")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("status is not an object")
        return data

    def mark_down(self, replica: Replica, reason: str) -> None:
        with self._lock:
            if replica.up:
                logger.warning(
                    "inference.replica.down url=%s reason=%s", replica.url, reason
                )
            replica.up = False
            replica.reason = reason[:200]
            replica.down_until = time.monotonic() + self.settings.down_seconds
            replica.versions = frozenset()
            replica.assigned.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_dict() for r in self.replicas]

    # ------------------------------------------------------------ placing
    def pick(
        self, version: str | None, exclude: Iterable[Replica] = ()
    ) -> Replica | None:
        """The replica for a request of ``version`` (None: any), counted in
        flight until ``release``. When every replica not yet tried is down,
        the one down the longest, as a last resort (a request in hand is
        worth a refused connection); None when every replica was tried."""
        excluded = set(exclude)
        now = time.monotonic()
        with self._lock:
            live = [r for r in self.replicas if r.up and r not in excluded]
            if not live:
                down = [r for r in self.replicas if r not in excluded]
                if not down:
                    return None
                live = [min(down, key=lambda r: r.down_until)]
            self._turn += 1
            n = len(self.replicas)
            order = {id(r): (i - self._turn) % n for i, r in enumerate(self.replicas)}
            least = min(live, key=lambda r: (r.load, order[id(r)]))
            chosen = least
            if version:
                holders = [r for r in live if r.holds(version, now)]
                if holders:
                    best = min(holders, key=lambda r: (r.load, order[id(r)]))
                    if best.load - least.load <= self.settings.spill:
                        chosen = best
                if version not in chosen.versions:
                    chosen.assigned[version] = now
            chosen.inflight += 1
            return chosen

    def release(self, replica: Replica) -> None:
        with self._lock:
            replica.inflight -= 1

    # ------------------------------------------------------------ forwarding
    def forward(
        self,
        *,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        version: str | None,
    ) -> Relay | Buffered | None:
        """Send the request to a replica, and to the next one while they
        fail before answering. When every replica failed: the last 5xx
        answer (a replica's own error first); None when none answered."""
        tried: list[Replica] = []
        last: Buffered | None = None
        headers = {**headers, self.settings.secret_header: self.settings.secret}
        while (replica := self.pick(version, tried)) is not None:
            tried.append(replica)
            try:
                return self._send(replica, method, path, body, headers)
            except ReplicaFailed as error:
                self.release(replica)
                if error.answer is not None and not (
                    last is not None and last.ours and not error.answer.ours
                ):
                    last = error.answer  # a replica's own error says more
                logger.warning(
                    "inference.replica.retry url=%s path=%s error=%s",
                    replica.url,
                    path,
                    error,
                )
        return last

    def _send(
        self,
        replica: Replica,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> Relay:
        conn = http.client.HTTPConnection(
            replica.host, replica.port, timeout=self.settings.connect_timeout
        )
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self.settings.timeout)
            conn.request(method, path, body=body, headers=dict(headers))
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            self.mark_down(replica, f"{type(error).__name__}: {error}")
            raise ReplicaFailed(f"{type(error).__name__}: {error}") from error
        if response.status >= 500:
            try:
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                data = b""
                self.mark_down(replica, f"{type(error).__name__}: {error}")
            conn.close()
            if not _our_error(data):
                # Not the replica's own answer: a proxy, or a worker that died.
                self.mark_down(replica, f"HTTP {response.status}")
            raise ReplicaFailed(
                f"HTTP {response.status}: {data[:200]!r}",
                Buffered(
                    status=response.status,
                    reason=response.reason,
                    headers=_end_to_end(response.getheaders()),
                    body=data,
                ),
            )
        if not replica.up:  # a last resort that answered
            with self._lock:
                replica.up, replica.reason = True, ""
            logger.warning("inference.replica.up url=%s", replica.url)
        return Relay(self, replica, conn, response)


def _end_to_end(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]


@dataclasses.dataclass
class Buffered:
    """A whole answer (a replica's 5xx, passed on when no replica did better)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def ours(self) -> bool:
        return _our_error(self.body)

    def __iter__(self) -> Iterator[bytes]:
        return iter([self.body])

    def close(self) -> None:
        pass


def _our_error(data: bytes) -> bool:
    """An OpenAI-style error body: the replica answered (it lives)."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)


class Relay:
    """One replica's answer, passed on as it arrives: the WSGI body (its
    ``close`` closes the connection to the replica, which then stops
    generating for a client that went away)."""

    def __init__(
        self,
        pool: ReplicaPool,
        replica: Replica,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
    ) -> None:
        self.pool = pool
        self.replica = replica
        self.status = response.status
        self.reason = response.reason
        self.headers = _end_to_end(response.getheaders())
        self.streaming = response.getheader("Content-Type", "").startswith(
            "text/event-stream"
        )
        self._conn = conn
        self._response = response
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            chunk = self._response.read1(CHUNK)
            if not chunk and self._response.length:  # closed short of its length
                raise http.client.IncompleteRead(b"", self._response.length)
        except (OSError, http.client.HTTPException) as error:
            # Bytes went to the client already: this request cannot be retried.
            self.pool.mark_down(self.replica, f"{type(error).__name__}: {error}")
            self.close()
            if self.streaming:
                return _stream_error(self.replica)
            raise StopIteration from None
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
            self.pool.release(self.replica)


def _stream_error(replica: Replica) -> bytes:
    body = {
        "error": {
            "message": f"The inference replica {replica.name} stopped answering "
            "in the middle of this stream; send the request again.",
            "type": "server_error",
            "param": None,
            "code": "replica_unavailable",
        }
    }
    return f"data: {json.dumps(body)}\n\n".encode()
