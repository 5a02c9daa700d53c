from __future__ import annotations

import io
import subprocess
import sys

import pytest

from oomhero import log

from .helpers import Recorder


@pytest.fixture
def recorder(tmp_path):
    child = Recorder(tmp_path)
    yield child
    child.stop()


@pytest.fixture
def sleeper():
    """A live child process that does nothing (killed at teardown)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


@pytest.fixture
def json_log():
    """oomhero's log set to JSON into a StringIO; the logger is restored afterwards."""
    handlers, level, propagate = list(log.LOGGER.handlers), log.LOGGER.level, log.LOGGER.propagate
    stream = io.StringIO()
    log.setup("json", stream)
    yield stream
    log.LOGGER.handlers[:] = handlers
    log.LOGGER.setLevel(level)
    log.LOGGER.propagate = propagate
