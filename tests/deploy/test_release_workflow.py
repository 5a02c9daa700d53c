"""The release workflow (.github/workflows/release.yml), which runs only where a registry is
reachable: valid against GitHub's workflow schema (check-jsonschema's copy, offline), and doing
what a release must: test first, both images for both architectures, pushed, signed by digest,
with no more permission than each job needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.test_deploy import FINAL_STAGES, global_args
from tests.helpers import REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_valid_against_the_workflow_schema():
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert exe, "check-jsonschema comes with the dev extra"
    result = subprocess.run(
        [exe, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_tests_then_builds_both_targets_for_both_arches_pushes_and_signs():
    flow = workflow()
    assert flow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key "on" as True
    assert flow["permissions"] == {"contents": "read"}
    jobs = flow["jobs"]
    assert jobs["image"]["needs"] == "test"
    assert "make lint test-host" in [s.get("run") for s in jobs["test"]["steps"]]
    image = jobs["image"]
    assert image["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    targets = {entry["target"] for entry in image["strategy"]["matrix"]["include"]}
    assert targets == set(FINAL_STAGES)
    steps = {s.get("id") or s.get("name"): s for s in image["steps"]}
    build = steps["build"]["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64" and build["push"] is True
    # The labels' build arguments, as deploy/build-image passes them.
    assert {a.split("=")[0] for a in build["build-args"].splitlines()} == {
        "VERSION",
        "REVISION",
        "SOURCE",
    }
    # The Dockerfile's pinned bases are what it builds from: no DEBIAN / DISTROLESS override.
    assert not set(global_args()) & {a.split("=")[0] for a in build["build-args"].splitlines()}
    sign = steps["Sign (by digest)"]
    assert sign["run"] == 'cosign sign --yes "${IMAGE}@${DIGEST}"'
    assert sign["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
