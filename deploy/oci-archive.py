#!/usr/bin/python3
"""Turns an OCI image layout (a directory, as `buildah push IMAGE oci:DIR:NAME` writes it) into
one archive that every engine loads under NAME:

    deploy/oci-archive.py LAYOUT NAME ARCHIVE

It prints "NAME ARCHIVE_BYTES IMAGE_BYTES": the archive's size, and the image's (its layers
uncompressed, as an engine stores them).

- podman load, skopeo: the OCI layout (index.json), named by org.opencontainers.image.ref.name;
- containerd (ctr images import, and so kind load image-archive): the same, named by
  io.containerd.image.name;
- Docker (docker load, before and after 25.0): manifest.json, the docker-archive index, whose
  Config and Layers point at the same blobs (Docker 25's `docker save` writes both the same way).

The tar is reproducible: sorted names, no owners, the epoch as every file's time.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tarfile
from pathlib import Path


def annotate(layout: Path, name: str) -> dict:
    """index.json with the image's name for OCI readers and containerd; returns its manifest."""
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]  # one image per archive
    entry.setdefault("annotations", {}).update(
        {"org.opencontainers.image.ref.name": name, "io.containerd.image.name": name}
    )
    (layout / "index.json").write_text(json.dumps(index, separators=(",", ":")))
    return json.loads(blob(layout, entry["digest"]).read_text())


def blob(layout: Path, digest: str) -> Path:
    algorithm, _, value = digest.partition(":")
    return layout / "blobs" / algorithm / value


def docker_manifest(layout: Path, manifest: dict, name: str) -> list[dict]:
    def path(digest: str) -> str:
        return str(blob(layout, digest).relative_to(layout))

    return [
        {
            "Config": path(manifest["config"]["digest"]),
            "RepoTags": [name],
            "Layers": [path(layer["digest"]) for layer in manifest["layers"]],
        }
    ]


def unpacked_size(layout: Path, manifest: dict) -> int:
    total = 0
    for layer in manifest["layers"]:
        gzipped = layer["mediaType"].endswith("+gzip")
        with (gzip.open if gzipped else open)(blob(layout, layer["digest"]), "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def write(layout: Path, extra: dict[str, bytes], archive: Path) -> None:
    def member(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o644
        return info

    files = {str(p.relative_to(layout)): p for p in layout.rglob("*") if p.is_file()}
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted([*files, *extra]):
            if name in extra:
                tar.addfile(member(name, len(extra[name])), io.BytesIO(extra[name]))
            else:
                with files[name].open("rb") as f:
                    tar.addfile(member(name, files[name].stat().st_size), f)
    partial.replace(archive)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: deploy/oci-archive.py LAYOUT NAME ARCHIVE", file=sys.stderr)
        return 2
    layout, name, archive = Path(argv[0]), argv[1], Path(argv[2])
    manifest = annotate(layout, name)
    extra = {"manifest.json": json.dumps(docker_manifest(layout, manifest, name)).encode()}
    write(layout, extra, archive)
    print(name, archive.stat().st_size, unpacked_size(layout, manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
