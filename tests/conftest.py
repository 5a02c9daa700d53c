"""Guest markers: tests marked guest_v2 / guest_v1 touch real cgroups and run only inside the
qemu guest (guest/run), booted with that cgroup layout. Outside it they skip; inside it a skip is
a failure, so a guest run can never pass by skipping."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from oomhero import log
from oomhero.kernel import cgroupfs
from tests import synthetic_cgroupfs as synthetic
from tests.helpers import Recorder

GUEST_MARKERS = ("guest_v2", "guest_v1")


def guest_version() -> str | None:
    """v2 or v1 when this is the oomhero test guest (its kernel command line says so)."""
    try:
        with open("/proc/cmdline") as f:
            words = f.read().split()
    except OSError:
        return None
    for word in words:
        if word.startswith("oomhero.guest="):
            return word.split("=", 1)[1]
    return None


def _guest_markers(item: pytest.Item) -> set[str]:
    return {m.name for m in item.iter_markers() if m.name in GUEST_MARKERS}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    version = guest_version()
    if version is None:
        skip = pytest.mark.skip(
            reason="touches real cgroups: runs only in the qemu guest (make test)"
        )
        for item in items:
            if _guest_markers(item):
                item.add_marker(skip)
        return
    kept, dropped = [], []
    for item in items:
        (kept if f"guest_{version}" in _guest_markers(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if guest_version() and report.skipped and _guest_markers(item):
        report.outcome = "failed"
        report.longrepr = f"a guest test skipped inside the guest: {report.longrepr}"


@pytest.fixture
def synthetic_cgroupfs():
    """Plain directories under the temp dir taken for cgroupfs (parsing and policy tests)."""
    before = synthetic.accept()
    yield
    cgroupfs.CGROUP_MAGIC.update(before)


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
