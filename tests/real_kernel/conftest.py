"""Guest tests keep what explains a failure: the test's temp dir (oomhero's logs, the apps'
events, each container's output) is copied to test-results/guest-logs/<test>/, which the guest
writes to the host's checkout."""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

import pytest

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


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def keep_logs_on_failure(request: pytest.FixtureRequest, tmp_path: Path):
    yield
    if not request.node.stash.get(_FAILED, False):
        return
    where = KEPT / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
    for path in sorted(tmp_path.rglob("*")):
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_blocks * 512 <= LARGEST:
            target = where / path.relative_to(tmp_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
