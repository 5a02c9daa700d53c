"""The loop's log lines: one per state change, signal or problem, each problem said once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.policy import Decision

if TYPE_CHECKING:
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

    def oom_killed(self, target: Target, victims: int, total: int | None) -> None:
        log.event(
            logging.ERROR,
            "oom kill",
            target=target.name,
            victims=victims,
            total=total,
            app=target.main_comm,
        )
