"""The live view of ``oomhero top``, an engine listener: ``sampled`` feeds each target's last
minute (the sparkline), ``signalled``/``oom_killed`` what was done and seen, ``tick`` reads PSI
(at most once a second per target) and redraws (at most every ``REDRAW`` seconds)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator

from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from oomhero import log
from oomhero.actions.listener import Listener
from oomhero.policy import Level
from oomhero.targets import Target

MIB = 1024 * 1024
HISTORY = 60.0  # seconds of usage behind the sparkline
SPARK_WIDTH = 15  # sparkline cells: 4 s each
SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 20  # usage bar cells: 5 % of the limit each
PSI_EVERY = 1.0  # seconds between memory.pressure reads, per target
REDRAW = 0.25  # seconds between redraws (key presses redraw at once)
LOG_LINES = 5  # log lines kept in the view while stderr is the terminal
SORTS = ("name", "usage", "level")
LEVEL_STYLE = {Level.OK: "green", Level.WARNING: "yellow", Level.CRITICAL: "bold red"}


class TopView(Listener):
    """Per-target history and the renderable; an engine listener."""

    def __init__(self, engine, keys: bool = False) -> None:
        self.engine = engine
        self.clock: Callable[[], float] = engine.clock
        self.wall: Callable[[], float] = time.time
        self.keys = keys  # show the key hints
        self.history: dict[str, deque[tuple[float, float]]] = {}
        self.signals: dict[str, tuple[str, float, str]] = {}  # key → signal, when, user|kernel
        self.oom_kills: dict[str, int] = {}
        self.psi: dict[str, tuple[float, float | None]] = {}  # key → read at, some avg10
        self.sort = SORTS[0]
        self.reversed = False
        self.log_lines: deque[str] = deque(maxlen=LOG_LINES)
        self.live: Live | None = None
        self.drawn_at: float | None = None
        self.dirty = True

    # -- listener ----------------------------------------------------------------------------
    def sampled(self, target: Target, sample, percent: float, decision, source: str) -> None:
        now = self.clock()
        history = self.history.setdefault(target.key, deque())
        history.append((now, percent))
        while history and history[0][0] < now - HISTORY:
            history.popleft()

    def signalled(self, target: Target, level, signal_name: str, pid: int, where: str) -> None:
        self.signals[target.key] = (signal_name, self.clock(), where)

    def oom_killed(self, target: Target, victims: int) -> None:
        self.oom_kills[target.key] = self.oom_kills.get(target.key, 0) + victims

    def tick(self, engine) -> None:
        now = self.clock()
        for mapping in (self.history, self.signals, self.oom_kills, self.psi):
            for key in [k for k in mapping if k not in engine.targets]:
                del mapping[key]
        for key, target in engine.targets.items():
            read_at = self.psi.get(key, (None, None))[0]
            if read_at is None or now - read_at >= PSI_EVERY:
                self.psi[key] = (now, _some_avg10(target.reader))
        self.redraw()

    # -- keys --------------------------------------------------------------------------------
    def key(self, char: str) -> None:
        if char in ("q", "Q"):
            self.engine.stopping = True
        elif char == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif char == "r":
            self.reversed = not self.reversed
        else:
            return
        self.dirty = True

    # -- drawing -----------------------------------------------------------------------------
    def redraw(self, force: bool = False) -> None:
        if self.live is None:
            return
        now = self.clock()
        if force or self.dirty or self.drawn_at is None or now - self.drawn_at >= REDRAW:
            self.live.update(self.renderable(), refresh=True)
            self.drawn_at = now
            self.dirty = False

    def percent(self, target: Target) -> float | None:
        sample = target.last_sample
        if sample is None or sample.limit is None:
            return None
        value = sample.value(self.engine.settings.metric)
        return value * 100.0 / sample.limit if sample.limit > 0 else 100.0

    def ordered(self) -> list[Target]:
        targets = sorted(self.engine.targets.values(), key=lambda t: (t.name, t.key))
        if self.sort == "name":
            return targets[::-1] if self.reversed else targets

        def usage(t: Target) -> float:
            p = self.percent(t)
            return -1.0 if p is None else p

        if self.sort == "usage":
            return sorted(targets, key=usage, reverse=not self.reversed)
        return sorted(targets, key=lambda t: (t.state.level, usage(t)), reverse=not self.reversed)

    def header(self) -> RenderableType:
        s = self.engine.settings
        arrow = {"name": "↑", "usage": "↓", "level": "↓"}[self.sort]
        if self.reversed:
            arrow = "↓" if arrow == "↑" else "↑"
        line = Text("oomhero top", style="bold", no_wrap=True, overflow="ellipsis")
        line.append(
            f"  {_count(len(self.engine.targets), 'target')} · warning {s.warning:g}% "
            f"({s.warning_signal.name}) · critical {s.critical:g}% ({s.critical_signal.name}) · "
            f"sort {self.sort} {arrow}"
        )
        if self.keys:
            line.append("   s sort · r reverse · q quit", style="dim")
        notes = []
        prefix = self.prefix()
        if prefix:
            notes.append(f"under {prefix}/")
        if any(_differs(t.settings, s) for t in self.engine.targets.values()):
            notes.append("some targets have their own thresholds: see their marks")
        if not notes:
            return line
        return Group(line, Text(" · ".join(notes), no_wrap=True, overflow="ellipsis"))

    def prefix(self) -> str:
        """The directory all targets' paths share, left out of the target column."""
        names = [t.name for t in self.engine.targets.values()]
        if not names or not all(name.startswith("/") for name in names):
            return ""
        common = os.path.commonpath([os.path.dirname(name) for name in names])
        return "" if common == "/" else common

    def short_name(self, target: Target, prefix: str) -> str:
        return target.name[len(prefix) :].lstrip("/") if prefix else target.name

    def table(self) -> Table:
        table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold", expand=False)
        # Only the target column gives way when the terminal is narrow.
        table.add_column("target", overflow="ellipsis", min_width=8)
        table.add_column("app", no_wrap=True, overflow="ellipsis", max_width=10)
        table.add_column("level", no_wrap=True)
        table.add_column("MiB", justify="right", no_wrap=True)
        table.add_column("%", justify="right", no_wrap=True)
        table.add_column("of limit", no_wrap=True, min_width=BAR_WIDTH)
        table.add_column("last 60s", no_wrap=True, min_width=SPARK_WIDTH)
        table.add_column("last signal", no_wrap=True)
        table.add_column("sources", no_wrap=True)
        table.add_column("PSI", justify="right", no_wrap=True)
        prefix = self.prefix()
        for target in self.ordered():
            table.add_row(*self.row(target, prefix))
        return table

    def row(self, target: Target, prefix: str = "") -> list[RenderableType]:
        s, own = self.engine.settings, target.settings  # own: thresholds, signals
        sample = target.last_sample
        percent, psi = self.percent(target), self.psi.get(target.key, (None, None))[1]
        if sample is None:
            usage = "-"
        elif sample.limit is None:
            usage = f"{_mib(sample.value(s.metric))}/-"
        else:
            usage = f"{_mib(sample.value(s.metric))}/{_mib(sample.limit)}"
        return [
            self.short_name(target, prefix),
            target.main_comm,
            self.level_text(target),
            usage,
            _one_decimal(percent),
            bar(percent, own.warning, own.critical, target.state.level),
            sparkline(self.history.get(target.key, ()), self.clock(), own.warning, own.critical),
            self.signal_text(target),
            " ".join(self.engine.sources.active(target.key)) or "-",
            _one_decimal(psi),
        ]

    def level_text(self, target: Target) -> Text:
        if "unreadable" in target.said:
            text = Text("unreadable", style="bold red")
        elif target.last_sample is None:
            text = Text("-", style="dim")
        elif target.last_sample.limit is None:
            text = Text("no limit", style="dim")
        else:
            level = target.state.level
            text = Text(level.label, style=LEVEL_STYLE[level])
        kills = self.oom_kills.get(target.key)
        if kills:
            text.append(f" oom×{kills}", style="bold red")
        return text

    def signal_text(self, target: Target) -> Text:
        mine = self.signals.get(target.key)
        if mine is not None:
            name, at, where = mine
            ago = self.clock() - at
        elif target.last_signal is not None:  # sent before this view was listening
            (name, at), where = target.last_signal, "user"
            ago = self.wall() - at
        else:
            return Text("-", style="dim")
        style = "red" if name == target.settings.critical_signal.name else "yellow"
        text = Text(name, style=style)
        text.append(f" {_ago(ago)}" + (" (kernel)" if where == "kernel" else ""))
        return text

    def footer(self) -> list[RenderableType]:
        parts: list[RenderableType] = []
        for name, unopened in sorted(self.engine.watchlist.unopened.items()):
            parts.append(Text(f"cannot read {name}: {unopened.why}", style="red"))
        if self.log_lines:
            parts.append(Text(""))
        for line in self.log_lines:
            parts.append(Text(line, style="dim", no_wrap=True, overflow="ellipsis"))
        return parts

    def renderable(self) -> RenderableType:
        return Group(self.header(), self.table(), *self.footer())

    @contextlib.contextmanager
    def capturing_logs(self) -> Iterator[None]:
        """oomhero's log lines into the view (formatted as set up), instead of the terminal."""
        handlers = list(log.LOGGER.handlers)
        formatter = handlers[0].formatter if handlers else None
        handler = _ViewLogHandler(self)
        if formatter is not None:
            handler.setFormatter(formatter)
        log.LOGGER.handlers[:] = [handler]
        try:
            yield
        finally:
            log.LOGGER.handlers[:] = handlers


