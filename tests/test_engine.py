"""Engine wiring over real child processes (real pidfds and signals) with scripted samples.

The reader is a fake that returns MemorySample values the test scripts: this checks policy
wiring, not kernel behaviour (that is the qemu guest's job)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from oomhero import log
from oomhero.actions.listener import Listeners
from oomhero.actions.metrics import Metrics
from oomhero.config import WatchSettings
from oomhero.engine import Engine
from oomhero.kernel.cgroup import CgroupDir, CgroupError, CgroupRefused, MemorySample
from oomhero.kernel.procfs import read_proc
from oomhero.sampler import Sampler
from oomhero.sources.base import WakeSource
from oomhero.sources.ebpf.common import Crossing
from oomhero.sources.polling import due
from oomhero.targets import Found, Target
from oomhero.watchlist import RETRY_FIRST, RETRY_LAST, SAY_AFTER, RescanGate
from tests.helpers import RECORDER, Recorder, received, sample_all, v2_dir

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")

MIB = 1024**2
LIMIT = 100 * MIB


class ScriptedReader:
    def __init__(self, samples=()):
        self.samples = list(samples)
        self.closed = False
        self.key = None  # what it is: the scanner names it (FakeScanner)
        self.gone = False

    def alive(self):
        return not self.gone

    def push(self, *samples):
        self.samples.extend(samples)

    def sample(self):
        item = self.samples.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.closed = True


class FakeScanner:
    """Targets by key: (member pids, reader); a reader's key is its first name here. Change
    ``targets`` between scans."""

    def __init__(self, **targets):
        self.targets = targets
        self.opened = 0

    def scan(self):
        found = {}
        for key, (pids, reader) in self.targets.items():
            members = [info for pid in pids if (info := read_proc(pid))]
            if isinstance(reader, ScriptedReader) and reader.key is None:
                reader.key = key
            # Its members as its cgroup.procs would list them: what the test scripts now.
            pids = lambda _reader, key=key: self.targets[key][0]  # noqa: E731
            found[key] = Found(key, members, self._opener(reader), pids=pids)
        return found

    def close(self):
        pass

    def _opener(self, reader):
        def open_reader():
            self.opened += 1
            if isinstance(reader, Exception):
                raise reader
            return reader

        return open_reader


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def percent(value, limit=LIMIT):
    return MemorySample(int(limit * value / 100), limit, 0)


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def messages(stream, msg):
    return [line for line in lines(stream) if line["msg"] == msg]


@pytest.fixture
def make_engine():
    engines = []

    def make(scanner, **settings):
        clock = Clock()
        engine = Engine(scanner, WatchSettings(**settings), clock=clock)
        engines.append(engine)
        return engine, clock

    yield make
    for engine in engines:
        engine.close()


def test_warning_then_critical_are_delivered_at_the_right_samples(recorder, json_log, make_engine):
    reader = ScriptedReader()
    engine, clock = make_engine(FakeScanner(app=([recorder.pid], reader)))
    engine.watchlist.rescan()
    assert list(engine.targets) == ["app"]
    assert list(engine.targets["app"].processes.by_pid) == [recorder.pid]

    got = []
    for value in (50, 74, 80, 85, 95, 96, 70):
        reader.push(percent(value))
        clock.now += 1
        sample_all(engine, "poll")
        got.append(recorder.received())
    assert got == [
        [],
        [],
        ["SIGUSR1"],
        ["SIGUSR1"],
        ["SIGUSR1", "SIGUSR2"],
        ["SIGUSR1", "SIGUSR2"],
        ["SIGUSR1", "SIGUSR2"],
    ]
    sent = messages(json_log, "signal sent")
    assert [(s["signal"], s["threshold"], s["reason"], s["percent"]) for s in sent] == [
        ("SIGUSR1", "warning", "crossed", 80.0),
        ("SIGUSR2", "critical", "crossed", 95.0),
    ]
    # "level" stays the log severity: no field may shadow it.
    assert [s["level"] for s in sent] == ["warning", "warning"]
    assert all(s["pid"] == recorder.pid and s["target"] == "app" for s in sent)
    assert [
        line["msg"] for line in lines(json_log) if line["msg"].startswith(("rose", "fell"))
    ] == [
        "rose to warning",
        "rose to critical",
        "fell to warning",
    ]


def test_cooldown_repeats_follow_the_injected_clock(recorder, json_log, make_engine):
    reader = ScriptedReader()
    engine, clock = make_engine(FakeScanner(app=([recorder.pid], reader)), cooldown=10)
    engine.watchlist.rescan()
    got = []
    for step in (0, 5, 5, 1):  # t = 0, 5, 10, 11
        clock.now += step
        reader.push(percent(80))
        sample_all(engine, "poll")
        got.append(len(recorder.received()))  # a fence each time: equal signals do not merge
    assert got == [1, 1, 2, 2]
    assert [s["reason"] for s in messages(json_log, "signal sent")] == ["crossed", "repeat"]


def test_a_jump_to_critical_sends_only_the_critical_signal(recorder, json_log, make_engine):
    reader = ScriptedReader([percent(97)])
    engine, _ = make_engine(FakeScanner(app=([recorder.pid], reader)))
    engine.watchlist.rescan()
    sample_all(engine, "poll")
    assert recorder.received() == ["SIGUSR2"]
    assert messages(json_log, "rose to critical (skipped warning)")


def test_custom_signals_are_used(recorder, json_log, make_engine):
    reader = ScriptedReader([percent(80), percent(95)])
    engine, _ = make_engine(
        FakeScanner(app=([recorder.pid], reader)),
        warning_signal=signal.SIGUSR2,
        critical_signal=signal.SIGUSR1,
    )
    engine.watchlist.rescan()
    sample_all(engine, "poll")
    assert recorder.received() == ["SIGUSR2"]
    sample_all(engine, "poll")
    assert recorder.received() == ["SIGUSR2", "SIGUSR1"]


def test_working_set_metric_ignores_inactive_file(recorder, json_log, make_engine):
    # usage 95% but 30% of it is inactive page cache: the working set is 65%, below warning.
    sample = MemorySample(95 * MIB, LIMIT, 30 * MIB)
    reader = ScriptedReader([sample, sample])
    engine, _ = make_engine(FakeScanner(app=([recorder.pid], reader)), metric="working-set")
    engine.watchlist.rescan()
    sample_all(engine, "poll")
    assert recorder.received() == []
    engine.sampler.settings = WatchSettings(metric="usage")
    sample_all(engine, "poll")
    assert recorder.received() == ["SIGUSR2"]


def test_signal_target_main_signals_only_the_topmost_process(tmp_path, json_log, make_engine):
    # sh (topmost) with a recorder child: only sh is signalled (sh has no handler: only with
    # --signal-uncaught), and SIGUSR1 ends it.
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    out = tmp_path / "grandchild.signals"
    out.touch()
    shell = subprocess.Popen(
        ["sh", "-c", '"$0" "$1" "$2" & wait', sys.executable, str(script), str(out)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert shell.stdout.readline().strip() == "ready"
        (child,) = psutil.Process(shell.pid).children()
        reader = ScriptedReader([percent(80)])
        engine, _ = make_engine(
            FakeScanner(app=([child.pid, shell.pid], reader)),
            signal_target="main",
            signal_uncaught=True,
        )
        engine.watchlist.rescan()
        sample_all(engine, "poll")
        assert shell.wait(timeout=15) == -signal.SIGUSR1
        assert received(child.pid, out) == []
        assert [s["pid"] for s in messages(json_log, "signal sent")] == [shell.pid]
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        shell.stdout.close()


class KernelQueue(WakeSource):
    """A source whose event of a crossing is still queued when a sample sees the crossing (the
    probe's, naming the process --bpf-signal reached in the kernel): ``queued`` hands it over
    once, as ebpf_source's reads its ring buffer."""

    name = "kernel-queue"

    def __init__(self, loop, crossings: dict) -> None:
        super().__init__(loop)
        self.crossings = crossings

    def queued(self, key):
        return self.crossings.pop(key, None)

    def watching(self, key):
        return False

    def detach(self, key):
        pass

    def close(self):
        pass


def test_a_critical_signalled_in_the_kernel_is_not_sent_again_by_a_sample_woken_otherwise(
    recorder, json_log, make_engine
):
    # A poll (not the probe's event) wakes the sample that reads usage past critical while the
    # probe's event of that crossing, SIGUSR2 sent in the kernel to the recorder, is queued: the
    # sample takes it, and user space does not send SIGUSR2 a second time.
    reader = ScriptedReader([percent(95)])
    engine, clock = make_engine(FakeScanner(app=([recorder.pid], reader)), cooldown=10)
    engine.watchlist.rescan()
    now = time.monotonic()
    charge = Crossing(0, 2, int(LIMIT * 0.95), now, recorder.pid, True, now)
    engine.sources.kinds[KernelQueue.name] = KernelQueue(engine.sources.loop, {"app": charge})
    sample_all(engine, "poll")
    assert recorder.received() == []
    assert [m["pid"] for m in messages(json_log, "signal sent in the kernel")] == [recorder.pid]
    assert messages(json_log, "signal sent") == []
    # Taken once: the cooldown's repeat is user space's own.
    reader.push(percent(95))
    clock.now += 10
    sample_all(engine, "poll")
    assert recorder.received() == ["SIGUSR2"]


def test_a_process_without_a_handler_is_never_signalled_and_said_once_per_level(
    sleeper, recorder, json_log, make_engine
):
    # The sleeper (python, no SIGUSR1/SIGUSR2 handler) would be terminated by either signal.
    reader = ScriptedReader([percent(80), percent(80), percent(95)])
    engine, clock = make_engine(FakeScanner(app=([sleeper.pid, recorder.pid], reader)), cooldown=10)
    engine.watchlist.rescan()
    got = []
    for step in (0, 10, 10):  # warning, its repeat, critical
        clock.now += step
        sample_all(engine, "poll")
        got = recorder.received()  # a fence each time: equal signals do not merge
    assert got == ["SIGUSR1", "SIGUSR1", "SIGUSR2"]
    assert sleeper.poll() is None
    assert [s["pid"] for s in messages(json_log, "signal sent")] == [recorder.pid] * 3
    skipped = messages(json_log, "not signalled")
    assert [(s["pid"], s["signal"], s["threshold"]) for s in skipped] == [
        (sleeper.pid, "SIGUSR1", "warning"),
        (sleeper.pid, "SIGUSR2", "critical"),
    ]
    comm = read_proc(sleeper.pid).comm
    assert skipped[0]["why"] == f"pid {sleeper.pid} ({comm}) does not handle SIGUSR1"


def test_a_handler_installed_late_gets_the_next_signal(tmp_path, json_log, make_engine):
    app = Recorder(tmp_path, "app", late=True)
    try:
        reader = ScriptedReader([percent(80), percent(80)])
        engine, clock = make_engine(FakeScanner(app=([app.pid], reader)), cooldown=10)
        engine.watchlist.rescan()
        sample_all(engine, "poll")  # still starting: skipped, not killed
        assert app.process.poll() is None
        app.install()
        clock.now += 10
        sample_all(engine, "poll")  # the cooldown's repeat checks again
        assert app.received() == ["SIGUSR1"]
        assert [s["reason"] for s in messages(json_log, "signal sent")] == ["repeat"]
        assert len(messages(json_log, "no process to signal")) == 0
    finally:
        app.stop()


def test_signal_uncaught_signals_without_a_handler_as_oomhero_did(sleeper, make_engine):
    reader = ScriptedReader([percent(80)])
    engine, _ = make_engine(FakeScanner(app=([sleeper.pid], reader)), signal_uncaught=True)
    engine.watchlist.rescan()
    sample_all(engine, "poll")
    assert sleeper.wait(timeout=15) == -signal.SIGUSR1


def test_unlimited_never_signals_and_says_so_once(recorder, json_log, make_engine):
    unlimited = MemorySample(10_000 * MIB, None, 0)
    reader = ScriptedReader([unlimited] * 5)
    engine, clock = make_engine(FakeScanner(app=([recorder.pid], reader)), cooldown=1)
    engine.watchlist.rescan()
    for _ in range(5):
        clock.now += 100
        sample_all(engine, "poll")
    assert recorder.received() == []
    said = messages(json_log, "no memory limit: never signalled")
    assert len(said) == 1
    assert said[0]["target"] == "app"
    assert messages(json_log, "signal sent") == []
    assert engine.targets["app"].last_sample == unlimited


def test_unlimited_is_said_again_after_a_limit_came_and_went(recorder, json_log, make_engine):
    unlimited = MemorySample(10 * MIB, None, 0)
    reader = ScriptedReader([unlimited, unlimited, percent(10), unlimited])
    engine, _ = make_engine(FakeScanner(app=([recorder.pid], reader)))
    engine.watchlist.rescan()
    for _ in range(4):
        sample_all(engine, "poll")
    assert len(messages(json_log, "no memory limit: never signalled")) == 2


def test_json_log_lines(recorder, json_log, make_engine):
    reader = ScriptedReader([percent(80)])
    engine, _ = make_engine(FakeScanner(app=([recorder.pid], reader)))
    engine.watchlist.rescan()
    sample_all(engine, "inotify")
    records = lines(json_log)  # every line parses as JSON
    assert [r["level"] for r in records] == ["info", "warning", "warning"]
    assert [r["msg"] for r in records] == ["watching target", "rose to warning", "signal sent"]
    assert all({"time", "level", "msg"} <= set(r) for r in records)
    sent = records[-1]
    assert sent["level"] == "warning"
    assert sent["source"] == "inotify"
    assert sent["usage_mib"] == 80.0
    assert sent["limit_mib"] == 100.0
    assert sent["comm"].startswith("python")
    assert sent["app"] == sent["comm"]


def test_a_gone_process_is_forgotten_and_nothing_else_is_signalled(
    sleeper, recorder, json_log, make_engine
):
    reader = ScriptedReader([percent(80)])
    engine, _ = make_engine(FakeScanner(app=([sleeper.pid, recorder.pid], reader)))
    engine.watchlist.rescan()
    assert sorted(engine.targets["app"].processes.by_pid) == sorted([sleeper.pid, recorder.pid])
    sleeper.kill()
    sleeper.wait()
    sample_all(engine, "poll")
    assert recorder.received() == ["SIGUSR1"]
    assert list(engine.targets["app"].processes.by_pid) == [recorder.pid]
    assert [s["pid"] for s in messages(json_log, "signal sent")] == [recorder.pid]


def test_no_process_left_to_signal_is_logged(sleeper, json_log, make_engine):
    reader = ScriptedReader([percent(80), percent(95)])
    engine, _ = make_engine(FakeScanner(app=([sleeper.pid], reader)))
    engine.watchlist.rescan()
    sleeper.kill()
    sleeper.wait()
    sample_all(engine, "poll")  # the scan before signalling finds it gone
    sample_all(engine, "poll")
    assert messages(json_log, "signal sent") == []
    assert [m["signal"] for m in messages(json_log, "no process to signal")] == [
        "SIGUSR1",
        "SIGUSR2",
    ]


def test_unreadable_sample_is_said_once_then_recovers(recorder, json_log, make_engine):
    reader = ScriptedReader(
        [
            CgroupError(2, "gone"),
            CgroupError(22, "memory.current does not hold a number"),
            CgroupError(2, "gone"),
            percent(80),
        ]
    )
    engine, _ = make_engine(FakeScanner(app=([recorder.pid], reader)))
    engine.watchlist.rescan()
    for _ in range(4):
        sample_all(engine, "poll")
    assert len(messages(json_log, "cannot sample")) == 1
    assert recorder.received() == ["SIGUSR1"]


def test_a_target_that_cannot_be_opened_is_retried_soon_and_said_once_it_lasts(
    recorder, json_log, make_engine
):
    scanner = FakeScanner(app=([recorder.pid], CgroupError(13, "permission denied")))
    engine, clock = make_engine(scanner)
    engine.watchlist.rescan()
    assert engine.targets == {} and scanner.opened == 1
    assert engine.watchlist.retry_at == clock.now + RETRY_FIRST
    while engine.watchlist.retry_at < math.inf:  # retried on its own schedule, no rescan
        assert not messages(json_log, "cannot read target") or clock.now - 1000 >= SAY_AFTER
        clock.now = engine.watchlist.retry_at
        engine.watchlist.retry()
    assert scanner.opened == 1 + math.log2(RETRY_LAST / RETRY_FIRST) + 1
    assert engine.watchlist.retry_at == math.inf  # from now on, at full rescans only
    engine.watchlist.rescan()
    assert [m["why"] for m in messages(json_log, "cannot read target")] == ["permission denied"]
    reader = ScriptedReader([percent(80)])
    scanner.targets["app"] = ([recorder.pid], reader)
    engine.watchlist.rescan()
    sample_all(engine, "poll")
    assert recorder.received() == ["SIGUSR1"]
    assert engine.watchlist.unopened == {}


def test_a_container_caught_in_its_setup_is_watched_on_the_retry_and_never_said(
    recorder, json_log, make_engine
):
    """Its /sys/fs/cgroup not mounted yet: refused at first, then fine a moment later."""
    reader = ScriptedReader([percent(10)])
    reader.key = "app"
    outcomes = [CgroupRefused(1, "/proc/9/root/sys/fs/cgroup is on sysfs"), reader]

    def open_reader():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    class Scanner(FakeScanner):
        def scan(self):
            return {"app": Found("app", [read_proc(recorder.pid)], open_reader)}

    engine, clock = make_engine(Scanner())
    engine.watchlist.rescan()
    clock.now = engine.watchlist.retry_at
    engine.watchlist.retry()
    assert list(engine.targets) == ["app"]
    assert messages(json_log, "target refused: not watched") == []


def test_a_target_gone_from_the_scan_is_closed(recorder, json_log, make_engine):
    reader = ScriptedReader()
    scanner = FakeScanner(app=([recorder.pid], reader))
    engine, _ = make_engine(scanner)
    engine.watchlist.rescan()
    tracked = engine.targets["app"].processes.by_pid[recorder.pid]
    scanner.targets.clear()
    engine.watchlist.rescan()
    assert engine.targets == {}
    assert reader.closed
    assert tracked.pidfd == -1
    assert messages(json_log, "target gone")


def test_each_target_has_its_own_state(tmp_path, json_log, make_engine):
    first, second = Recorder(tmp_path, "first"), Recorder(tmp_path, "second")
    try:
        a, b = ScriptedReader(), ScriptedReader()
        engine, _ = make_engine(FakeScanner(a=([first.pid], a), b=([second.pid], b)))
        engine.watchlist.rescan()
        a.push(percent(80), percent(80))
        b.push(percent(10), percent(95))
        sample_all(engine, "poll")
        sample_all(engine, "poll")
        assert first.received() == ["SIGUSR1"]
        assert second.received() == ["SIGUSR2"]
    finally:
        first.stop()
        second.stop()


def test_a_zero_limit_does_not_stop_the_other_targets(tmp_path, json_log, make_engine):
    # memory.max can be set to 0 on cgroup v2; one such target must not crash the engine.
    first, second = Recorder(tmp_path, "first"), Recorder(tmp_path, "second")
    try:
        zero = ScriptedReader([MemorySample(4096, 0, 0)])
        fine = ScriptedReader([percent(80)])
        engine, _ = make_engine(FakeScanner(zero=([first.pid], zero), fine=([second.pid], fine)))
        engine.watchlist.rescan()
        sample_all(engine, "poll")
        assert second.received() == ["SIGUSR1"]
    finally:
        first.stop()
        second.stop()


def test_a_process_started_since_the_last_scan_still_gets_the_signal(tmp_path, recorder, json_log):
    from tests.helpers import Recorder

    reader = ScriptedReader([percent(10), percent(80)])
    scanner = FakeScanner(app=([recorder.pid], reader))
    engine = Engine(scanner, WatchSettings(warning=75, critical=90, sources=()), clock=Clock())
    late = Recorder(tmp_path, "late")
    try:
        engine.watchlist.rescan()
        sample_all(engine, "poll")
        scanner.targets["app"] = ([recorder.pid, late.pid], reader)  # started after the scan
        sample_all(engine, "poll")  # crosses warning before any rescan
        assert late.received() == ["SIGUSR1"]
        assert recorder.received() == ["SIGUSR1"]
    finally:
        late.stop()
        engine.close()


# -- one wake-up for targets due together; rescans only when processes changed ---------------
def test_targets_due_within_a_millisecond_are_sampled_in_one_wake():
    def at(key, when):
        return Target(key, key, ScriptedReader(), next_sample_at=when)

    targets = [at("now", 10.0), at("past", 9.0), at("in-0.5ms", 10.0005), at("in-5ms", 10.005)]
    assert [t.key for t in due(targets, 10.0)] == ["now", "past", "in-0.5ms"]
    assert [t.key for t in due(targets, 10.0, batch=0.0)] == ["now", "past"]


def test_rescan_gate_opens_when_the_process_generation_changes_or_at_the_full_cadence():
    count = [100]
    gate = RescanGate(lambda: count[0], full_every=10.0)
    assert gate.due(0.0)  # the first time: nothing seen yet
    assert not gate.due(1.0) and not gate.due(9.0)  # nothing started or exited
    count[0] = 101
    assert gate.due(9.5)  # a process started
    assert not gate.due(10.0)
    assert gate.due(19.5)  # the same count for 10 s: one exited as another started, maybe
    assert not gate.due(20.0)


def test_an_idle_sample_builds_no_log_line_unless_debug_is_on(recorder, json_log, make_engine):
    reader = ScriptedReader([percent(10)] * 3)
    engine, _clock = make_engine(FakeScanner(app=([recorder.pid], reader)), sources=())
    engine.watchlist.rescan()
    sample_all(engine, "poll")
    assert messages(json_log, "sampled") == []
    log.setup("json", json_log, debug=True)
    sample_all(engine, "poll")
    assert [m["percent"] for m in messages(json_log, "sampled")] == [10.0]


def test_memory_stat_is_read_only_for_the_working_set(tmp_path):
    # Without memory.stat a sample still works, unless the metric or a listener (the metrics
    # gauge) wants the working set, which needs its inactive_file.
    directory = v2_dir(tmp_path / "g")
    (directory / "memory.stat").unlink()
    cgroup = CgroupDir.open(str(directory), 2)
    target = Target("g", "g", cgroup)
    try:
        listeners = Listeners()
        assert (
            Sampler(WatchSettings(), lambda: listeners.wants_page_cache).read(target, 1.0).value
            == 96 * MIB
        )
        with pytest.raises(CgroupError):
            Sampler(WatchSettings(metric="working-set"), lambda: listeners.wants_page_cache).read(
                target, 2.0
            )
        listeners.append(Metrics())
        with pytest.raises(CgroupError):
            Sampler(WatchSettings(), lambda: listeners.wants_page_cache).read(target, 3.0)
    finally:
        cgroup.close()


def test_the_limit_is_read_again_at_the_slowest_cadence(tmp_path):
    # memory.max never notifies: re-read as often as an idle target is sampled (the ceiling,
    # or the fixed interval), not at every dense adaptive sample in between.
    directory = v2_dir(tmp_path / "g", limit=str(128 * MIB))
    cgroup = CgroupDir.open(str(directory), 2)
    target = Target("g", "g", cgroup)
    sampler = Sampler(WatchSettings(poll_ceiling=1.0))
    try:
        assert sampler.read(target, 10.0).memory.limit == 128 * MIB
        (directory / "memory.max").write_text(f"{64 * MIB}\n")
        assert sampler.read(target, 10.5).memory.limit == 128 * MIB  # within the ceiling
        assert sampler.read(target, 11.0).memory.limit == 64 * MIB
        assert sampler.limit_due(None, 0.0)
        assert sampler.limit_due(10.0, 10.95)  # a sample due at 11.0, batched a little early
        assert not Sampler(WatchSettings(interval=5.0)).limit_due(10.0, 13.0)
    finally:
        cgroup.close()


def test_the_loop_turns_with_no_target_and_the_engine_closes_its_outputs_on_leaving():
    """Nothing to watch yet (a pod's other containers not started): the loop waits for the next
    scan; leaving ``with`` closes what the engine opened and every output handed to it."""
    turns, closed = [], []
    with Engine(FakeScanner(), WatchSettings(sources=())) as engine:
        engine.outputs.append(lambda: closed.append("output"))
        engine.run(until=lambda: turns.append(1) or len(turns) > 3, max_wait=0.01)
        assert not engine.targets and engine.watchlist.scanned_once
        assert not closed
    assert closed == ["output"]
