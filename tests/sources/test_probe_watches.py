"""ProbeWatches' policy over a stand-in for the loaded probe: what it writes to the probe's map
and when, and how it gives a stopped probe up. (The real probe, stopped for real by turning
kprobes off, is the guest's test: tests/real_kernel/test_ebpf.py.)"""

from __future__ import annotations

import select

import pytest

from oomhero.sources.ebpf.common import ARMED_CRITICAL, ARMED_WARNING
from oomhero.sources.ebpf.watches import ProbeWatches

MIB = 1 << 20
LIMIT = 100 * MIB


class StandIn:
    """What ProbeWatches uses of a loaded probe."""

    function = "page_counter_try_charge"

    def __init__(self) -> None:
        self.writes: list[tuple] = []
        self.counted = 0
        self.reads = 0
        self.broken: dict[str, OSError] = {}  # method → the error it raises
        self.closed = False

    def watch(self, cid, warning, critical, armed):
        if "watch" in self.broken:
            raise self.broken["watch"]
        self.writes.append((cid, warning, critical, armed))

    def unwatch(self, cid):
        pass

    def calls(self) -> int:
        self.reads += 1
        if "calls" in self.broken:
            raise self.broken["calls"]
        return self.counted

    def close(self) -> None:
        self.closed = True


class Cgroup:
    """A watched cgroup's usage as the probe's watches read it again (after the calls)."""

    def __init__(self) -> None:
        self.current = 0

    def usage(self) -> int:
        return self.current


def sampled(w: ProbeWatches, key: str, usage: int, limit: int = LIMIT) -> None:
    """A sample of ``key`` at ``usage`` (what its cgroup reads now), followed by the watches."""
    w.readers[key].current = usage
    w.follow(key, limit, 75, 90, 0, usage)


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []
        self.resampled: list[set[str]] = []
        self.fds: list[object] = []


@pytest.fixture
def watches():
    """ProbeWatches whose own load fails at once (no BTF, no bcc), then given a stand-in, as
    if loaded, watching two targets."""
    log = Log()
    w = ProbeWatches(
        0,
        log.fds.append,
        log.fds.remove,
        lambda msg, **fields: log.lines.append((msg, fields)),
        log.resampled.append,
        5.0,
        bcc=False,
        btf="/nonexistent/btf",
    )
    select.select([w._ready_signal.fileno()], [], [], 30)
    w._ready_signal.consume()  # the failed load: one "source unavailable"
    assert [m for m, _ in log.lines] == ["source unavailable"]
    log.lines.clear()
    w.probe, w.ready = StandIn(), True
    log.fds.append(w)  # as started() registers it once loaded
    w.targets, w.keys = {"a": 11, "b": 12}, {11: "a", 12: "b"}
    w.readers = {"a": Cgroup(), "b": Cgroup()}
    yield w, log


def test_unchanged_thresholds_are_written_once(watches):
    w, _ = watches
    for usage in (10 * MIB, 10 * MIB + 4096, 10 * MIB):
        sampled(w, "a", usage)
    armed = ARMED_WARNING | ARMED_CRITICAL
    assert w.probe.writes == [(11, 75 * MIB, 90 * MIB, armed)]
    assert w.armed("a", 0) and w.armed("a", 1) and not w.armed("a", 2)
    sampled(w, "a", 10 * MIB, LIMIT // 2)  # the limit changed: new byte values
    assert w.probe.writes[-1] == (11, 75 * MIB // 2, 90 * MIB // 2, armed)


def test_an_idle_target_never_reads_the_probe(watches):
    w, _ = watches
    for _ in range(50):
        sampled(w, "a", 10 * MIB)
    assert w.probe.reads == 1  # the first sample sets the baseline; then nothing grew


def test_growth_the_probe_saw_keeps_it(watches):
    w, log = watches
    sampled(w, "a", 10 * MIB)
    w.probe.counted += 3
    sampled(w, "a", 40 * MIB)
    assert w.ready and log.lines == [] and log.resampled == []


def test_growth_with_no_call_gives_the_probe_up_once(watches):
    w, log = watches
    sampled(w, "a", 10 * MIB)
    sampled(w, "b", 10 * MIB)
    probe = w.probe
    sampled(w, "a", 10 * MIB + 512 * 1024)  # within a batch or two: not yet
    assert w.ready
    sampled(w, "a", 40 * MIB)
    assert [m for m, _ in log.lines] == ["source failed"]
    fields = log.lines[0][1]
    assert fields["now"] == "adaptive polling" and "was not called" in fields["why"]
    assert "grew by 30 MiB" in fields["why"]
    assert log.resampled == [{"a", "b"}] and probe.closed
    assert not w.armed("a", 0) and not w.watching("a")
    sampled(w, "b", 80 * MIB)
    w.fail("again")
    assert len(log.lines) == 1  # said once


def test_a_charge_between_the_samples_read_and_the_calls_read_is_no_stall(watches):
    # The sample read 86 MiB; before the watches read the calls, the app charged one more MiB
    # (its calls counted) and then stopped growing (it sheds load on SIGUSR2). The next sample's
    # 87 MiB was charged with calls seen: the probe runs.
    w, log = watches
    sampled(w, "a", 80 * MIB)
    w.probe.counted += 8
    w.readers["a"].current = 87 * MIB  # the charge lands after the sample's read
    w.follow("a", LIMIT, 75, 90, 0, 86 * MIB)
    sampled(w, "a", 87 * MIB)
    assert w.ready and log.lines == []


@pytest.mark.parametrize(("method", "said"), [("watch", "written"), ("calls", "read")])
def test_a_map_that_fails_gives_the_probe_up(watches, method, said):
    w, log = watches
    sampled(w, "a", 10 * MIB)
    w.probe.broken[method] = OSError(9, "Bad file descriptor")
    w.probe.counted += 1  # the probe saw the growth: only the map fails
    sampled(w, "a", 40 * MIB, LIMIT // 2)  # new thresholds to write, and growth
    ((msg, fields),) = log.lines
    assert msg == "source failed" and fields["why"].endswith(
        f"cannot be {said}: Bad file descriptor"
    )
    assert log.resampled == [{"a", "b"}]
