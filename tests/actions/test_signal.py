import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from oomhero.actions.signal import SendResult, denied_hint, send
from oomhero.kernel.procfs import ProcInfo, TrackedProcess, read_proc
from tests.helpers import REPO


def track(pid):
    tracked = TrackedProcess.open(read_proc(pid))
    assert tracked is not None
    return tracked


def test_send_delivers_the_signal_to_the_live_child(recorder):
    tracked = track(recorder.pid)
    try:
        assert send(tracked, signal.SIGUSR1) is SendResult.SENT
        assert recorder.received() == ["SIGUSR1"]
        assert send(tracked, signal.SIGUSR2) is SendResult.SENT
        assert recorder.received() == ["SIGUSR1", "SIGUSR2"]
    finally:
        tracked.close()


def test_send_to_an_exited_and_reaped_child_is_gone(sleeper):
    tracked = track(sleeper.pid)
    try:
        sleeper.kill()
        sleeper.wait()
        assert send(tracked, signal.SIGUSR1) is SendResult.GONE
        assert send(tracked, 0) is SendResult.GONE
    finally:
        tracked.close()


PID_REUSE_SCRIPT = textwrap.dedent(
    """
    import os, pathlib, signal, subprocess, sys
    from oomhero.kernel.procfs import TrackedProcess, read_proc
    from oomhero.actions.signal import send
    from tests.helpers import Recorder

    first = subprocess.Popen(["sleep", "30"])
    tracked = TrackedProcess.open(read_proc(first.pid))
    first.kill()
    first.wait()
    # In this fresh PID namespace, make the next process take the first one's pid.
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(first.pid - 1))
    second = Recorder(pathlib.Path(sys.argv[1]))
    print(first.pid, second.pid)
    # The kept status belongs to the first process (its handlers are never the second's)...
    print(send(tracked, signal.SIGUSR1).value)
    # ...and the pidfd too, whatever the handlers.
    print(send(tracked, signal.SIGUSR1, uncaught=True).value)
    print(",".join(second.received()))
    second.stop()
    """
)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)"
)
def test_send_through_a_stale_pidfd_never_hits_the_process_that_reused_the_pid(tmp_path):
    result = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            PID_REUSE_SCRIPT,
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 and "unshare failed" in result.stderr:
        pytest.skip(f"no new PID namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    pids, verdict, uncaught_verdict, received = result.stdout.splitlines()
    first, second = pids.split()
    assert first == second, "the pid was not reused: the test proves nothing"
    assert verdict == uncaught_verdict == "gone"
    assert received == ""


def test_send_on_a_closed_tracked_process_is_gone(sleeper):
    tracked = track(sleeper.pid)
    tracked.close()
    assert send(tracked, signal.SIGUSR1) is SendResult.GONE
    assert sleeper.poll() is None  # and nothing was sent


DENIED_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from oomhero.kernel.procfs import TrackedProcess, read_proc
    from oomhero.actions.signal import denied_hint, send
    tracked = TrackedProcess.open(read_proc(int(sys.argv[1])))
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    print(send(tracked, signal.SIGUSR1).value)
    print(denied_hint(tracked))
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_send_to_another_users_process_is_denied(recorder):
    # The pidfd is opened as root, then the subprocess drops to uid 65534: the kernel refuses.
    result = subprocess.run(
        [sys.executable, "-c", DENIED_SCRIPT, str(recorder.pid)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    verdict, hint = result.stdout.splitlines()
    assert verdict == "denied"
    assert "uid 0" in hint
    assert "uid 65534" in hint
    assert "CAP_KILL" in hint
    assert recorder.received() == []


def test_denied_hint_for_another_uid_names_both_uids_and_cap_kill():
    other = os.geteuid() + 1
    tracked = TrackedProcess(ProcInfo(4321, 1, "app", 1, other, False), -1)
    hint = denied_hint(tracked)
    assert f"pid 4321 belongs to uid {other}" in hint
    assert f"oomhero runs as uid {os.geteuid()}" in hint
    assert "CAP_KILL" in hint


def test_denied_hint_for_the_same_uid_mentions_cap_kill():
    tracked = TrackedProcess(ProcInfo(4321, 1, "app", 1, os.geteuid(), False), -1)
    hint = denied_hint(tracked)
    assert hint.startswith("pid 4321 refused the signal")
    assert "CAP_KILL" in hint


def test_signal_0_checks_permission_only_whatever_the_handlers(sleeper):
    # doctor's check: nothing is delivered, so the SigCgt guard does not apply.
    tracked = track(sleeper.pid)
    try:
        assert send(tracked, 0) is SendResult.SENT
        assert send(tracked, signal.SIGUSR1) is SendResult.UNCAUGHT
        assert sleeper.poll() is None
    finally:
        tracked.close()
