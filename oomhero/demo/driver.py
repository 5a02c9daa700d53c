"""``oomhero demo``: the bloat app under a memory limit, watched by oomhero, end to end.

It shows the whole path on any Linux: warning signal → the app frees memory; critical signal →
the app's /healthz turns 500; SIGTERM → the app exits 0. Where no cgroup v2 memory controller can
be used, the limit is a soft one on the app's RSS (said so at the start).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from oomhero.config import WatchSettings
from oomhero.engine import Engine
from oomhero.targets import launched as runner

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port: int) -> int | None:
    # Imported here (urllib brings http.client and ssl): every oomhero command imports the demo.
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def run_demo(memory: int, rate: int, settings: WatchSettings, timeout: float) -> int:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="oomhero-demo-") as tmp:
        events_path = os.path.join(tmp, "bloat-events.jsonl")
        command = [
            sys.executable,
            "-m",
            "oomhero.demo.bloat",
            "--rate",
            str(rate),
            "--port",
            str(port),
            "--events",
            events_path,
            "--shed-on-critical",  # so the 500 is still there to see after the signal
        ]
        placement = runner.start(command, memory, stdout=subprocess.DEVNULL)
        print(
            f"demo: bloat app (pid {placement.process.pid}) grows {rate / MIB:.0f} MiB/s "
            f"toward a {memory / MIB:.0f} MiB limit; /healthz on 127.0.0.1:{port}"
        )
        if placement.enforced:
            print(f"demo: limit enforced by the kernel: {placement.why}")
        else:
            print(f"demo: SOFT LIMIT (process RSS, not enforced): {placement.why}")
        print(
            f"demo: oomhero signals {settings.warning_signal.name} at {settings.warning:g}% and "
            f"{settings.critical_signal.name} at {settings.critical:g}%",
            flush=True,
        )
        deadline = time.monotonic() + timeout
        unhealthy = False

        def done() -> bool:
            nonlocal unhealthy
            unhealthy = unhealthy or healthz(port) == 500
            return unhealthy or placement.process.poll() is not None or time.monotonic() > deadline

        try:
            with Engine(placement.scanner, settings, rescan_interval=0.5) as engine:
                engine.run(until=done)
        finally:
            code = placement.finish()
        events = _read_events(events_path)
    return _summarise(events, settings, unhealthy, code)


def _read_events(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def _summarise(events: list[dict], settings: WatchSettings, unhealthy: bool, code: int) -> int:
    received: dict[str, dict] = {}
    for e in events:  # the first of each signal
        if e["event"] == "signal":
            received.setdefault(e["signal"], e)
    warning = received.get(settings.warning_signal.name)
    critical = received.get(settings.critical_signal.name)
    ok = True
    if warning:
        print(f"demo: ✓ bloat got {warning['signal']} and freed {warning['freed'] / MIB:.0f} MiB")
    else:
        ok = False
        print(f"demo: ✗ bloat never got {settings.warning_signal.name}")
    if critical and unhealthy:
        print(f"demo: ✓ bloat got {critical['signal']}; its /healthz answered 500")
    else:
        ok = False
        print(
            f"demo: ✗ bloat's /healthz never turned 500 ({settings.critical_signal.name} "
            f"{'received' if critical else 'not received'})"
        )
    if code == 0:
        print("demo: ✓ SIGTERM → bloat exited 0")
    else:
        ok = False
        print(f"demo: ✗ bloat ended with exit code {code}")
    print("demo: " + ("done: both signals handled before the limit" if ok else "FAILED"))
    return 0 if ok else 1
