"""`oomhero watch` (or another engine command) as a process logging JSON to a file.

The container modes (node, sidecar) log to stdout, the commands run by hand to stderr: the file
takes both, so a traceback on either shows up as a line that is not JSON."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.real_kernel.kit.cgroups import Cgroup
from tests.real_kernel.kit.guest import read_jsonl, wait_for
from tests.real_kernel.kit.processes import oomhero


class Watcher:
    """`oomhero watch` on cgroups, logging JSON to a file; stop() returns the log records."""

    def __init__(
        self,
        cgroups: list[Cgroup],
        log: Path,
        *flags: str,
        uid: int | None = None,
        command: tuple[str, ...] = ("watch",),
        expect: int | None = None,
        prefix: tuple[str, ...] = (),
    ):
        """``command`` replaces ``watch CGROUPS...`` (e.g. a node agent); ``expect`` is how many
        targets to wait for (default: one per cgroup); ``prefix`` runs it through a command
        (e.g. one that hides a file in a new mount namespace)."""
        self.log = log
        as_user = (
            [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        )
        targets = [str(c.path) for c in cgroups] if command == ("watch",) else []
        argv = oomhero(*command, *targets, "--log-format", "json", *flags)
        self.process = subprocess.Popen(
            [*prefix, *as_user, *argv], stdout=open(log, "w"), stderr=subprocess.STDOUT
        )
        wanted = len(cgroups) if expect is None else expect
        wait_for(
            lambda: len(self.records("watching target")) == wanted,
            60,
            "oomhero to watch every cgroup",
        )

    def records(self, msg: str | None = None) -> list[dict]:
        records = read_jsonl(self.log)
        return records if msg is None else [r for r in records if r.get("msg") == msg]

    def stop(self) -> list[dict]:
        if self.process.poll() is None:
            self.process.terminate()
        assert self.process.wait(timeout=60) == 0, "oomhero did not stop cleanly"
        records = self.records()
        assert not [r for r in records if "raw" in r], [r for r in records if "raw" in r]
        return records
