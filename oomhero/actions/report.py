"""The loop's log lines: one per state change, signal or problem, each problem said once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.kernel.procfs import current_comm
from oomhero.policy import Decision

if TYPE_CHECKING:
    import signal

    from oomhero.kernel.kmsg import OomVictim
    from oomhero.kernel.procfs import TrackedProcess
    from oomhero.targets import Target

MIB = 1024 * 1024
_NOTE = {"jumped": " (skipped warning)", "pressure": " (memory pressure)"}


class Report:
    def __init__(self) -> None:
        self.said: set[str] = set()  # engine-wide notes already logged

    def once(self, target: Target, what: str, level: int, msg: str, **fields: object) -> None:
        """Log ``msg`` for this target unless ``what`` was said since it was last cleared."""
        if what not in target.said:
            target.said.add(what)
            log.event(level, msg, target=target.name, **fields)

    def clear(self, target: Target, what: str) -> None:
        """``what`` is over: say it again if it comes back."""
        target.said.discard(what)

    def once_globally(self, what: str, msg: str, **fields: object) -> None:
        if what not in self.said:
            self.said.add(what)
            log.event(logging.INFO, msg, **fields)

    def globally(self, msg: str, **fields: object) -> None:
        log.event(logging.INFO, msg, **fields)

    def sampled(self, fields: dict[str, object], next_in: float, rate: float) -> None:
        if log.debugging():
            log.event(
                logging.DEBUG,
                "sampled",
                **fields,
                next_in=round(next_in, 4),
                rate_mib_s=round(rate / MIB, 1),
            )

    def level_changed(self, decision: Decision, fields: dict[str, object]) -> None:
        rose = decision.level > decision.previous
        verb = "rose to" if rose else "fell to"
        msg = f"{verb} {decision.level.label}{_NOTE.get(decision.reason, '')}"
        log.event(logging.WARNING if rose else logging.INFO, msg, **fields)

    def not_sent_dry_run(
        self, about: dict[str, object], threshold: str, reason: str, fields: dict[str, object]
    ) -> None:
        """The line a signal would have had, under --dry-run."""
        said = {"threshold": threshold, "reason": reason, **fields, "dry_run": True}
        log.event(logging.WARNING, "signal not sent: dry run", **about, **said)

    def oom_killed(
        self,
        target: Target,
        victims: int,
        total: int | None,
        named: list[OomVictim],
        why: str | None,
    ) -> None:
        """The kernel's OOM kill: the processes it killed as the kernel names them (pid in the
        host's PID namespace), or why they are unknown; never the container's top process."""
        if named:
            about: dict[str, object] = {"victim_pid": named[0].pid, "victim_comm": named[0].comm}
            if len(named) > 1:  # memory.oom.group: the whole group
                about["other_victims"] = ",".join(f"{v.pid}({v.comm})" for v in named[1:])
        else:
            about = {"victim": "unknown", "why": why or "no OOM record in the kernel's log"}
        log.event(
            logging.ERROR, "oom kill", target=target.name, victims=victims, total=total, **about
        )


def about_process(process: TrackedProcess, sig: signal.Signals) -> dict[str, object]:
    """A signal line's words on its process: the name it has now (an exec renames it)."""
    return {"pid": process.pid, "comm": current_comm(process.info), "signal": sig.name}
