"""Parsing one user setting's value (an env var or a flag), with its name in every error.

Every setting is parsed here with the name the user gave it (``WARNING`` or ``--warning``), so an
error message can point at the exact setting; nothing is ever silently ignored or defaulted over.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import stat
import urllib.parse
from dataclasses import dataclass

from oomhero.policy import PsiCondition


class ConfigError(ValueError):
    """A setting the user gave is invalid; the message names the setting."""


# Values are taken as given: ASCII digits only (str.isdigit and float() also take "٥٠", "1_0",
# "1e3", " 50 "), nothing around them.
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(rf"({_NUMBER})(us|ms|s|m|h)?")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(rf"({_NUMBER})([a-zA-Z]*)")
MAX_SIZE = 1024**5  # 1024T: more memory than any machine has
MAX_RATE = 1024**4  # 1T/s


def ascii_number(name: str, raw: str, what: str) -> float:
    """An ASCII decimal number, optionally with a fraction; ``what`` says what was expected."""
    if not re.fullmatch(_NUMBER, raw):
        raise ConfigError(f"{name}={raw!r} is not {what}")
    return float(raw)


def _duration_text(seconds: float) -> str:
    for unit in ("h", "m", "s", "ms", "us"):
        if seconds >= _DURATION_UNITS[unit]:
            return f"{seconds / _DURATION_UNITS[unit]:g}{unit}"
    return "0"


def parse_percent(name: str, raw: str) -> float:
    """A share of the memory limit, 0 < value ≤ 100 (a trailing % is allowed)."""
    value = ascii_number(name, raw.removesuffix("%"), "a number (a percent of the limit, 0 to 100)")
    if not 0 < value <= 100:
        raise ConfigError(f"{name}={raw!r} must be above 0 and at most 100 (percent of the limit)")
    return value


def parse_duration(
    name: str, raw: str, least: float = 0.0, most: float = 3600.0, zero: bool = False
) -> float:
    """Seconds from ``500ms``, ``1s``, ``2m``, ``1h``, ``250us`` or a bare number of seconds,
    from ``least`` to ``most`` (and 0 when ``zero``).

    Bare integers are OOMHero's legacy ``COOLDOWN`` format (seconds).
    """
    match = _DURATION_RE.fullmatch(raw)
    if not match:
        raise ConfigError(
            f"{name}={raw!r} is not a duration (use e.g. 500ms, 1s, 2m, or whole seconds)"
        )
    number, unit = match.groups()
    value = float(number) * _DURATION_UNITS[unit or "s"]
    if not least <= value <= most and not (zero and value == 0):
        span = f"from {_duration_text(least)} to {_duration_text(most)}"
        raise ConfigError(f"{name}={raw!r} must be {'0 or ' if zero else ''}{span}")
    return value


def _bytes(name: str, raw: str) -> float:
    match = _SIZE_RE.fullmatch(raw)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ConfigError(f"{name}={raw!r} is not a size (use e.g. 256M, 1G, 512MiB or bytes)")
    return float(match.group(1)) * _SIZE_UNITS[unit]


def parse_size(name: str, raw: str) -> int:
    """Bytes from ``256M``, ``1G``, ``512MiB``, ``4096`` (binary units), up to MAX_SIZE."""
    value = _bytes(name, raw)
    if not 1 <= value <= MAX_SIZE:
        raise ConfigError(f"{name}={raw!r} must be from 1 byte to 1024T")
    return int(value)


def parse_rate(name: str, raw: str) -> int:
    """Bytes per second from ``1G``, ``512M``, ``256M/s``, up to MAX_RATE; ``0`` for none."""
    text = raw.removesuffix("/s")
    value = 0 if text == "0" else _bytes(name, text)
    if not (value == 0 or 1 <= value <= MAX_RATE):
        raise ConfigError(f"{name}={raw!r} must be 0 or from 1 byte/s to 1T/s")
    return int(value)


# Uncatchable (SIGKILL, SIGSTOP) or stopping by default: never handled, or a process frozen.
HARMFUL_SIGNALS = {
    signal.SIGKILL: "cannot be caught",
    signal.SIGSTOP: "cannot be caught",
    signal.SIGTSTP: "stops a process",
    signal.SIGTTIN: "stops a process",
    signal.SIGTTOU: "stops a process",
}


def parse_signal(name: str, raw: str) -> signal.Signals:
    """A signal by name (``SIGUSR1``, ``usr1``) or number (``10``), in ASCII: str.upper() folds
    other letters into ASCII ones (``ſıgusr1`` becomes ``SIGUSR1``)."""
    try:
        if not raw.isascii():
            raise ValueError(raw)
        if re.fullmatch("[0-9]+", raw):
            return signal.Signals(int(raw))
        upper = raw.upper()
        return signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
    except (KeyError, ValueError):
        raise ConfigError(f"{name}={raw!r} is not a signal name or number on this system") from None


def parse_bool(name: str, raw: str) -> bool:
    text = raw.lower() if raw.isascii() else raw
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value (use 1 or 0, true or false)")


def parse_port(name: str, raw: str) -> int:
    if not re.fullmatch("[0-9]{1,5}", raw) or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name}={raw!r} is not a TCP port (1 to 65535)")
    return int(raw)


def parse_count(name: str, raw: str, most: int) -> int:
    if not re.fullmatch("[0-9]+", raw) or int(raw) > most:
        raise ConfigError(f"{name}={raw!r} is not a whole number from 0 to {most}")
    return int(raw)


def parse_address(name: str, raw: str) -> str:
    """An IPv4 or IPv6 address to listen on (no names: nothing to resolve at start)."""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)"
        ) from None


# A host name's characters (RFC 1123; underscores, which real names have, too); IPv6 in [].
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?")


def parse_url(name: str, raw: str) -> str:
    """An http:// or https:// URL with a host and, if any, a port from 1 to 65535; ASCII only
    (percent-encoded, the host punycoded), no spaces or control characters, no user:password@
    (the URL is logged: credentials go in --webhook-token-file or a header)."""

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{name}={raw!r} is not a usable webhook URL: {why}")

    if not raw.isascii() or re.search(r"[\x00-\x20\x7f]", raw):
        raise refuse(
            "spaces, control and non-ASCII characters must be percent-encoded "
            "(and a host name punycoded)"
        )
    try:
        parsed = urllib.parse.urlsplit(raw)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise refuse(str(exc)) from None
    try:
        port = parsed.port  # ValueError when it is not a number from 0 to 65535
    except ValueError:
        raise refuse("the port must be a number from 1 to 65535") from None
    if parsed.scheme not in ("http", "https"):
        raise refuse("the scheme must be http:// or https://")
    host = parsed.hostname
    if not host:
        raise refuse("it names no host")
    if parsed.username is not None or parsed.password is not None:
        raise refuse(
            "user:password@ in a URL is logged with it; give the credential in "
            "--webhook-token-file, OOMHERO_WEBHOOK_TOKEN or --webhook-header instead"
        )
    given_port = re.fullmatch(r"(?:\[[^\]]*\]|[^:]*)(?::([0-9]*))?", parsed.netloc)
    if given_port is None or (given_port.group(1) is not None and not 1 <= (port or 0) <= 65535):
        raise refuse("the port must be a number from 1 to 65535")
    if "[" in parsed.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise refuse(f"[{host}] is not an IPv6 address") from None
    elif (
        not _HOST_NAME.fullmatch(host)
        or len(host) > 253
        or any(not 0 < len(label) <= 63 for label in host.rstrip(".").split("."))
    ):
        raise refuse(f"{host!r} is not a host name or IP address (labels of 1 to 63 characters)")
    return raw


# An HTTP field name (RFC 9110 token), and a value of visible ASCII with inner spaces or tabs.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")
# Set by oomhero for every delivery (the body is JSON of its own length, to its own host).
OWN_HEADERS = ("host", "content-type", "content-length", "transfer-encoding", "connection")


def parse_headers(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    """``Name: value`` headers, one per line (a flag given more than once, or an env var of
    several lines); no header twice, none that oomhero sets itself. A value may be a secret: an
    error names the header, never its value."""
    headers: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(raw.split("\n"), 1):
        field, colon, value = line.partition(":")
        value = value.strip(" \t")
        which = f"{name} (header {number})"
        if not colon or not _HEADER_NAME.fullmatch(field):
            raise ConfigError(
                f"{which} is not 'Name: value' with a name of letters, digits and "
                "!#$%&'*+.^_`|~- (the value is not shown)"
            )
        if not _HEADER_VALUE.fullmatch(value):
            raise ConfigError(
                f"{which}: the value of {field} must be printable ASCII, not empty, on one line "
                "(it is not shown)"
            )
        if field.lower() in OWN_HEADERS:
            raise ConfigError(f"{which}: oomhero sets {field} itself")
        if field.lower() in headers:
            raise ConfigError(f"{which}: {field} is given twice")
        headers[field.lower()] = (field, value)
    return tuple(headers.values())


# RFC 6750's b64token: what a bearer token is made of.
_BEARER = re.compile(r"[A-Za-z0-9._~+/-]+=*")
MAX_TOKEN = 16 * 1024


def parse_token(name: str, raw: str) -> str:
    """A bearer token (RFC 6750 characters); surrounding whitespace, as a file written by hand
    or ``kubectl create secret --from-file`` ends, is not part of it. Never echoed."""
    token = raw.strip()
    if not _BEARER.fullmatch(token):
        raise ConfigError(
            f"{name} is not a bearer token (RFC 6750: letters, digits, -._~+/ and trailing =; "
            f"{len(token)} characters here)"
        )
    return token


def read_token_file(name: str, path: str) -> str:
    """The bearer token in the file at ``path``: a regular file of at most MAX_TOKEN bytes,
    opened without blocking (a FIFO there fails, it does not hang)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"{name}={path!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{name}={path!r} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_TOKEN + 1)
    if len(data) > MAX_TOKEN:
        raise ConfigError(f"{name}={path!r} is longer than a token ({MAX_TOKEN} bytes at most)")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}={path!r} holds bytes that are not ASCII") from None
    return parse_token(f"the token in {name}={path!r}", text)


def parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


SOURCE_NAMES = ("inotify", "psi", "eventfd", "ebpf")
# Every source by default: each one that cannot work here says why once. The eBPF probe loads
# where the privileges are there and the prebuilt CO-RE object loads (a fraction of a second);
# its bcc fallback (a compile at start, LLVM in the process) only when ebpf is asked for.
DEFAULT_SOURCES = SOURCE_NAMES
_PSI_TRIGGER_RE = re.compile(rf"(some|full):({_NUMBER})(us|ms|s)/({_NUMBER})(us|ms|s)")
_PSI_CONDITION_RE = re.compile(rf"(some|full)_(avg10|avg60|avg300) *> *({_NUMBER})")
_MICROSECONDS = {"us": 1, "ms": 1000, "s": 1_000_000}


@dataclass(frozen=True)
class PsiTriggerSpec:
    """A PSI trigger: wake when tasks stalled ``stall_us`` within any ``window_us``."""

    kind: str  # some | full
    stall_us: int
    window_us: int

    def text(self, window_us: int | None = None) -> str:
        return f"{self.kind} {self.stall_us} {window_us or self.window_us}"


DEFAULT_PSI = PsiTriggerSpec("some", 150_000, 1_000_000)


def parse_psi_trigger(name: str, raw: str) -> PsiTriggerSpec | None:
    """``some:150ms/1s`` → a trigger; ``off`` → None."""
    if raw.lower() == "off":
        return None
    match = _PSI_TRIGGER_RE.fullmatch(raw)
    if not match:
        raise ConfigError(f"{name}={raw!r} is not a PSI trigger (use e.g. some:150ms/1s, or off)")
    kind, stall, stall_unit, window, window_unit = match.groups()
    stall_us = int(float(stall) * _MICROSECONDS[stall_unit])
    window_us = int(float(window) * _MICROSECONDS[window_unit])
    if not 500_000 <= window_us <= 10_000_000:
        raise ConfigError(f"{name}={raw!r}: the kernel takes PSI windows from 500ms to 10s")
    if not 0 < stall_us <= window_us:
        raise ConfigError(f"{name}={raw!r}: the stall must be above 0 and within the window")
    return PsiTriggerSpec(kind, stall_us, window_us)


def parse_psi_condition(name: str, raw: str) -> PsiCondition | None:
    """``some_avg10>40`` → a condition; ``off`` → None."""
    if raw.lower() == "off":
        return None
    match = _PSI_CONDITION_RE.fullmatch(raw)
    if not match:
        raise ConfigError(
            f"{name}={raw!r} is not a PSI condition (use e.g. some_avg10>40 or full_avg60>10)"
        )
    kind, window, above = match.groups()
    if not 0 <= float(above) < 100:
        raise ConfigError(f"{name}={raw!r}: PSI averages are percentages, from 0 to below 100")
    return PsiCondition(kind, window, float(above))


def parse_sources(name: str, raw: str) -> tuple[str, ...]:
    """``all``, ``none``, or a comma list of inotify, psi, eventfd, ebpf."""
    text = raw.lower()
    if text == "all":
        return SOURCE_NAMES
    if text == "none":
        return ()
    chosen = tuple(part.strip() for part in text.split(","))
    unknown = [part for part in chosen if part not in SOURCE_NAMES]
    if unknown or not chosen:
        raise ConfigError(
            f"{name}={raw!r}: sources are all, none, or a list of {', '.join(SOURCE_NAMES)}"
        )
    return tuple(dict.fromkeys(chosen))
