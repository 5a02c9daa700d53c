import io
import json
import logging
import re

import logfmtkv
import pytest

from oomhero import log

# Names a process or a container can give itself: each must come back unchanged from a parser,
# on one line. Bytes that are not UTF-8 arrive as surrogateescapes and read back as \xNN.
HOSTILE = {
    "newline": ("app\nlevel=error msg=forged", "app\nlevel=error msg=forged"),
    "quote": ('say "hi"', 'say "hi"'),
    "escape": ("\x1b[31mred\x1b[0m", "\x1b[31mred\x1b[0m"),
    "space": ("my app", "my app"),
    "equals": ("a=b", "a=b"),
    "backslash": ("C:\\tmp\\", "C:\\tmp\\"),
    "carriage return": ("ok\rFAKE", "ok\rFAKE"),
    "DEL and C1": ("a\x7fb\x9bc", "a\x7fb\x9bc"),
    "right-to-left override": ("evil\u202etxt", "evil\u202etxt"),
    "not UTF-8": (b"bad\xff\xfe".decode(errors="surrogateescape"), "bad\\xff\\xfe"),
    "empty": ("", ""),
    "the word null": ("null", "null"),
}


@pytest.fixture
def restore_logger():
    handlers, level = list(log.LOGGER.handlers), log.LOGGER.level
    propagate = log.LOGGER.propagate
    yield
    log.LOGGER.handlers[:] = handlers
    log.LOGGER.setLevel(level)
    log.LOGGER.propagate = propagate


def _lines(log_format: str, *events: tuple) -> list[str]:
    stream = io.StringIO()
    log.setup(log_format, stream)
    for level, msg, fields in events:
        log.event(level, msg, **fields)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("name", HOSTILE)
def test_text_is_logfmt_that_round_trips_hostile_names(restore_logger, name):
    given, expected = HOSTILE[name]
    (line,) = _lines("text", (logging.WARNING, "signal sent", {"comm": given, "target": given}))
    assert line.isprintable(), line  # nothing for a terminal to act on, no second line
    record = logfmtkv.parse(line, strict=True, duplicates="error")  # go-logfmt's rules
    assert record["comm"] == expected and record["target"] == expected
    assert record["level"] == "warning" and record["msg"] == "signal sent"


def test_text_lines_carry_time_level_msg_and_plain_values(restore_logger):
    fields = {"pid": 42, "percent": 80.5, "uncaught": False, "total": None, "why": "no limit"}
    (line,) = _lines("text", (logging.WARNING, "signal sent", fields))
    assert re.fullmatch(
        r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=warning msg=\"signal sent\" "
        r'pid=42 percent=80.5 uncaught=false total=null why="no limit"',
        line,
    ), line


def test_text_flattens_dicts_and_never_writes_a_python_repr(restore_logger):
    fields = {
        "samples_by_wakeup": {"inotify": 3, "adaptive poll": 2},
        "sources": ("inotify", "psi"),
        "ratio": float("nan"),
        "level": "mine",  # would overwrite the line's own level
    }
    (line,) = _lines("text", (logging.INFO, "oomhero stopped", fields))
    record = logfmtkv.parse(line, strict=True, duplicates="error")
    assert record["samples_by_wakeup.inotify"] == "3"
    assert record["samples_by_wakeup.adaptive_poll"] == "2"
    assert record["sources"] == "inotify,psi"
    assert record["ratio"] == "nan"
    assert record["level"] == "info" and record["field_level"] == "mine"
    for repr_leak in ("None", "False", "{", "(", "'"):
        assert repr_leak not in line, line


def test_json_lines_have_rfc3339_times_and_the_agents_field_names(restore_logger):
    (line,) = _lines("json", (logging.WARNING, "watching target", {"target": "/pod/app"}))
    record = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    assert record["level"] == "warning" and record["severity"] == "WARNING"
    assert record["msg"] == "watching target" and record["target"] == "/pod/app"


@pytest.mark.parametrize("name", HOSTILE)
def test_json_is_one_object_per_line_for_hostile_names(restore_logger, name):
    given, expected = HOSTILE[name]
    events = [(logging.ERROR, "oom kill", {"victim_comm": given, "limit": None}), (20, "next", {})]
    lines = _lines("json", *events)
    assert len(lines) == 2 and all(line.isascii() and line.isprintable() for line in lines)
    record = json.loads(lines[0])
    assert record["victim_comm"] == expected and record["limit"] is None


def test_json_survives_what_json_cannot_say(restore_logger):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("no")

    fields = {"ratio": float("inf"), "counts": {1: {"a": b"\xff"}}, "when": Unprintable()}
    lines = _lines("json", (logging.INFO, "odd", fields), (logging.INFO, "after", {}))
    first, second = (json.loads(line) for line in lines)  # allow_nan off: strict JSON only
    assert first["msg"] == "unloggable line" and first["error"] == "RuntimeError"
    assert second["msg"] == "after"
    (line,) = _lines("json", (logging.INFO, "odd", {k: fields[k] for k in ("ratio", "counts")}))
    assert json.loads(line)["ratio"] == "inf"
    assert json.loads(line)["counts"] == {"1": {"a": "\\xff"}}
    (text,) = _lines("text", (logging.INFO, "odd", {"when": Unprintable()}))
    assert logfmtkv.parse(text, strict=True)["msg"] == "unloggable line"


def test_a_closed_stream_loses_the_line_without_a_traceback(restore_logger, capsys):
    stream = io.StringIO()
    log.setup("json", stream)
    stream.close()
    log.event(logging.ERROR, "nowhere to go")
    assert capsys.readouterr().err == ""


def test_setup_replaces_handlers_and_filters_debug(restore_logger):
    first, second = io.StringIO(), io.StringIO()
    log.setup("json", first)
    log.setup("json", second)
    log.event(logging.DEBUG, "hidden")
    log.event(logging.ERROR, "shown")
    assert first.getvalue() == ""
    assert [json.loads(x)["msg"] for x in second.getvalue().splitlines()] == ["shown"]
