"""The image suite's fixture: a clean podman before each test, every container's log after it
(under test-results/image/<test>/), however the test ended; a failed test's report also
carries the last lines of each, taken as it failed, so a CI run's output alone explains it."""

from __future__ import annotations

import pytest

from tests.helpers import tail
from tests.image import podman as pm


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "pods" in item.fixturenames:
        directory = pm.RESULTS / item.name
        try:
            pm.save_logs(directory)
        except Exception as exc:  # the failure itself is reported either way
            report.sections.append(("container logs", f"not saved: {exc!r}"))
            return
        for path in sorted(directory.iterdir()):
            report.sections.append((f"last lines of {path.name}", tail(path)))


@pytest.fixture
def pods(request):
    pm.remove_pods()
    try:
        yield
    finally:
        pm.save_logs(pm.RESULTS / request.node.name)
        pm.remove_pods()
