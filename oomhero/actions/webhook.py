"""``--webhook URL``: a JSON POST per threshold crossing, beside the signals, never before them.

The engine's thread only puts the body in a bounded queue; a daemon thread delivers it and
retries with exponential backoff. A slow or dead endpoint therefore costs the loop nothing: when
the queue is full, the newest body is dropped and counted (said once in the log).

An attempt is bounded as a whole: the name lookup, the connection, the TLS handshake, the
request and the answer's last byte all fit in ``--webhook-timeout``; at the deadline its socket
is shut down, whatever it is doing (a socket timeout alone restarts at every byte a trickling
server sends). Redirects are never followed: a 3xx is a failed delivery, logged with its status
(the alert must not be re-sent as a GET, nor to a host nobody configured). The proxy env vars
(``HTTPS_PROXY``, ``NO_PROXY``…) apply, as in every HTTP client.

The body (README, "Webhook body"): ``version`` (1; a change that breaks a reader bumps it),
``target``, ``level``, ``reason``, ``usage``, ``limit``, ``percent``, ``source``, ``time``.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from oomhero import __version__, log
from oomhero.actions.listener import Listener
from oomhero.config import ConfigError
from oomhero.policy import Decision

if TYPE_CHECKING:
    from oomhero.sampler import Sample
    from oomhero.targets import Target

QUEUE_SIZE = 256
BACKOFF = 0.5  # seconds before the first retry, doubled for each next one
BODY_VERSION = 1
MAX_ANSWER = 64 * 1024  # bytes of an answer read (and dropped); the rest is not waited for
MAX_WHY = 200  # characters of an error's text in the log line
# Statuses worth another attempt: the endpoint is overloaded or failing for now.
RETRIED = {408, 429} | set(range(500, 600))


class Webhook(Listener):
    """An engine listener that posts crossings to ``url``.

    ``headers`` go with every delivery; ``authorization`` gives the Authorization header's
    value at each delivery (a token file read again, so a rotated Secret is used) or None."""

    def __init__(
        self,
        url: str,
        timeout: float,
        retries: int,
        headers: tuple[tuple[str, str], ...] = (),
        authorization: Callable[[], str] | None = None,
    ) -> None:
        self.url, self.timeout, self.retries = url, timeout, retries
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"oomhero/{__version__}",
            **dict(headers),
        }
        self.authorization = authorization
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_SIZE)
        self.delivered = self.failed = self.dropped = 0
        self._closing = threading.Event()  # set by close(): no more retries or backoff waits
        self._thread = threading.Thread(
            target=self._deliver_forever, name="oomhero-webhook", daemon=True
        )
        self._thread.start()

    def crossed(self, target: Target, sample: Sample, decision: Decision, source: str) -> None:
        body = {
            "version": BODY_VERSION,
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
            try:
                self._deliver(body)
            except Exception as exc:  # a bug costs one body and one line, never the thread
                self.failed += 1
                log.event(logging.ERROR, "webhook delivery failed", url=self.url, why=repr(exc))
            self.queue.task_done()
        self.queue.task_done()

    def _deliver(self, body: bytes) -> None:
        headers = dict(self.headers)
        try:
            if self.authorization is not None:
                headers["Authorization"] = self.authorization()
        except ConfigError as exc:  # the token file went away or went bad
            self._failed(0, None, str(exc))
            return
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        for attempt in range(1, self.retries + 2):
            status, why, again = _post(request, self.timeout)
            if status is not None and 200 <= status < 300:
                self.delivered += 1
                return
            if not again or attempt > self.retries:
                break
            if self._closing.wait(BACKOFF * 2 ** (attempt - 1)):
                break
        self._failed(attempt, status, why)

    def _failed(self, attempts: int, status: int | None, why: str) -> None:
        self.failed += 1
        log.event(
            logging.WARNING,
            "webhook delivery failed",
            url=self.url,
            attempts=attempts,
            status=status,
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


def _post(request: urllib.request.Request, timeout: float) -> tuple[int | None, str, bool]:
    """One attempt: (the HTTP status or None, why it failed, whether to try again)."""
    attempt = _Attempt(timeout)
    opener = urllib.request.build_opener(
        _NoRedirects(), _BoundedHTTP(attempt), _BoundedHTTPS(attempt)
    )
    try:
        with opener.open(request, timeout=timeout) as reply:
            reply.read(MAX_ANSWER)
            return reply.status, "", False
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            return exc.code, f"HTTP {exc.code}: redirects are not followed", False
        return exc.code, f"HTTP {exc.code}", exc.code in RETRIED
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        if attempt.over():
            return None, f"no complete answer within {timeout:g}s", True
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        # Bounded: http.client quotes what the server sent (a status line of up to 64 KiB).
        return None, (str(why) or type(why).__name__)[:MAX_WHY], True
    finally:
        attempt.end()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


class _Attempt:
    """One attempt's deadline. Each socket it opens is shut down when the deadline passes, from
    a timer thread; a duplicate of its descriptor is kept for that, as TLS takes the socket
    object over (the shutdown reaches the connection through any descriptor of it)."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def over(self) -> bool:
        return self.expired or time.monotonic() >= self.deadline

    def left(self) -> float:
        if self.over():
            raise TimeoutError("the attempt's time is up")
        return self.deadline - time.monotonic()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def connect(self, address: tuple[str, int], *_ignored: object) -> socket.socket:
        """http.client's socket.create_connection, within the deadline: the name looked up
        in a thread that is not waited for past it, each address tried with what is left."""
        host, port = address
        error: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, where in _look_up(host, port, self.left()):
            sock = socket.socket(family, kind, proto)
            try:
                with self._lock:
                    if self.expired:
                        raise TimeoutError("the attempt's time is up")
                    self._sockets.append(socket.socket(fileno=os.dup(sock.fileno())))
                sock.settimeout(self.left())
                sock.connect(where)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error

    def end(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


# One name lookup at a time: getaddrinfo cannot be interrupted, so a lookup that outlives its
# attempt is left to finish in its thread, and the next attempt fails at once until it has.
_LOOKING_UP = threading.Lock()


def _look_up(host: str, port: int, within: float) -> list:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # a literal: no lookup
    if not _LOOKING_UP.acquire(blocking=False):
        raise TimeoutError(f"an earlier lookup of {host} has not finished")
    answer: list = []
    done = threading.Event()

    def look_up() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA refuses
            answer.append(OSError(str(exc)) if isinstance(exc, UnicodeError) else exc)
        finally:
            _LOOKING_UP.release()
            done.set()

    threading.Thread(target=look_up, name="oomhero-webhook-dns", daemon=True).start()
    if not done.wait(within):
        raise TimeoutError(f"looking up {host} took longer than the timeout")
    if isinstance(answer[0], OSError):
        raise answer[0]
    return answer[0]


def _bounded(base: type[http.client.HTTPConnection], attempt: _Attempt) -> type:
    class Bounded(base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = attempt.connect

    return Bounded


class _BoundedHTTP(urllib.request.HTTPHandler):
    def __init__(self, attempt: _Attempt) -> None:
        super().__init__()
        self.connection = _bounded(http.client.HTTPConnection, attempt)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.connection, req)


class _BoundedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, attempt: _Attempt) -> None:
        super().__init__()
        self.connection = _bounded(http.client.HTTPSConnection, attempt)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.connection, req, context=self._context)