class _ViewLogHandler(logging.Handler):
    def __init__(self, view: TopView) -> None:
        super().__init__()
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        self.view.log_lines.append(self.format(record))  # shown at the next redraw


# -- pieces ----------------------------------------------------------------------------------
def bar(percent: float | None, warning: float, critical: float, level: Level) -> Text:
    """``BAR_WIDTH`` cells of 5 % each: filled up to ``percent`` (a cell counts once usage
    passes its middle), the cells holding the warning and critical thresholds marked │ in
    yellow and red (┃ where filled)."""
    if percent is None:
        return Text("·" * BAR_WIDTH, style="dim")
    filled = sum(1 for i in range(BAR_WIDTH) if (i + 0.5) * 100 / BAR_WIDTH < percent)
    marks = {_cell(warning): "yellow", _cell(critical): "red"}  # critical wins a shared cell
    colour = LEVEL_STYLE[level].split()[-1]
    text = Text()
    for i in range(BAR_WIDTH):
        if i in marks:
            if i < filled:  # (its own colour could vanish on a bar of the same colour)
                text.append("┃", style=f"bold bright_white on {colour}")
            else:
                text.append("│", style=f"bold {marks[i]}")
        elif i < filled:
            text.append("█", style=colour)
        else:
            text.append("·", style="dim")
    return text


