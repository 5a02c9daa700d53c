"""What the signal lines say: --dry-run (decided and logged, nothing sent), and the process's
name as it is when the line is written (an exec or prctl renames it after discovery)."""

import io
import signal
import subprocess
import sys
import time

import logfmtkv
import pytest

from oomhero import log
from oomhero.config import WatchSettings
from oomhero.kernel.procfs import current_comm, read_proc
from tests.helpers import sample_all
from tests.test_engine import FakeScanner, ScriptedReader, make_engine, messages, percent

__all__ = ["make_engine"]  # the engine fixture, shared with the engine's tests

RENAME = """
import ctypes, sys
sys.stdin.readline()
ctypes.CDLL(None).prctl(15, ctypes.c_char_p(bytes.fromhex(sys.argv[1])), 0, 0, 0)  # PR_SET_NAME
print("renamed", flush=True)
sys.stdin.readline()
"""


def wait_until(predicate, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def renamed():
    """A child that renames itself (prctl PR_SET_NAME) when told: rename(name_bytes)."""
    children = []

    def start(name: bytes):
        child = subprocess.Popen(
            [sys.executable, "-c", RENAME, name.hex()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        children.append(child)
        return child

    def rename(child):
        child.stdin.write(b"go\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"renamed\n"

    yield start, rename
    for child in children:
        child.kill()
        child.wait()


def test_dry_run_decides_and_logs_but_sends_nothing(recorder, sleeper, json_log, make_engine):
    reader = ScriptedReader([percent(80), percent(95)])
    scanner = FakeScanner(app=([recorder.pid, sleeper.pid], reader))
    engine, clock = make_engine(scanner, dry_run=True)
    engine.watchlist.rescan()
    for _ in range(2):
        clock.now += 1
        sample_all(engine, "poll")
    assert recorder.received() == []
    assert sleeper.poll() is None
    assert messages(json_log, "signal sent") == []
    would = messages(json_log, "signal not sent: dry run")
    assert [(w["pid"], w["signal"], w["threshold"], w["dry_run"]) for w in would] == [
        (recorder.pid, "SIGUSR1", "warning", True),
        (recorder.pid, "SIGUSR2", "critical", True),
    ]
    # The handler rule is applied as for real: the sleeper has none, so it would be skipped.
    assert {s["pid"] for s in messages(json_log, "not signalled")} == {sleeper.pid}
    assert engine.targets["app"].last_signal is None


def test_dry_run_with_signal_uncaught_still_sends_nothing(sleeper, json_log, make_engine):
    reader = ScriptedReader([percent(95)])
    engine, _ = make_engine(
        FakeScanner(app=([sleeper.pid], reader)), dry_run=True, signal_uncaught=True
    )
    engine.watchlist.rescan()
    sample_all(engine, "poll")
    assert sleeper.poll() is None  # SIGUSR2 would have ended it
    (would,) = messages(json_log, "signal not sent: dry run")
    assert would["pid"] == sleeper.pid and would["signal"] == "SIGUSR2"


def test_signal_line_names_the_process_as_it_is_now(renamed, json_log, make_engine):
    start, rename = renamed
    child = start(b"worker")
    reader = ScriptedReader([percent(80)])
    engine, _ = make_engine(
        FakeScanner(app=([child.pid], reader)), dry_run=True, signal_uncaught=True
    )
    engine.watchlist.rescan()
    assert engine.targets["app"].processes.by_pid[child.pid].info.comm != "worker"
    rename(child)
    sample_all(engine, "poll")
    (would,) = messages(json_log, "signal not sent: dry run")
    assert would["comm"] == "worker" and would["app"] == "worker"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"a\nlevel=error", "a\nlevel=error"),
        (b'x" msg="forged', 'x" msg="forged'),
        (b"\x1b[2J\x1b[H", "\x1b[2J\x1b[H"),
        (b"my app", "my app"),
        (b"bad\xff\xfe", "bad\\xff\\xfe"),
    ],
)
def test_a_hostile_process_name_stays_one_logfmt_line(renamed, make_engine, name, shown):
    start, rename = renamed
    child = start(name)
    stream = io.StringIO()
    handlers = list(log.LOGGER.handlers)
    log.setup("text", stream)
    try:
        reader = ScriptedReader([percent(95)])
        engine, _ = make_engine(
            FakeScanner(app=([child.pid], reader)), dry_run=True, signal_uncaught=True
        )
        engine.watchlist.rescan()
        rename(child)
        sample_all(engine, "poll")
    finally:
        log.LOGGER.handlers[:] = handlers
    lines = stream.getvalue().splitlines()
    assert all(line.startswith("time=") and line.isprintable() for line in lines), lines
    records = [logfmtkv.parse(line, strict=True, duplicates="error") for line in lines]
    (would,) = [r for r in records if r["msg"] == "signal not sent: dry run"]
    assert would["comm"] == shown and would["app"] == shown
    assert would["level"] == "warning"


def test_current_comm_is_the_discovery_name_once_the_pid_is_someone_elses(sleeper):
    info = read_proc(sleeper.pid)
    assert current_comm(info) == info.comm
    stale = info.__class__(info.pid, info.ppid, "old", info.starttime + 1, info.uid, False)
    assert current_comm(stale) == "old"  # another start time: not this process's name
    sleeper.kill()
    sleeper.wait()
    assert current_comm(info) == info.comm


def test_caution_for_a_terminating_signal_sent_only_to_handlers():
    said = WatchSettings(critical_signal=signal.SIGTERM).cautions()
    assert any("SIGTERM is sent only to processes that catch it" in s for s in said), said
    assert not WatchSettings(critical_signal=signal.SIGTERM, signal_uncaught=True).cautions()
    assert not WatchSettings().cautions()  # SIGUSR1/2: the notifications themselves
