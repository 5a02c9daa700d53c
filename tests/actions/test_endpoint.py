"""/healthz and /metrics against hostile clients, on loopback: idle sockets, resets, garbage, a
client that never reads; and /healthz as the loop's liveness, with a loop that really stalls."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time

import psutil
import pytest
from prometheus_client import CollectorRegistry, Gauge

from oomhero.actions.endpoint import REQUEST_DEADLINE, Liveness, serve
from oomhero.kernel.cgroup import CgroupDir
from tests.helpers import MIB, REPO, SYNTHETIC_CLI, clean_env, v2_dir, wait_until
from tests.hostile_network import get, probe, reset_connection, stall_a_watching_loop

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")


def raw(port: int, data: bytes) -> bytes:
    """Send ``data``, return everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
def server():
    registry = CollectorRegistry()
    Gauge("oomhero_test", "a series", registry=registry).set(1)
    liveness = Liveness(lambda: True, stalled_after=60)
    endpoint = serve(registry, liveness, "127.0.0.1", 0)
    yield endpoint, registry, liveness
    endpoint.shutdown()


@pytest.fixture
def watcher(tmp_path, recorder):
    """`oomhero watch` with metrics on, logging JSON to a file; yields (base URL, port, log)."""
    directory = v2_dir(tmp_path / "cg", pids=[recorder.pid], current=10 * MIB, limit=str(100 * MIB))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    log = tmp_path / "oomhero.log"
    argv = [*SYNTHETIC_CLI, "watch", str(directory), "--sources", "none"]
    argv += ["--metrics-port", str(port), "--log-format", "json"]
    process = subprocess.Popen(argv, env=clean_env(), cwd=REPO, stderr=open(log, "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: probe(base) == 200, "the first scan", timeout=30)
        yield base, port, log
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize("idle", [8, 300])
def test_idle_connections_never_keep_a_probe_from_its_answer(watcher, idle):
    """The sweep's case: 8 idle connections starved /healthz, 0 of 30 probes answered."""
    base, port, _ = watcher
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
    try:
        answers = [probe(base) for _ in range(30)]
    finally:
        for sock in sockets:
            sock.close()
    assert answers == [200] * 30


def test_resets_and_garbage_cost_nothing_on_stderr(watcher):
    """The sweep's case: 804 resets printed multi-line tracebacks outside the log format."""
    base, port, log = watcher
    for i in range(200):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall([b"GET /heal", b"GET /metrics HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00"][i % 3])
        reset_connection(sock)
    for garbage in (b"\r\n\r\n", b"\xff" * 10000, b"GET / HTTP/9\r\n\r\n", b"A B C D\r\n\r\n"):
        with contextlib.suppress(OSError):
            raw(port, garbage)
    assert probe(base) == 200
    lines = log.read_text().splitlines()
    assert lines, "the watcher logged nothing"
    for line in lines:
        json.loads(line)  # every line of stderr is a log line of the chosen format


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        (b"GET /healthz?verbose=1 HTTP/1.0\r\n\r\n", b"200"),
        (b"GET /metrics HTTP/1.1\r\n\r\n", b"200"),
        (b"GET /nothing HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /healthz\r\n\r\n", b"400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n", b"431"),
    ],
)
def test_each_request_gets_one_answer_then_the_connection_closes(server, request_bytes, status):
    endpoint, _, _ = server
    answer = raw(endpoint.port, request_bytes)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert b"Connection: close" in answer


def test_head_answers_headers_only(server):
    endpoint, _, _ = server
    answer = raw(endpoint.port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) > 0


