"""`oomhero run`, `doctor` and `demo` on a real kernel, v2 and v1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.real_kernel.kit import (
    MIB,
    bloat_argv,
    make_cgroup,
    oomhero,
    read_jsonl,
    remove_test_cgroups,
    wait_for,
)


def doctor(*targets: str, cgroup=None, env=None) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Exit status, name → (ok|missing|n/a, detail), and the verdict line, with oomhero run
    from inside ``cgroup`` when given."""
    process = (cgroup.spawn if cgroup else subprocess.Popen)(
        oomhero("doctor", *targets),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    out, _ = process.communicate(timeout=120)
    *checks, verdict = out.splitlines()
    lines = {}
    for line in checks:
        # A target's name may be longer than the name column: "read <path> <detail>".
        match = re.match(r"^(ok|missing|n/a) +(.{22}) (.*)$", line) or re.match(
            r"^(ok|missing|n/a) +(\S+ \S+) (.*)$", line
        )
        assert match, f"not an ok/missing/n/a line: {line!r}"
        lines[match.group(2).strip()] = (match.group(1), match.group(3))
    assert verdict.startswith("verdict: on this machine oomhero will wake on: "), verdict
    return process.returncode, lines, verdict


def doctor_lines(cgroup=None) -> dict[str, tuple[str, str]]:
    return doctor(cgroup=cgroup)[1]


@pytest.mark.guest_v2
def test_doctor_tells_the_truth_on_v2():
    cgroup = make_cgroup("doctor")  # memory.events exists below the root, not at it
    try:
        lines = doctor_lines(cgroup)
    finally:
        remove_test_cgroups()
    assert lines["memory controller"][0] == "ok" and "cgroup v2" in lines["memory controller"][1]
    assert lines["PSI"][0] == "ok"
    assert lines["inotify memory.events"][0] == "ok"
    assert lines["v1 thresholds"][0] == "n/a"
    assert lines["kprobe target"] == (
        "ok",
        "page_counter_try_charge, try_charge_memcg in /proc/kallsyms",
    )
    # guest/prepare installs Debian's bcc and this kernel's headers; the guest runs as root.
    assert lines["bcc"][0] == "ok"
    # ...and the CO-RE loader's needs: the kernel's BTF, the object make built, libbpf1.
    assert lines["kernel BTF"][0] == lines["CO-RE object"][0] == lines["libbpf"][0] == "ok"
    assert lines["CO-RE probe"] == ("ok", "loads and attaches (page_counter_try_charge)"), lines
    assert lines["kprobes"][0] == "ok"
    assert lines["bpf privileges"][0] == "ok"
    release = os.uname().release
    headers = Path(f"/lib/modules/{release}/build").exists()
    # The CO-RE probe loads: bcc's headers are not needed here.
    assert lines["kernel headers"][0] == ("ok" if headers else "n/a")


@pytest.mark.guest_v1
def test_doctor_tells_the_truth_on_v1():
    lines = doctor_lines()
    assert lines["memory controller"][0] == "ok" and "cgroup v1" in lines["memory controller"][1]
    assert lines["v1 thresholds"][0] == "ok"
    assert lines["inotify memory.events"][0] == "n/a"
    assert lines["PSI"][0] == "n/a"


@pytest.mark.guest_v2
@pytest.mark.guest_v1
def test_doctor_verdict_and_exit_status(tmp_path):
    """0 when what was asked for works; 1 for a target that does not exist, and for a source
    asked for that this machine cannot give (eventfd on v2, inotify on v1)."""
    v2 = (Path("/sys/fs/cgroup") / "cgroup.controllers").exists()
    limited = make_cgroup("doctor-limited", 64 * MIB)
    holder = limited.spawn(["sleep", "60"])
    try:
        code, _, verdict = doctor(str(limited.path))
        assert code == 0, verdict
        wakes = verdict.split("will wake on: ", 1)[1].split(";")[0]
        assert ("inotify" in wakes) == v2 and ("eventfd" in wakes) == (not v2), verdict
        assert "adaptive polling" in wakes and ("ebpf (CO-RE)" in wakes or not v2), verdict
        assert f"it can watch and signal: {limited.path}" in verdict
        assert "NOT READY" not in verdict

        unavailable = "eventfd" if v2 else "inotify"
        code, _, verdict = doctor(str(limited.path), env={"OOMHERO_SOURCES": unavailable})
        assert code == 1 and f"it cannot use: {unavailable} (because: needs" in verdict, verdict

        code, _, verdict = doctor("/sys/fs/cgroup/no-such-cgroup")
        assert code == 1 and "it cannot watch: /sys/fs/cgroup/no-such-cgroup (" in verdict
        holder.kill()
        holder.wait()
        code, _, verdict = doctor(str(holder.pid))
        assert code == 1 and f"it cannot watch: {holder.pid} (" in verdict, verdict
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        remove_test_cgroups()


@pytest.mark.guest_v2
def test_run_enforces_the_limit_in_a_fresh_cgroup(tmp_path):
    events = tmp_path / "bloat.jsonl"
    log = tmp_path / "run.log"
    runner = subprocess.Popen(
        oomhero(
            "run",
            "--memory",
            "96M",
            "--warning",
            "65",
            "--critical",
            "90",
            "--interval",
            "100ms",
            "--log-format",
            "json",
            "--",
            *bloat_argv(events, "16M", "--shed-on-critical"),  # alive until SIGTERM
        ),
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    try:
        started = wait_for(
            lambda: [e for e in read_jsonl(log) if "cgroup v2 limit" in e.get("msg", "")],
            60,
            "run to start",
        )
        group = Path(started[0]["how"].split(" in ")[1])
        assert (group / "memory.max").read_text().strip() == str(96 * MIB)
        bloat_pid = started[0]["pid"]
        assert bloat_pid in [int(p) for p in (group / "cgroup.procs").read_text().split()]
        wait_for(
            lambda: [e for e in read_jsonl(events) if e.get("signal") == "SIGUSR2"],
            120,
            "bloat to get SIGUSR2",
        )
        received = [e["signal"] for e in read_jsonl(events) if e["event"] == "signal"]
        assert received[:2] == ["SIGUSR1", "SIGUSR2"]
        os.kill(bloat_pid, signal.SIGTERM)
        assert runner.wait(timeout=60) == 0  # bloat's own exit code, passed through
        assert not group.exists(), "run left its cgroup behind"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


@pytest.mark.guest_v2
def test_run_passes_the_exit_code_through():
    result = subprocess.run(
        oomhero("run", "--memory", "64M", "--", "sh", "-c", "exit 7"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 7
    assert "cgroup v2 limit" in result.stderr


@pytest.mark.guest_v1
def test_run_never_creates_v1_groups():
    before = set(os.listdir("/sys/fs/cgroup/memory"))
    result = subprocess.run(
        oomhero("run", "--memory", "64M", "--", "sh", "-c", "exit 3"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert "SOFT LIMIT" in result.stderr and "v1" in result.stderr
    assert set(os.listdir("/sys/fs/cgroup/memory")) == before


@pytest.mark.guest_v2
def test_demo_runs_under_a_kernel_enforced_limit():
    result = subprocess.run(
        oomhero("demo", "--timeout", "120s"), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "limit enforced by the kernel" in result.stdout
    assert "done: both signals handled" in result.stdout
