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


def doctor_lines(cgroup=None) -> dict[str, tuple[str, str]]:
    """name → (ok|missing, detail), with oomhero run from inside ``cgroup`` when given."""
    argv = oomhero("doctor")
    process = (cgroup.spawn if cgroup else subprocess.Popen)(
        argv, stdout=subprocess.PIPE, text=True
    )
    out, _ = process.communicate(timeout=120)
    lines = {}
    for line in out.splitlines():
        match = re.match(r"^(ok|missing)\s+(.{22}) (.*)$", line)
        assert match, f"not an ok/missing line: {line!r}"
        lines[match.group(2).strip()] = (match.group(1), match.group(3))
    return lines


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
    assert lines["v1 thresholds"][0] == "missing"
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
    assert lines["kernel headers"][0] == ("ok" if headers else "missing")


@pytest.mark.guest_v1
def test_doctor_tells_the_truth_on_v1():
    lines = doctor_lines()
    assert lines["memory controller"][0] == "ok" and "cgroup v1" in lines["memory controller"][1]
    assert lines["v1 thresholds"][0] == "ok"
    assert lines["inotify memory.events"][0] == "missing"


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
            *bloat_argv(events, "16M"),
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
