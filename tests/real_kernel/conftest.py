"""Guest tests keep what explains a failure: the test's temp dir (oomhero's logs, the apps'
events, each container's output) is copied to test-results/guest-logs/<test>/, which the guest
writes to the host's checkout. The last lines of each are also printed with the failure, so a
CI run's output alone explains it."""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

import pytest

from tests.helpers import tail
from tests.real_kernel.kit.guest import REPO

KEPT = REPO / "test-results" / "guest-logs"
LARGEST = 4 << 20  # a log worth reading; a sparse test file is not


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or report.failed:
        item.stash.setdefault(_FAILED, False)
        item.stash[_FAILED] |= report.failed
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(tmp_path, Path):
        for path in _logs(tmp_path):
            report.sections.append((f"last lines of {path.relative_to(tmp_path)}", tail(path)))


def _logs(tmp_path: Path) -> list[Path]:
    """The test's small regular files (logs, events), not its sparse or special ones."""
    kept = []
    for path in sorted(tmp_path.rglob("*")):
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_blocks * 512 <= LARGEST:
            kept.append(path)
    return kept


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def keep_logs_on_failure(request: pytest.FixtureRequest, tmp_path: Path):
    yield
    if not request.node.stash.get(_FAILED, False):
        return
    where = KEPT / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
    for path in _logs(tmp_path):
        target = where / path.relative_to(tmp_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