def test_a_scraper_that_never_reads_holds_neither_the_probes_nor_its_connection(server):
    endpoint, registry, _ = server
    lots = Gauge("oomhero_test_many", "many series", ["n"], registry=registry)
    for n in range(200_000):  # ~7 MiB of exposition: more than loopback's buffers hold (4 MiB)
        lots.labels(str(n)).set(n)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", endpoint.port))
    stuck.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    base = f"http://127.0.0.1:{endpoint.port}"
    started = time.monotonic()
    try:
        answers = [probe(base) for _ in range(10)]
        # Then it is cut at the deadline: reading now finds the end well before the whole body.
        received = 0
        stuck.settimeout(REQUEST_DEADLINE + 5)
        with contextlib.suppress(ConnectionResetError):
            wait_until(
                lambda: time.monotonic() - started > REQUEST_DEADLINE, "the deadline", timeout=30
            )
            while chunk := stuck.recv(65536):
                received += len(chunk)
    finally:
        stuck.close()
    assert answers == [200] * 10
    assert received < len(get(base + "/metrics")[1])


def test_healthz_turns_503_while_the_loop_is_stuck_and_200_when_it_turns_again(tmp_path):
    directory = v2_dir(tmp_path / "cg", current=10 * MIB, limit=str(100 * MIB))
    cgroup = CgroupDir.open(str(directory), 2)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    try:
        seen = stall_a_watching_loop(cgroup, (), port)
    finally:
        cgroup.close()
    _, body = seen["stalled"]
    match = re.fullmatch(rb"stalled: the loop has not turned for ([0-9.]+)s \(.*\)\n", body)
    assert match and float(match.group(1)) >= 1.0, body
    assert seen["after"] < 10, seen["after"]  # 503 soon after the stall passes 1 s
    assert seen["still stuck"] == 503 and seen["recovered"]


def test_healthz_says_starting_until_the_first_scan(server):
    endpoint, _, liveness = server
    scanned = []
    liveness.ready = lambda: bool(scanned)
    base = f"http://127.0.0.1:{endpoint.port}"
    code, body = get(base + "/healthz")
    assert code == 503 and body.startswith(b"starting: first scan not done after ")
    scanned.append(True)
    assert get(base + "/healthz") == (200, b"ok\n")


def test_the_metrics_address_and_port_given_are_the_ones_used():
    from oomhero.cli import build_parser
    from oomhero.commands.common import parse_outputs

    argv = ["watch", "x", "--metrics-port", "9100", "--metrics-address", "::1"]
    outputs = parse_outputs(build_parser().parse_args(argv), environ={})
    assert (outputs.metrics_port, outputs.metrics_address) == (9100, "::1")
    outputs = parse_outputs(build_parser().parse_args(["sidecar"]), {"METRICS_PORT": "9090"})
    assert (outputs.metrics_port, outputs.metrics_address) == (9090, "0.0.0.0")


# A server in a process with few descriptors: port on stdout, then serves until killed.
FEW_DESCRIPTORS = """
import resource, sys, time
from prometheus_client import CollectorRegistry
from oomhero.actions.endpoint import Liveness, serve
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))
endpoint = serve(CollectorRegistry(), Liveness(lambda: True, 60), "127.0.0.1", 0)
print(endpoint.port, flush=True)
time.sleep(600)
"""


def test_out_of_descriptors_idle_sockets_make_room_and_nothing_spins():
    """40 descriptors, 100 idle sockets: accept fails (EMFILE) until the oldest makes room."""
    server = subprocess.Popen(
        [sys.executable, "-c", FEW_DESCRIPTORS, "40"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    sockets = []
    try:
        port = int(server.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        answers = [probe(base) for _ in range(10)]
        cpu_before = sum(psutil.Process(server.pid).cpu_times()[:2])
        time.sleep(1.0)  # what is measured is the CPU the server burns meanwhile, not timing
        burnt = sum(psutil.Process(server.pid).cpu_times()[:2]) - cpu_before
    finally:
        for sock in sockets:
            sock.close()
        server.kill()
        server.wait()
        server.stdout.close()
    assert answers == [200] * 10
    assert burnt < 0.5, f"the server spun: {burnt:.2f} s of CPU in 1 s"
