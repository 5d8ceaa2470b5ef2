"""Inference replicas behind the router, as ``./arbiter demo
--inference-replicas 2`` runs them (``core.launch.inference_processes``): two
real gunicorn replicas and the router, against the test database, called
over HTTP. A version goes to the replica that holds it; a replica killed
with SIGKILL loses no request that can be retried.

The cluster is started once for the module; the test that kills a replica
runs last."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from core.launch import inference_processes, product_processes
from inference.pool import Buffered, PoolSettings, Relay, ReplicaPool
from inference.replica import REPLICA_HEADER, ROUTER_HEADER, STATUS_PATH
from models_hub.models import Deployment, ServedResponse

ROOT = Path(__file__).resolve().parents[2]
SECRET = "replica-test-secret"
HEAVY = ["torch", "transformers", "peft", "trl", "datasets", "accelerate"]


def _free_ports(count: int) -> int:
    """A port such that it and the ``count - 1`` after it are free."""
    for _ in range(200):
        first = random.randint(20_000, 60_000)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free ports")


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - our own server
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{log.name} did not start:\n{log.read_text()}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def cluster(
    celery_worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("replicas")
    port = _free_ports(3)
    env = {
        **celery_worker_env,
        "ARBITER_INFERENCE_REPLICA_SECRET": SECRET,
        "ARBITER_INFERENCE_REPLICA_PROBE_SECONDS": "0.5",
        "ARBITER_INFERENCE_RATE_LIMIT": "off",
    }
    specs = inference_processes(
        host="127.0.0.1",
        port=port,
        replicas=2,
        gunicorn=str(Path(sys.executable).parent / "gunicorn"),
        # Started before the tests make the tiny base the default.
        preload=False,
    )
    assert [name for name, _ in specs] == [
        "inference-1",
        "inference-2",
        "inference-router",
    ]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name, command in specs:
        with (logs / f"{name}.log").open("wb") as out:
            processes[name] = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    urls = {
        "inference-1": f"http://127.0.0.1:{port + 1}",
        "inference-2": f"http://127.0.0.1:{port + 2}",
        "inference-router": f"http://127.0.0.1:{port}",
    }
    try:
        for name, url in urls.items():
            _wait_healthy(url, processes[name], logs / f"{name}.log")
        yield {"urls": urls, "processes": processes, "logs": logs}
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _call(
    url: str,
    path: str,
    *,
    token: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(
            "POST" if body is not None else "GET",
            path,
            body=json.dumps(body) if body is not None else None,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _complete(url: str, token: str, model: str, **extra: Any) -> tuple[int, Any, Any]:
    status, headers, data = _call(
        url,
        "/v1/completions",
        token=token,
        body={"model": model, "prompt": "the friend", "max_tokens": 6, **extra},
    )
    return status, headers, json.loads(data) if not extra.get("stream") else data


def _router_status(router: str) -> dict[str, dict[str, Any]]:
    _, _, data = _call(
        router, "/internal/status", token="", headers={ROUTER_HEADER: SECRET}
    )
    return {r["replica"]: r for r in json.loads(data)["replicas"]}


def _wait_held(router: str, held: dict[str, str]) -> None:
    """Until the router has read that each replica holds its version."""
    deadline = time.monotonic() + 20
    while True:
        status = _router_status(router)
        if all(
            name in status and version in status[name]["versions"]
            for name, version in held.items()
        ):
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_a_version_goes_to_the_replica_that_holds_it(
    served: dict[str, Any], cluster: dict[str, Any]
) -> None:
    """Each replica loads one adapter; through the router every request for
    an adapter is answered by the replica holding it, streamed or not, and a
    campaign alias keeps its per-user arms and its records."""
    urls, token = cluster["urls"], served["token"]
    router = urls["inference-router"]
    a, b = (f"adapter-{adapter.pk}" for adapter in served["adapters"][1:])
    base = f"base-{served['base'].pk}"

    status, headers, answer = _complete(urls["inference-1"], token, a)
    assert (status, headers[REPLICA_HEADER]) == (200, "replica-1"), answer
    status, headers, answer = _complete(urls["inference-2"], token, b)
    assert (status, headers[REPLICA_HEADER]) == (200, "replica-2"), answer
    _wait_held(router, {"replica-1": a, "replica-2": b})
    assert base in _router_status(router)["replica-1"]["versions"]
    status, headers, answer = _complete(router, token, "base")
    assert (status, headers["X-Arbiter-Version"]) == (200, base), answer

    for model, replica in ((a, "replica-1"), (b, "replica-2")) * 3:
        status, headers, answer = _complete(router, token, model)
        assert status == 200, answer
        assert headers[REPLICA_HEADER] == replica
        assert headers["X-Arbiter-Version"] == answer["model"] == model

    # A stream is relayed event by event from the holder.
    status, headers, raw = _complete(router, token, b, stream=True)
    assert status == 200
    assert headers[REPLICA_HEADER] == "replica-2"
    assert headers["Content-Type"].startswith("text/event-stream")
    events = [line for line in raw.decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["model"] == b for e in events[:-1])

    # The alias: the router draws the arm, the replica answers with the same.
    campaign = served["campaign"]
    Deployment.objects.create(
        campaign=campaign, mode=Deployment.Mode.AB, candidate=served["adapters"][1]
    )
    alias = f"campaign-{campaign.pk}/champion"
    arms: dict[str, str] = {}
    for i in range(8):
        user = f"user-{i % 4}"
        status, headers, answer = _complete(router, token, alias, user=user)
        assert status == 200, answer
        assert arms.setdefault(user, answer["model"]) == answer["model"]  # sticky
        if answer["model"] == a:
            assert headers[REPLICA_HEADER] == "replica-1"
        row = ServedResponse.objects.get(public_id=answer["id"])
        assert (row.requested_model, row.served_model) == (alias, answer["model"])
        assert row.campaign == campaign
        assert row.arm == ("candidate" if answer["model"] == a else "champion")
    assert set(arms.values()) <= {a, f"adapter-{served['champion'].pk}"}

    # The router answers what it checks itself, as a replica would.
    status, _, data = _call(router, "/v1/models", token=token)
    assert status == 200
    assert {a, b, alias} <= {m["id"] for m in json.loads(data)["data"]}
    status, _, data = _call(router, "/v1/models", token="wrong")
    assert (status, json.loads(data)["error"]["code"]) == (401, "invalid_api_key")
    status, _, answer = _complete(router, token, "adapter-999999")
    assert (status, answer["error"]["code"]) == (404, "model_not_found")
    status, _, answer = _complete(router, token, a, temperature=3)
    assert (status, answer["error"]["param"]) == (400, "temperature")
    status, _, data = _call(router, "/internal/status", token=token)
    assert status == 404


@pytest.mark.django_db(transaction=True)
def test_a_killed_replica_loses_no_request_that_can_be_retried(
    served: dict[str, Any], cluster: dict[str, Any]
) -> None:
    """SIGKILL of the replica answering a stream of requests: the requests
    in flight on it and those after are answered by the other one."""
    urls, token = cluster["urls"], served["token"]
    router = urls["inference-router"]
    model = f"adapter-{served['adapters'][2].pk}"
    status, headers, _ = _complete(urls["inference-1"], token, model)
    assert (status, headers[REPLICA_HEADER]) == (200, "replica-1")
    _wait_held(router, {"replica-1": model})

    results: list[tuple[int, str, Any]] = []
    lock = threading.Lock()
    answered = threading.Semaphore(0)

    def client() -> None:
        for _ in range(8):
            status, headers, answer = _complete(router, token, model, max_tokens=12)
            with lock:
                results.append((status, headers[REPLICA_HEADER], answer))
            answered.release()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(6):  # some answered by replica-1 first
        assert answered.acquire(timeout=60)
    os.killpg(cluster["processes"]["inference-1"].pid, signal.SIGKILL)
    killed_after = len(results)
    for thread in threads:
        thread.join(120)

    assert len(results) == 32
    assert all(status == 200 for status, _, _ in results), results
    assert all(answer["model"] == model for _, _, answer in results)
    assert "replica-1" in {replica for _, replica, _ in results[:killed_after]}
    assert {replica for _, replica, _ in results[killed_after + 4 :]} == {"replica-2"}
    ids = [answer["id"] for _, _, answer in results]
    assert ServedResponse.objects.filter(public_id__in=ids).count() == 32

    status, headers, raw = _complete(router, token, model, stream=True)
    assert (status, headers[REPLICA_HEADER]) == (200, "replica-2")
    assert raw.decode().rstrip().endswith("data: [DONE]")
    assert _router_status(router)["replica-1"]["up"] is False


def test_a_forwarded_request_is_not_counted_twice(
    served: dict[str, Any], api: Client, settings: Any
) -> None:
    """The router counts a request against the token's rate limit; the
    replica does not count what the router sends (with the shared secret)."""
    settings.ARBITER_INFERENCE_RATE_LIMIT = "1/minute"
    settings.ARBITER_INFERENCE_REPLICA_SECRET = SECRET
    for _ in range(3):
        response = api.get("/v1/models", headers={ROUTER_HEADER: SECRET})
        assert response.status_code == 200
        assert response[REPLICA_HEADER]
    assert api.get("/v1/models").status_code == 200
    response = api.get("/v1/models", headers={ROUTER_HEADER: "guessed"})
    assert response.status_code == 429
    assert api.get("/internal/status").status_code == 404


def test_the_router_never_imports_the_training_stack() -> None:
    probe = (
        "import json, sys\nimport inference.router\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "inference.settings",
        "ARBITER_INFERENCE_REPLICAS": "http://127.0.0.1:9,http://127.0.0.1:10",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_router_refuses_an_oversized_body_before_reading_it() -> None:
    """A Content-Length past the limit is answered 413 without buffering the
    body (the router reads it before checking the token)."""
    probe = (
        "import json\nfrom django.conf import settings\n"
        "from inference.router import Router, pool_from_settings\n"
        "class Endless:\n"
        "    read_sizes = []\n"
        "    def read(self, size=-1):\n"
        "        self.read_sizes.append(size)\n"
        "        return b'x' * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)\n"
        "stream = Endless()\n"
        "seen = []\n"
        "body = Router(pool_from_settings())({'REQUEST_METHOD': 'POST',\n"
        "    'PATH_INFO': '/v1/chat/completions', 'wsgi.input': stream,\n"
        "    'CONTENT_LENGTH': str(50 * 2**30)},\n"
        "    lambda status, headers: seen.append(status))\n"
        "print(json.dumps([seen[0], stream.read_sizes]))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "inference.settings",
        "ARBITER_INFERENCE_REPLICAS": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    status, reads = json.loads(result.stdout.strip().splitlines()[-1])
    assert status.startswith("413")
    assert reads == []


def test_the_demo_runs_one_inference_process_unless_asked_for_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARBITER_INFERENCE_LOCAL_REPLICAS", raising=False)
    monkeypatch.setenv("ARBITER_INFERENCE_PORT", "8101")
    names = [n for n, _ in product_processes(host="h", port=1, data_dir=tmp_path)]
    assert [n for n in names if n.startswith("inference")] == ["inference"]
    monkeypatch.setenv("ARBITER_INFERENCE_LOCAL_REPLICAS", "3")
    processes = dict(product_processes(host="h", port=1, data_dir=tmp_path))
    router = processes.pop("inference-router")
    assert [n for n in processes if n.startswith("inference")] == [
        "inference-1",
        "inference-2",
        "inference-3",
    ]
    assert "h:8101" in router
    assert (
        "ARBITER_INFERENCE_REPLICAS=http://127.0.0.1:8102,"
        "http://127.0.0.1:8103,http://127.0.0.1:8104"
    ) in router
    assert "127.0.0.1:8103" in processes["inference-2"]


# ---------------------------------------------------------------- the pool alone


def _pool(urls: list[str], *, spill: int = 8) -> ReplicaPool:
    return ReplicaPool(
        urls,
        PoolSettings(
            secret=SECRET,
            secret_header=ROUTER_HEADER,
            status_path=STATUS_PATH,
            connect_timeout=2,
            timeout=10,
            spill=spill,
        ),
    )


def test_a_version_stays_on_its_holder_until_the_holder_is_much_busier() -> None:
    """The holder answers until it has ``spill`` more requests in flight
    than the least busy replica; that one then counts as loading the
    version. A replica that is down is skipped, and tried only as a last
    resort."""
    pool = _pool(["http://127.0.0.1:1", "http://127.0.0.1:2"], spill=2)
    one, two = pool.replicas
    one.versions = frozenset({"adapter-1"})
    assert [pool.pick("adapter-1") for _ in range(3)] == [one, one, one]
    assert pool.pick("adapter-1") is two  # 3 in flight against 0
    assert pool.pick("adapter-1") is two  # two is loading it now
    assert pool.pick("adapter-9") is two  # nobody holds it: the least busy
    pool.release(one)
    pool.release(one)
    assert pool.pick("adapter-9") is two  # two loads adapter-9
    pool.mark_down(two, "test")
    assert pool.pick("adapter-9") is one
    assert pool.pick("adapter-9", exclude=[one]) is two  # the last resort
    assert pool.pick("adapter-9", exclude=[one, two]) is None


class _Stub(BaseHTTPRequestHandler):
    """A replica's stand-in answering as ``behave`` says (an attribute of
    its server)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.behave(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _reply(status: int, body: bytes, content_type: str) -> Callable[[Any], None]:
    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return behave


def _cut_stream(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b'data: {"n": 1}\n\n')
    handler.wfile.flush()
    handler.close_connection = True


@pytest.fixture
def stubs() -> Iterator[list[ThreadingHTTPServer]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Stub) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_failures_before_the_answer_go_to_the_next_replica(
    stubs: list[ThreadingHTTPServer],
) -> None:
    """A replica's own 5xx is retried elsewhere and leaves it in; a 5xx that
    is not its answer (a proxy's page) or a refused connection takes it
    out; when all fail, the last 5xx answer is passed on."""
    ours = json.dumps({"error": {"message": "no", "code": "model_unavailable"}})
    first, second = stubs
    first.behave = _reply(503, ours.encode(), "application/json")  # type: ignore[attr-defined]
    second.behave = _reply(200, b'{"ok": true}', "application/json")  # type: ignore[attr-defined]
    pool = _pool([_url(first), _url(second)])
    one, two = pool.replicas
    one.versions = frozenset({"v"})

    def send() -> Relay | Buffered | None:
        return pool.forward(
            method="POST", path="/v1/completions", body=b"{}", headers={}, version="v"
        )

    answer = send()
    assert isinstance(answer, Relay)
    assert (answer.status, answer.replica, b"".join(answer)) == (
        200,
        two,
        b'{"ok": true}',
    )
    assert one.up and two.inflight == 0

    first.behave = _reply(502, b"<html>Bad Gateway</html>", "text/html")  # type: ignore[attr-defined]
    second.behave = _reply(503, ours.encode(), "application/json")  # type: ignore[attr-defined]
    answer = send()
    assert isinstance(answer, Buffered)
    assert (answer.status, answer.body) == (503, ours.encode())
    assert (one.up, two.up) == (False, True)

    refused = _pool([f"http://127.0.0.1:{_free_ports(1)}", _url(first)])
    first.behave = _reply(200, b"{}", "application/json")  # type: ignore[attr-defined]
    refused.replicas[0].versions = frozenset({"v"})
    answer = refused.forward(
        method="POST", path="/v1/completions", body=b"{}", headers={}, version="v"
    )
    assert isinstance(answer, Relay) and answer.replica is refused.replicas[1]
    assert not refused.replicas[0].up


def test_a_stream_cut_after_its_first_byte_ends_with_an_error_event(
    stubs: list[ThreadingHTTPServer],
) -> None:
    """Bytes already went to the caller: no retry; the stream ends with an
    OpenAI-style error event and the replica is taken out."""
    stubs[0].behave = _cut_stream  # type: ignore[attr-defined]
    pool = _pool([_url(stubs[0])])
    answer = pool.forward(
        method="POST", path="/v1/completions", body=b"{}", headers={}, version=None
    )
    assert isinstance(answer, Relay) and answer.streaming
    events = list(answer)
    assert events[0] == b'data: {"n": 1}\n\n'
    assert json.loads(events[-1][6:])["error"]["code"] == "replica_unavailable"
    assert not pool.replicas[0].up
    assert pool.replicas[0].inflight == 0


@pytest.mark.django_db(transaction=True)
def test_an_inference_process_loads_the_default_base_as_it_starts(
    served: dict[str, Any],
    celery_worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """As ``./arbiter demo`` starts it (ARBITER_INFERENCE_PRELOAD): the
    default base is loaded before any request reaches the process."""
    port = _free_ports(1)
    [(name, command)] = inference_processes(
        host="127.0.0.1",
        port=port,
        replicas=0,
        gunicorn=str(Path(sys.executable).parent / "gunicorn"),
    )
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env={**celery_worker_env, "ARBITER_INFERENCE_REPLICA_SECRET": SECRET},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        deadline = time.monotonic() + 30
        base = f"base-{served['base'].pk}"
        while True:
            _, _, data = _call(
                url, "/internal/status", token="", headers={ROUTER_HEADER: SECRET}
            )
            if base in json.loads(data)["versions"]:
                break
            assert time.monotonic() < deadline, (data, log.read_text()[-2000:])
            time.sleep(0.3)
        assert "POST /v1/" not in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
