"""Log lines, one per state change, signal or problem: logfmt or JSON, one line each, always.

- text: logfmt as go-logfmt writes it (what Loki, Vector, Promtail and ``hl`` parse):
  ``time=… level=warning msg="signal sent" pid=42 comm="my app"``. A value is quoted when it
  holds a space, ``=``, ``"``, a backslash or anything unprintable, and escaped inside (``\\n``,
  ``\\"``, ``\\u001b``…): a process or cgroup name cannot start a line of its own. ``true``,
  ``false``, ``null``; a dict's items become ``key.item=…``, a list one comma-joined value.
- json: one object per line: ``time`` (RFC 3339, UTC, milliseconds), ``level`` (lower case),
  ``severity`` (upper case, as Cloud Logging reads it), ``msg``, then the fields; non-finite
  numbers become strings (JSON has none).

Names read from the kernel are bytes; a byte that is not UTF-8 (decoded with surrogateescape)
shows as the four characters ``\\xNN`` in both formats, as the kernel's own logs write it.
Where the lines go (stdout in the container modes, stderr for commands run by hand) is the
caller's choice: ``setup(stream=…)``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import re
import sys
import time
from typing import TextIO

LOGGER = logging.getLogger("oomhero")
RESERVED = ("time", "level", "severity", "msg")  # a field of these names is written as field_*
# What go-logfmt quotes (a byte at or below space, =, ", U+FFFD), and a backslash and any
# unprintable character besides: the value then reads the same in every parser and terminal.
_NEEDS_QUOTES = re.compile(r'[\x00-\x20="\\\x7f-\x9f\ufffd]|[^\x00-\x7f]')
_KEY_UNSAFE = re.compile(r'[\x00-\x20="\\\x7f-\x9f]|[^\x00-\x7f]')
_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8, surrogateescaped


def readable(text: str) -> str:
    """``text`` with each byte that was not UTF-8 (a surrogateescape) as ``\\xNN``. A regex
    scan: every field of every line passes here, and a per-character loop cost more than the
    rest of the line."""
    if not _ESCAPED_BYTE.search(text):
        return text
    return _ESCAPED_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def logfmt_value(value: object) -> str:
    """One value as a logfmt token (go-logfmt's conventions: ``null``, ``true``, ``false``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    text = _text(value)
    if text == "null" or text == "" or _NEEDS_QUOTES.search(text):
        return _quote(text)
    return text


def _quote(text: str) -> str:
    out = []
    for ch in text:
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif ch.isprintable() and not "\ud800" <= ch <= "\udfff":
            out.append(ch)
        else:  # a lone surrogate cannot be written as UTF-8: what went through readable() only
            out.append(f"\\u{ord(ch):04x}")
    return '"' + "".join(out) + '"'


def _number(value: int | float) -> str:
    return repr(value) if math.isfinite(value) else str(value)  # nan, inf: strings, not reprs


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="surrogateescape")
    elif isinstance(value, enum.Enum):
        value = value.name
    elif isinstance(value, list | tuple | set | frozenset):
        value = ",".join(_text(item) for item in value)
    return readable(str(value))


def _key(key: object) -> str:
    return _KEY_UNSAFE.sub("_", readable(str(key))) or "_"


def _flat(fields: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for key, value in fields.items():
        name = prefix + _key(key)
        if isinstance(value, dict):
            items += _flat(value, name + ".") or [(name, "")]
        else:
            items.append((name, value))
    return items


def _own(fields: dict[str, object]) -> dict[str, object]:
    """The caller's fields, renamed where they would overwrite the line's own keys."""
    return {(f"field_{k}" if k in RESERVED else k): v for k, v in fields.items()}


def rfc3339(created: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{stamp}.{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = {"time": rfc3339(record.created), "level": record.levelname.lower()}
        try:
            pairs = [*head.items(), ("msg", record.getMessage())]
            pairs += _flat(_own(getattr(record, "fields", {})))
            return " ".join(f"{key}={logfmt_value(value)}" for key, value in pairs)
        except Exception as exc:  # a value whose str() fails: still one line, saying so
            fallback = {**head, "msg": "unloggable line", "error": f"{type(exc).__name__}"}
            return " ".join(f"{key}={logfmt_value(value)}" for key, value in fallback.items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "severity": record.levelname,
        }
        try:
            body = {**head, "msg": record.getMessage(), **_own(getattr(record, "fields", {}))}
            return json.dumps(_jsonable(body), allow_nan=False)
        except Exception as exc:  # a value whose str() fails: still one object, saying so
            return json.dumps({**head, "msg": "unloggable line", "error": type(exc).__name__})


def _jsonable(value: object) -> object:
    if type(value) is str:  # most fields: the quick way
        return readable(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {readable(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    return _text(value)


class _Handler(logging.StreamHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        """A stream that cannot be written (a closed pipe) loses the line, and prints no
        traceback of the logging machinery in its place."""


def setup(
    log_format: str = "text", stream: TextIO | None = None, debug: bool = False
) -> logging.Handler:
    stream = stream or sys.stderr
    encoding = getattr(stream, "encoding", None) or "utf-8"
    if encoding.lower().replace("-", "") != "utf8":
        # A C locale's ASCII stream: a name it cannot encode is escaped, not the line lost.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    # What a line never shows, not gathered for each (the logging HOWTO's "Optimization").
    logging._srcfile = None  # the caller's file and line
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.DEBUG if debug else logging.INFO)
    LOGGER.propagate = False
    return handler


def event(severity: int, msg: str, **fields: object) -> None:
    LOGGER.log(severity, msg, extra={"fields": fields})


def debugging() -> bool:
    return LOGGER.isEnabledFor(logging.DEBUG)
