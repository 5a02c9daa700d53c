"""An app that reacts to oomhero: SIGUSR1 (warning) drops its cache and stops taking new work,
SIGUSR2 (critical) fails readiness and sheds the work it has. Handlers only set flags: the main
loop acts on them, outside signal context."""

import signal
import time

cache: dict[int, bytes] = {}
state = {"accepting": True, "ready": True}


def on_warning(signum, frame):
    state["accepting"] = False


def on_critical(signum, frame):
    state["ready"] = False


signal.signal(signal.SIGUSR1, on_warning)
signal.signal(signal.SIGUSR2, on_critical)
print("started", flush=True)
said = set()
while True:
    if state["accepting"]:
        cache[len(cache)] = b"x" * 4096  # stands in for serving a request
    elif "warning" not in said:
        dropped, _ = len(cache), cache.clear()
        print(f"warning: dropped {dropped} cache entries, not accepting new work", flush=True)
        said.add("warning")
    if not state["ready"] and "critical" not in said:
        # A real app would answer 500 on its readiness endpoint and drain its queue here.
        print("critical: readiness failing, shedding load", flush=True)
        said.add("critical")
    time.sleep(0.05)
