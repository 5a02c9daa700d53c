"""The one epoll every source's file descriptor sits in, and a self-pipe for stop signals."""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable, Iterator

# A clean stop on each. SIGHUP does not reload: the settings are env vars and flags, which no
# one can change in a running process, so there would be nothing new to read.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Epoll:
    """The one epoll of the loop: every source's descriptor, and a pipe that stop signals wake."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.sources: dict[int, object] = {}  # fd → source
        self._signal_pipe = -1

    def add(self, source) -> None:
        """``source`` has name, mask, fileno() and consume() → keys of targets to sample now."""
        self.epoll.register(source.fileno(), source.mask)
        self.sources[source.fileno()] = source

    def remove(self, source) -> None:
        """Idempotent: a source that failed was taken out by ``wait`` already."""
        if self.sources.get(source.fileno()) is source:
            self.epoll.unregister(source.fileno())
            del self.sources[source.fileno()]

    @contextlib.contextmanager
    def stopping_on(
        self, signals: tuple[signal.Signals, ...], stop: Callable[[int, object], None]
    ) -> Iterator[None]:
        """While inside, ``signals`` call ``stop`` and wake ``wait`` at once (set_wakeup_fd)."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(wake_r, select.EPOLLIN)
        self._signal_pipe = wake_r
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {s: signal.signal(s, stop) for s in signals}
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.epoll.unregister(wake_r)
            self._signal_pipe = -1
            os.close(wake_r)
            os.close(wake_w)

    def wait(self, timeout: float) -> list[tuple[object, bool]]:
        """The sources that became ready within ``timeout`` seconds, each with whether its
        descriptor reports an error (EPOLLERR: a PSI trigger of a removed cgroup). Such a source
        is taken out of the epoll at once: level-triggered, it would wake the loop forever."""
        ready = []
        for fd, events in self.epoll.poll(max(0.0, timeout)):
            if fd == self._signal_pipe:
                _drain(fd)
            elif fd in self.sources:
                source = self.sources[fd]
                failed = bool(events & select.EPOLLERR)
                if failed:
                    self.remove(source)
                ready.append((source, failed))
        return ready

    def close(self) -> None:
        self.epoll.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
