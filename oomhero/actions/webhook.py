"""``--webhook URL``: a JSON POST per threshold crossing, beside the signals, never before them.

The engine's thread only puts the body in a bounded queue; a daemon thread delivers it with a
timeout and retries with exponential backoff. A slow or dead endpoint therefore costs the loop
nothing: when the queue is full, the newest body is dropped and counted (said once in the log).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from oomhero import log
from oomhero.actions.listener import Listener
from oomhero.policy import Decision

if TYPE_CHECKING:
    from oomhero.sampler import Sample
    from oomhero.targets import Target

QUEUE_SIZE = 256
BACKOFF = 0.5  # seconds before the first retry, doubled for each next one


class Webhook(Listener):
    """An engine listener that posts crossings to ``url``."""

    def __init__(self, url: str, timeout: float, retries: int) -> None:
        self.url, self.timeout, self.retries = url, timeout, retries
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_SIZE)
        self.delivered = self.failed = self.dropped = 0
        self._closing = threading.Event()  # set by close(): no more retries or backoff waits
        self._thread = threading.Thread(
            target=self._deliver_forever, name="oomhero-webhook", daemon=True
        )
        self._thread.start()

    def crossed(self, target: Target, sample: Sample, decision: Decision, source: str) -> None:
        body = {
            "target": target.name,
            "level": decision.signal.label,
            "reason": decision.reason,
            "usage": sample.memory.current,
            "limit": sample.memory.limit,
            "percent": round(sample.percent, 2),
            "source": source,
            "time": time.time(),
        }
        try:
            self.queue.put_nowait(json.dumps(body).encode())
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.event(logging.WARNING, "webhook queue full: dropping bodies", url=self.url)

    def _deliver_forever(self) -> None:
        while (body := self.queue.get()) is not None:
            self._deliver(body)
            self.queue.task_done()
        self.queue.task_done()

    def _deliver(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    reply.read()
                self.delivered += 1
                return
            except (urllib.error.URLError, OSError) as exc:
                why = str(getattr(exc, "reason", exc))
            if attempt < self.retries and self._closing.wait(BACKOFF * 2**attempt):
                break
        self.failed += 1
        log.event(
            logging.WARNING,
            "webhook delivery failed",
            url=self.url,
            attempts=self.retries + 1,
            why=why,
        )

    def close(self, wait: float = 1.0) -> None:
        """Let queued bodies go out for up to ``wait`` seconds, whatever the endpoint does (a
        hanging one is not waited for: the thread is a daemon); what is left is dropped, and
        the closing line counts it."""
        self._closing.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        self._thread.join(wait)
        left = 0
        with contextlib.suppress(queue.Empty):
            while True:
                left += self.queue.get_nowait() is not None
        self.dropped += left
        if self._thread.is_alive():
            self.queue.put_nowait(None)  # for when the delivery in flight gives up
        counts = {"delivered": self.delivered, "failed": self.failed, "dropped": self.dropped}
        in_flight = int(self._thread.is_alive())
        log.event(logging.INFO, "webhook stopped", url=self.url, **counts, in_flight=in_flight)
