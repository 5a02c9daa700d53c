"""Log lines as text (``key=value``) or JSON, one per state change, signal or problem."""

from __future__ import annotations

import json
import logging
import sys
import time

LOGGER = logging.getLogger("oomhero")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        parts = [stamp, record.levelname, record.getMessage()]
        parts += [f"{k}={_text(v)}" for k, v in fields.items()]
        return " ".join(parts)


def _text(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": record.created,
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return json.dumps(body, default=str)


def setup(log_format: str = "text", stream=None, debug: bool = False) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.DEBUG if debug else logging.INFO)
    LOGGER.propagate = False


def event(severity: int, msg: str, **fields: object) -> None:
    LOGGER.log(severity, msg, extra={"fields": fields})


def debugging() -> bool:
    return LOGGER.isEnabledFor(logging.DEBUG)
