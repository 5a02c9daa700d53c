"""The hostile network against oomhero watching a real cgroup: idle sockets and resets against
/metrics and /healthz (a probe answered within 1 s, stderr all JSON), a loop that really stalls
turning /healthz to 503, and webhook endpoints that redirect, trickle or reset while the
workload crosses its thresholds (the signals go out; each delivery fails in bounded time)."""

from __future__ import annotations

import socket
import time

import pytest

from oomhero.kernel.cgroup import CgroupDir
from tests.hostile_network import (
    RawServer,
    Recorder,
    probe,
    reset,
    reset_connection,
    stall_a_watching_loop,
    trickle,
)
from tests.real_kernel.kit import MIB, Watcher, Workload, make_cgroup, remove_test_cgroups, wait_for

pytestmark = [pytest.mark.guest_v2, pytest.mark.guest_v1]

PORT = 19091


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    remove_test_cgroups()


def test_idle_sockets_and_resets_never_keep_a_probe_waiting_nor_break_the_log(workdir):
    cgroup = make_cgroup("endpoint", 128 * MIB)
    workload = Workload(cgroup, workdir / "signals.jsonl")
    watcher = Watcher([cgroup], workdir / "log", "--metrics-port", str(PORT))
    base = f"http://127.0.0.1:{PORT}"
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: probe(base) == 200, 60, "readiness after the first scan")
        answers = {}
        for count in (8, 300):
            idle += [
                socket.create_connection(("127.0.0.1", PORT)) for _ in range(count - len(idle))
            ]
            answers[count] = [probe(base) for _ in range(30)]
        for i in range(300):
            sock = socket.create_connection(("127.0.0.1", PORT))
            sock.sendall([b"GET /heal", b"GET /metrics HTTP/1.1\r\n\r\n", b"\x16\x03\x01"][i % 3])
            reset_connection(sock)
        workload.to(80)  # the loop still signals through it all
        wait_for(lambda: workload.signals(), 60, "the warning signal")
        after = probe(base)
    finally:
        for sock in idle:
            sock.close()
        workload.stop()
        watcher.stop()  # asserts every line of its stderr is JSON
    assert answers == {8: [200] * 30, 300: [200] * 30}
    assert after == 200


def test_a_stalled_loop_turns_healthz_to_503_and_back(workdir):
    """The loop blocks in a listener's read of an empty pipe (a real blocking system call on
    the loop's thread), watching a real cgroup with the kernel's own wake-up sources."""
    made = make_cgroup("stall", 128 * MIB)
    cgroup = CgroupDir.open(str(made.path), made.version)
    sources = ("inotify", "psi") if made.version == 2 else ("eventfd",)
    try:
        seen = stall_a_watching_loop(cgroup, sources, PORT)
    finally:
        cgroup.close()
    assert seen["stalled"][1].startswith(b"stalled: the loop has not turned for ")
    assert seen["still stuck"] == 503
    assert seen["recovered"]


@pytest.mark.parametrize("endpoint", ["redirecting", "trickling", "resetting"])
def test_a_hostile_webhook_costs_one_bounded_failure_and_no_signal(workdir, endpoint):
    elsewhere = Recorder()
    server = {
        "redirecting": lambda: Recorder(302, {"Location": elsewhere.url}),
        "trickling": lambda: RawServer(trickle),
        "resetting": lambda: RawServer(reset),
    }[endpoint]()
    port = server.server_address[1] if isinstance(server, Recorder) else server.port
    cgroup = make_cgroup("webhook", 128 * MIB)
    workload = Workload(cgroup, workdir / "signals.jsonl")
    flags = ["--warning", "50", "--webhook", f"http://127.0.0.1:{port}/hook"]
    flags += ["--webhook-timeout", "1s", "--webhook-retries", "1"]
    watcher = Watcher([cgroup], workdir / "log", *flags)
    try:
        workload.to(55)
        wait_for(lambda: workload.signals(), 60, "the warning signal")
        crossed = time.monotonic()
        failure = wait_for(lambda: watcher.records("webhook delivery failed"), 60, "the failure")
        took = time.monotonic() - crossed
    finally:
        workload.stop()
        records = watcher.stop()
        server.stop()
        elsewhere.stop()
    assert [s["signal"] for s in workload.signals()] == ["SIGUSR1"]
    assert elsewhere.requests == [], "a redirect was followed"
    (line,) = failure
    if endpoint == "redirecting":
        assert (line["status"], line["attempts"]) == (302, 1)
    else:
        assert line["attempts"] == 2
        # Two attempts of at most 1 s and a 0.5 s backoff; the rest is the guest's slowness.
        assert took < 2 * 1 + 0.5 + 3, took
    if endpoint == "trickling":
        assert line["why"] == "no complete answer within 1s"
    stopped = [r for r in records if r.get("msg") == "webhook stopped"]
    assert stopped and stopped[0]["failed"] == 1 and stopped[0]["delivered"] == 0
