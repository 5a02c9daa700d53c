"""What `make image` writes, as a user gets it: each archive loaded by `podman load` into a
storage of its own (not the build's, which the other image tests share), named as the manifests
name it, labelled, and run from there; its Docker index (manifest.json) consistent with its OCI
one; imported into containerd as `kind load image-archive` does; and each image within its
size budget. (Docker's own `docker load` is not run: no Docker engine in the guest; its index is
checked against the OCI one.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time

import pytest

import oomhero
from tests.image import podman as pm

pytestmark = pytest.mark.guest_v2

VERSION = oomhero.__version__
IMAGES = {  # archive → (name, budget in MiB for the image, uncompressed)
    f"oomhero-{VERSION}.tar": (f"localhost/oomhero:{VERSION}", 56),
    f"oomhero-ebpf-{VERSION}.tar": (f"localhost/oomhero-ebpf:{VERSION}", 172),
}
MIB = 1 << 20


def sizes() -> dict[str, tuple[int, int]]:
    """deploy/build-image's sizes.txt: name → (archive bytes, image bytes)."""
    lines = (pm.ARCHIVES / "sizes.txt").read_text().splitlines()
    return {name: (int(packed), int(unpacked)) for name, packed, unpacked in map(str.split, lines)}


@pytest.mark.parametrize("archive", sorted(IMAGES))
def test_image_within_its_size_budget(archive):
    # Before rich and pygments left the image (the cli extra): the sidecar was 64.4 MiB, the
    # eBPF one 179.6 MiB (archives 22.9 and 60.8 MiB).
    name, budget = IMAGES[archive]
    packed, unpacked = sizes()[name]
    pm.note(f"{name}: image {unpacked / MIB:.1f} MiB, archive {packed / MIB:.1f} MiB")
    assert unpacked <= budget * MIB, f"{name}: {unpacked / MIB:.1f} MiB, budget {budget} MiB"
    assert (pm.ARCHIVES / archive).stat().st_size == packed


@pytest.mark.parametrize("archive", sorted(IMAGES))
def test_archive_indexes_agree(archive):
    """manifest.json (Docker's load) names the same config and layers as index.json (OCI:
    podman, containerd, kind) and both carry the name."""
    name, _ = IMAGES[archive]
    with tarfile.open(pm.ARCHIVES / archive) as tar:
        members = set(tar.getnames())
        index = json.load(tar.extractfile("index.json"))
        (docker,) = json.load(tar.extractfile("manifest.json"))
        (entry,) = index["manifests"]
        digest = entry["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest}"))
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == name
    assert entry["annotations"]["io.containerd.image.name"] == name
    assert docker["RepoTags"] == [name]
    assert docker["Config"] == "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]
    assert docker["Layers"] == [
        "blobs/sha256/" + layer["digest"].split(":")[1] for layer in manifest["layers"]
    ]
    assert {"oci-layout", docker["Config"], *docker["Layers"]} <= members


def test_archives_load_into_podman_and_run(tmp_path):
    """Into an empty storage, as on a node that never saw the image."""
    storage = tmp_path / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp_path}/graph"\n'
        f'runroot = "/run/oomhero-archive"\n'
    )
    env = {"CONTAINERS_STORAGE_CONF": str(storage)}
    for archive, (name, _) in sorted(IMAGES.items()):
        started = time.monotonic()
        loaded = pm.podman("load", "-i", str(pm.ARCHIVES / archive), env=env, timeout=600)
        pm.note(f"podman load {archive}: {time.monotonic() - started:.1f} s")
        assert f"Loaded image: {name}" in loaded.stdout, loaded.stdout
        labels = json.loads(
            pm.podman("image", "inspect", name, "--format", "{{json .Labels}}", env=env).stdout
        )
        assert labels["org.opencontainers.image.version"] == VERSION, labels
        assert labels["org.opencontainers.image.licenses"] == "MIT", labels
        assert labels["org.opencontainers.image.revision"] not in ("", "unknown"), labels
        assert "stand-in" not in json.dumps(labels), labels
        run = pm.podman("run", "--rm", "--network", "none", name, "--version", env=env)
        assert run.stdout.strip() == f"oomhero {VERSION}", run.stdout + run.stderr


@pytest.fixture
def containerd(tmp_path):
    """A containerd of its own (root, state and socket under tmp_path), its CRI plugin off."""
    if not shutil.which("containerd"):
        pytest.fail("containerd is missing (apt-get install containerd; .ci/run installs it)")
    config = tmp_path / "config.toml"
    socket = tmp_path / "containerd.sock"
    config.write_text(
        f'version = 2\nroot = "{tmp_path}/root"\nstate = "/run/oomhero-containerd"\n'
        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\naddress = "{socket}"\n'
    )
    log = open(tmp_path / "containerd.log", "w")
    daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    try:
        pm.wait_for(lambda: ctr(socket, "version", check=False).returncode == 0, 120, "containerd")
        yield socket
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        log.close()
        shutil.copy(tmp_path / "containerd.log", pm.RESULTS / "containerd.log")


def ctr(socket, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["ctr", "--address", str(socket), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert not check or result.returncode == 0, result.stdout + result.stderr
    return result


def test_archive_imports_into_containerd_as_kind_loads_it(containerd):
    """`kind load image-archive` is this on each node: ctr's import into the k8s.io namespace,
    unpacked, under the image's name (from index.json's io.containerd.image.name)."""
    archive = f"oomhero-{VERSION}.tar"
    name, _ = IMAGES[archive]
    started = time.monotonic()
    ctr(containerd, "images", "import", "--all-platforms", "--digests", str(pm.ARCHIVES / archive))
    pm.note(f"ctr images import {archive}: {time.monotonic() - started:.1f} s")
    listed = ctr(containerd, "images", "ls", "--quiet").stdout.split()
    assert name in listed, listed
    checked = ctr(containerd, "images", "check").stdout
    assert f"{name} " in checked and "complete" in checked, checked