def _cell(threshold: float) -> int:
    return min(BAR_WIDTH - 1, max(0, int(threshold * BAR_WIDTH / 100)))


def sparkline(history, now: float, warning: float, critical: float) -> Text:
    """The last ``HISTORY`` seconds in ``SPARK_WIDTH`` cells: each the highest percent sampled
    in its slot, 0–100 % of the limit as ▁ to █; a slot without a sample repeats the one
    before; blank before the first sample."""
    slot = HISTORY / SPARK_WIDTH
    start = now - HISTORY
    peaks: list[float | None] = [None] * SPARK_WIDTH
    for at, percent in history:
        if at < start:
            continue
        i = min(SPARK_WIDTH - 1, int((at - start) / slot))
        peaks[i] = percent if peaks[i] is None else max(peaks[i], percent)
    text = Text()
    previous: float | None = None
    for peak in peaks:
        value = peak if peak is not None else previous
        if value is None:
            text.append(" ")
            continue
        previous = value
        char = SPARKS[min(len(SPARKS) - 1, max(0, int(value * len(SPARKS) / 100)))]
        style = "red" if value >= critical else "yellow" if value >= warning else "green"
        text.append(char, style=style)
    return text


def _some_avg10(reader) -> float | None:
    pressure = getattr(reader, "pressure", None)
    if pressure is None:
        return None
    return (pressure() or {}).get("some", {}).get("avg10")


def _one_decimal(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _mib(value: int) -> str:
    mib = value / MIB
    return f"{mib:.1f}" if mib < 10 else f"{mib:.0f}"


def _differs(own, default) -> bool:
    fields = ("warning", "critical", "warning_signal", "critical_signal")
    return any(getattr(own, f) != getattr(default, f) for f in fields)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
