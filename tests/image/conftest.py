"""The image suite's fixture: a clean podman before each test, every container's log after it
(under test-results/image/<test>/), however the test ended."""

from __future__ import annotations

import pytest

from tests.image import podman as pm


@pytest.fixture
def pods(request):
    pm.remove_pods()
    try:
        yield
    finally:
        pm.save_logs(pm.RESULTS / request.node.name)
        pm.remove_pods()
