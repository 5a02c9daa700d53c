"""``oomhero top``: the view rendered for synthetic targets into rich's recording console, and
the real command driven in tmux on synthetic cgroup v2 directories (never /sys/fs/cgroup)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess

import psutil
import pytest
from rich.console import Console

from oomhero import log
from oomhero.actions.listener import Listener
from oomhero.commands import top, top_view
from oomhero.config import WatchSettings
from oomhero.engine import Engine
from oomhero.kernel.cgroup import CgroupDir, MemorySample
from oomhero.kernel.procfs import read_proc
from oomhero.policy import Level
from oomhero.targets import Found
from tests.helpers import REPO, SYNTHETIC_CLI, clean_env, sample_all, v2_dir, wait_until

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")

MIB = 1024**2
LIMIT = 128 * MIB


class ScriptedReader:
    """Samples the test scripts; PSI as memory.pressure would give it."""

    def __init__(self, psi=None):
        self.samples = []
        self.psi = psi
        self.key = None  # what it is: the scanner names it (FakeScanner)

    def alive(self):
        return True

    def push(self, pct):
        self.samples.append(MemorySample(int(LIMIT * pct / 100), LIMIT, 0))

    def sample(self):
        return self.samples.pop(0)

    def pressure(self):
        return None if self.psi is None else {"some": {"avg10": self.psi}}

    def close(self):
        pass


class FakeScanner:
    def __init__(self, settings=None, **targets):
        self.targets = targets  # key → (pids, reader)
        self.settings = settings or {}  # key → the target's own WatchSettings (node mode)

    def scan(self):
        for key, (_, reader) in self.targets.items():
            if isinstance(reader, ScriptedReader) and reader.key is None:
                reader.key = key
        return {
            key: Found(
                key,
                [i for pid in pids if (i := read_proc(pid))],
                lambda r=reader: r,
                self.settings.get(key),
            )
            for key, (pids, reader) in self.targets.items()
        }

    def close(self):
        pass


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def text_of(renderable) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def row_of(text: str, name: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return line


def names_in(text: str, names) -> list[str]:
    """The first word of each line that starts with one of ``names``: the rows, in order."""
    return [w[0] for line in text.splitlines() if (w := line.split()) and w[0] in names]


# -- pieces ---------------------------------------------------------------------------------
def test_bar_fills_to_the_percent_and_marks_both_thresholds():
    # 20 cells of 5 %: warning 75 % in cell 15, critical 90 % in cell 18.
    assert top_view.bar(50, 75, 90, Level.OK).plain == "██████████·····│··│·"
    assert top_view.bar(0, 75, 90, Level.OK).plain == "···············│··│·"
    # A filled mark cell keeps its mark, drawn heavier.
    assert top_view.bar(80, 75, 90, Level.WARNING).plain == "███████████████┃··│·"
    assert top_view.bar(95, 75, 90, Level.CRITICAL).plain == "███████████████┃██┃·"
    assert top_view.bar(130, 75, 90, Level.CRITICAL).plain == "███████████████┃██┃█"
    assert top_view.bar(50, 65, 80, Level.OK).plain == "██████████···│··│···"
    assert top_view.bar(None, 75, 90, Level.OK).plain == "·" * 20
    styles = {span.style for span in top_view.bar(50, 75, 90, Level.OK).spans}
    assert {"bold yellow", "bold red", "green"} <= styles


def test_sparkline_shows_the_peak_of_each_slot_of_the_last_minute():
    now = 1000.0
    history = [
        (now - 90, 100.0),
        (now - 59, 10.0),
        (now - 30, 40.0),
        (now - 29, 50.0),
        (now, 100.0),
    ]
    # 4 s slots: 10 % in slot 0, the peak 50 % in slot 7, 100 % in the last; the 90 s old
    # sample is out of the window; slots without a sample repeat the one before.
    assert top_view.sparkline(history, now, 75, 90).plain == "▁" * 7 + "▅" * 7 + "█"
    assert top_view.sparkline([(now - 4, 0.0)], now, 75, 90).plain == " " * 14 + "▁"
    assert top_view.sparkline([], now, 75, 90).plain == " " * 15
    line = top_view.sparkline([(now - 6, 80.0), (now - 3, 95.0)], now, 75, 90)
    assert line.plain == " " * 13 + "▇█" and {s.style for s in line.spans} == {"yellow", "red"}


# -- the view over an engine ----------------------------------------------------------------
@pytest.fixture
def setup(tmp_path, recorder, json_log):
    """Three targets after three samples 10 s apart, the view listening:
    a-small: 30 % (ok); b-app: 80 → 95 → 87 % (SIGUSR1, SIGUSR2, still critical by
    hysteresis), its process the signal recorder; c-cgroup: a synthetic v2 directory at 89 %
    (warning), watched by inotify, memory.pressure some avg10=1.50."""
    small, app = ScriptedReader(), ScriptedReader(psi=12.5)
    cg_path = v2_dir(tmp_path / "c", current=int(LIMIT * 0.89), limit=str(LIMIT))
    cgroup = CgroupDir.open(str(cg_path), 2)
    scanner = FakeScanner(
        **{"a-small": ([], small), "b-app": ([recorder.pid], app), "c-cgroup": ([], cgroup)}
    )
    clock = Clock()
    engine = Engine(scanner, WatchSettings(sources=("inotify",)), clock=clock)
    view = top_view.TopView(engine, keys=True)
    engine.listeners.append(view)
    engine.watchlist.rescan()
    for pct in (80, 95, 87):
        small.push(30)
        app.push(pct)
        sample_all(engine, "poll")
        view.tick(engine)
        clock.now += 10
    clock.now -= 5  # 15 s after the SIGUSR2
    yield engine, view, recorder
    engine.close()


def test_rows_show_usage_bar_sparkline_level_signal_sources_and_psi(setup):
    _, view, recorder = setup
    assert recorder.received() == ["SIGUSR1", "SIGUSR2"]
    text = text_of(view.renderable())
    header = text.splitlines()[0]
    assert "3 targets" in header and "warning 75% (SIGUSR1)" in header
    assert "critical 90% (SIGUSR2)" in header and "sort name ↑" in header
    assert "s sort · r reverse · q quit" in header

    a, b, c = row_of(text, "a-small"), row_of(text, "b-app"), row_of(text, "c-cgroup")
    assert " ok " in a and " 38/128 " in a and " 30.0 " in a
    assert "██████·········│··│·" in a
    assert " - " in a  # no signal, no sources, no PSI

    assert " critical " in b and " 111/128 " in b and " 87.0 " in b
    assert "███████████████┃█·│·" in b
    # 4 s slots of the last minute: 80 % 25 s ago (slot 8), 95 % 15 s ago, 87 % 5 s ago.
    assert " " * 8 + "▇▇▇██▇▇" in b
    assert "SIGUSR2 15s " in b
    assert b.rstrip().endswith("12.5")  # PSI some avg10 from the reader

    assert " warning " in c and " 89.0 " in c and "███████████████┃██│·" in c
    assert " inotify " in c and c.rstrip().endswith("1.5")


def test_level_cell_says_unreadable_no_limit_and_oom_kills(setup):
    engine, view, _ = setup
    a, b = engine.targets["a-small"], engine.targets["b-app"]
    view.oom_killed(b, 2)
    a.said.add("unreadable")
    text = text_of(view.renderable())
    assert "critical oom×2" in row_of(text, "b-app")
    assert "unreadable" in row_of(text, "a-small")
    a.said.clear()
    a.last_sample = MemorySample(5 * MIB, None, 0)
    row = row_of(text_of(view.renderable()), "a-small")
    assert "no limit" in row and " 5.0/- " in row and "·" * 20 in row


def test_a_target_with_its_own_thresholds_gets_its_own_marks(json_log):
    own, other = ScriptedReader(), ScriptedReader()
    scanner = FakeScanner(
        {"own": WatchSettings(warning=50, critical=60)}, own=([], own), other=([], other)
    )
    engine = Engine(scanner, WatchSettings(), clock=Clock())
    try:
        view = top_view.TopView(engine)
        engine.listeners.append(view)
        engine.watchlist.rescan()
        own.push(55)
        other.push(55)
        sample_all(engine, "poll")
        text = text_of(view.renderable())
    finally:
        engine.close()
    assert "some targets have their own thresholds" in text.splitlines()[1]
    own_row, other_row = row_of(text, "own"), row_of(text, "other")
    assert " warning " in own_row and "██████████┃·│·······" in own_row
    assert " ok " in other_row and "███████████····│··│·" in other_row


def test_keys_sort_by_name_usage_and_level_and_reverse(setup):
    engine, view, _ = setup
    names = ("a-small", "b-app", "c-cgroup")

    def order():
        assert [t.name for t in view.ordered()] == names_in(text_of(view.renderable()), names)
        return [t.name.split("-")[0] for t in view.ordered()]

    assert order() == ["a", "b", "c"]
    view.key("s")  # usage %, highest first: c 89 % above b 87 %
    assert view.sort == "usage" and order() == ["c", "b", "a"]
    assert "sort usage ↓" in text_of(view.renderable())
    view.key("r")
    assert order() == ["a", "b", "c"] and "sort usage ↑" in text_of(view.renderable())
    view.key("r")
    view.key("s")  # level: b is still critical at 87 % (hysteresis), c warning
    assert view.sort == "level" and order() == ["b", "c", "a"]
    view.key("s")
    assert view.sort == "name" and order() == ["a", "b", "c"]
    view.key("r")
    assert order() == ["c", "b", "a"]
    view.key("x")  # other keys do nothing
    assert not engine.stopping
    view.key("q")
    assert engine.stopping


def test_key_source_feeds_stdin_bytes_to_the_view_and_stops_at_eof(setup):
    engine, view, _ = setup
    read_end, write_end = os.pipe()
    try:
        source = top.KeySource(read_end, view)
        assert (source.name, source.fileno()) == ("keys", read_end)
        os.write(write_end, b"sr")
        assert source.consume() == set()
        assert (view.sort, view.reversed, engine.stopping) == ("usage", True, False)
        os.close(write_end)
        write_end = None
        assert source.consume() == set()
        assert engine.stopping
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)


def test_view_keeps_the_last_log_lines_while_capturing_and_forgets_gone_targets(setup, json_log):
    engine, view, _ = setup
    with view.capturing_logs():
        for n in range(7):
            log.event(30, "line", n=n)
    log.event(30, "after")
    assert [line for line in view.log_lines if '"msg": "line"' in line][-1].endswith('"n": 6}')
    assert len(view.log_lines) == top_view.LOG_LINES
    assert '"msg": "after"' in json_log.getvalue()
    assert "line" in text_of(view.renderable())

    engine.watchlist.scanner.targets.pop("b-app")
    engine.watchlist.rescan()
    view.tick(engine)
    assert "b-app" not in view.history and "b-app" not in view.signals
    assert "2 targets" in text_of(view.renderable())


def test_run_without_a_terminal_renders_once_at_the_end(json_log):
    reader = ScriptedReader()
    for _ in range(1000):
        reader.push(50)
    clock = Clock()
    engine = Engine(FakeScanner(app=([], reader)), WatchSettings(), clock=clock)

    class StopAfter(Listener):
        ticks = 0

        def tick(self, engine):
            clock.now += 1
            self.ticks += 1
            engine.stopping = self.ticks >= 3

    engine.listeners.append(StopAfter())
    out = io.StringIO()
    try:
        assert top.show(engine, Console(file=out, width=120), stdin=io.StringIO()) == 0
    finally:
        engine.close()
    text = out.getvalue()
    assert text.count("oomhero top") == 1 and "q quit" not in text
    assert "██████████·····│··│·" in row_of(text, "app")
    assert len(engine.listeners) == 1  # the view is gone
    assert "oomhero stopped" in json_log.getvalue()


# -- the real command in tmux ---------------------------------------------------------------
class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
            stdin=subprocess.DEVNULL,
            env=clean_env(HISTFILE="", PS1="$ "),
            timeout=10,
        ).stdout

    def pane(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait_for(self, *needles: str) -> str:
        """The screen once every needle is on it."""
        return self._wait(lambda text: all(n in text for n in needles), f"{needles}")

    def wait_for_line(self, line: str) -> str:
        """The screen once ``line`` is a whole line of it."""
        pattern = re.compile(f"^{re.escape(line)}$", re.M)
        return self._wait(pattern.search, repr(line))

    def _wait(self, check, what: str, timeout: float = 20) -> str:
        def seen():
            text = self.pane()
            return text if check(text) else None

        try:
            return wait_until(seen, f"{what} on screen", timeout=timeout, step=0.05)
        except AssertionError:
            raise AssertionError(f"{what} not on screen:\n{self.pane()}") from None


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): the live view goes untested")
    session = Tmux(str(tmp_path / "tmux.sock"))  # a server of its own, gone with tmp_path
    session("new-session", "-d", "-s", "top", "-x", "120", "-y", "30", "bash --norc --noprofile")
    yield session
    subprocess.run(["tmux", "-S", session.socket, "kill-server"], capture_output=True, timeout=10)


def set_usage(cgroup, pct: float) -> None:
    """A new memory.current, written in place as the kernel's file changes (oomhero keeps it
    open): one fixed-width write at offset 0, never a file half written or truncated."""
    fd = os.open(cgroup / "memory.current", os.O_WRONLY)
    try:
        os.pwrite(fd, f"{int(LIMIT * pct / 100):>20}\n".encode(), 0)
    finally:
        os.close(fd)


def start_top(tmux, *cgroups) -> None:
    """``oomhero top`` at the pane's shell, which then prints its exit code and stty -a.
    The markers are whole lines only once printed (the typed command line holds them too)."""
    command = f"{' '.join(SYNTHETIC_CLI)} top {' '.join(map(str, cgroups))} --sources none"
    command += '; echo "[exit $?]"; stty -a; echo "[end]"'
    tmux("send-keys", "-t", "top", "-l", f"cd {REPO} && {command}")
    tmux("send-keys", "-t", "top", "Enter")


def assert_terminal_restored(tmux, code: int = 0) -> None:
    screen = tmux.wait_for_line("[end]")
    assert re.search(rf"^\[exit {code}\]$", screen, re.M), screen
    assert "of limit" not in screen  # the alternate screen is gone
    assert "oomhero stopped" in screen  # stderr again, once the view has left
    stty = screen[screen.index(f"[exit {code}]\n") :]
    assert " icanon " in stty and " echo " in stty  # cbreak mode undone
    assert "-icanon" not in stty and "-echo " not in stty


def test_top_in_tmux_watches_signals_sorts_and_quits_restoring_the_terminal(
    tmp_path, tmux, recorder
):
    a = v2_dir(tmp_path / "cgs" / "a", [recorder.pid], current=int(LIMIT * 0.3), limit=str(LIMIT))
    b = v2_dir(tmp_path / "cgs" / "b", current=int(LIMIT * 0.5), limit=str(LIMIT))
    start_top(tmux, a, b)

    screen = tmux.wait_for("of limit", "30.0", "50.0")
    header = screen.splitlines()[0]
    assert header.startswith("oomhero top  2 targets") and "sort name ↑" in header
    assert "q quit" in header and screen.splitlines()[1] == f"under {tmp_path / 'cgs'}/"
    row_a = row_of(screen, "a")
    assert " ok " in row_a and " 38/128 " in row_a and "██████·········│··│·" in row_a
    assert " python" in row_a  # the recorder, this cgroup's process
    assert "1.5" in row_a  # PSI from the synthetic memory.pressure
    assert names_in(screen, ("a", "b")) == ["a", "b"]

    # Usage rises past the warning threshold: the row follows and the process is signalled.
    set_usage(a, 80)
    screen = tmux.wait_for("80.0", "SIGUSR1 ")
    row_a = row_of(screen, "a")
    assert " warning " in row_a and "███████████████┃··│·" in row_a and "SIGUSR1 " in row_a
    assert recorder.received() == ["SIGUSR1"]
    assert "signal sent" in screen  # the log lines, in the view

    tmux("send-keys", "-t", "top", "s")
    screen = tmux.wait_for("sort usage ↓")
    assert names_in(screen, ("a", "b")) == ["a", "b"]
    set_usage(a, 20)
    screen = tmux.wait_for("20.0")
    assert names_in(screen, ("a", "b")) == ["b", "a"]
    tmux("send-keys", "-t", "top", "r")
    screen = tmux.wait_for("sort usage ↑")
    assert names_in(screen, ("a", "b")) == ["a", "b"]

    tmux("send-keys", "-t", "top", "q")
    assert_terminal_restored(tmux)


def test_top_in_tmux_restores_the_terminal_on_sigterm(tmp_path, tmux):
    cgroup = v2_dir(tmp_path / "cg", current=int(LIMIT * 0.5), limit=str(LIMIT))
    start_top(tmux, cgroup)
    tmux.wait_for("of limit", "50.0")
    shell = psutil.Process(int(tmux("display-message", "-p", "-t", "top", "#{pane_pid}")))
    (top_process,) = shell.children()
    assert "top" in top_process.cmdline()
    top_process.send_signal(signal.SIGTERM)
    assert_terminal_restored(tmux)
