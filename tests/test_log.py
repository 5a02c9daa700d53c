import io
import json
import logging
import re

import pytest

from oomhero import log


@pytest.fixture
def restore_logger():
    handlers, level = list(log.LOGGER.handlers), log.LOGGER.level
    propagate = log.LOGGER.propagate
    yield
    log.LOGGER.handlers[:] = handlers
    log.LOGGER.setLevel(level)
    log.LOGGER.propagate = propagate


def test_text_lines_are_key_value_with_quoted_spaces(restore_logger):
    stream = io.StringIO()
    log.setup("text", stream)
    log.event(logging.WARNING, "signal sent", pid=42, comm="my app", empty="", percent=80.5)
    (line,) = stream.getvalue().splitlines()
    assert re.fullmatch(
        r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING signal sent pid=42 comm="my app" '
        r'empty="" percent=80.5',
        line,
    )


def test_json_lines_carry_the_fields(restore_logger):
    stream = io.StringIO()
    log.setup("json", stream)
    log.event(logging.INFO, "watching target", target="/pod/app", limit=None)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "info"
    assert record["msg"] == "watching target"
    assert record["target"] == "/pod/app"
    assert record["limit"] is None
    assert isinstance(record["time"], float)


def test_setup_replaces_handlers_and_filters_debug(restore_logger):
    first, second = io.StringIO(), io.StringIO()
    log.setup("json", first)
    log.setup("json", second)
    log.event(logging.DEBUG, "hidden")
    log.event(logging.ERROR, "shown")
    assert first.getvalue() == ""
    assert [json.loads(x)["msg"] for x in second.getvalue().splitlines()] == ["shown"]
