"""Synthetic cgroup trees (plain directories under the temp dir) accepted as cgroupfs, for tests
of parsing and policy only: ``accept()`` in a test's process, or ``python -m
tests.synthetic_cgroupfs ARGS`` to run the oomhero CLI so. oomhero itself refuses any directory
that is not on cgroupfs (``fstatfs``); that refusal is tested without this."""

from __future__ import annotations

import os
import sys
import tempfile

from oomhero.kernel import cgroupfs


def temp_fs_magic() -> int:
    fd = os.open(tempfile.gettempdir(), os.O_PATH)
    try:
        return cgroupfs.fs_magic(fd)
    finally:
        os.close(fd)


def accept() -> dict[int, int]:
    """Take the temp dir's filesystem for cgroupfs of both versions; returns the table before."""
    before = dict(cgroupfs.CGROUP_MAGIC)
    magic = temp_fs_magic()
    cgroupfs.CGROUP_MAGIC.update({1: magic, 2: magic})
    return before


if __name__ == "__main__":
    accept()
    from oomhero.cli import main

    sys.argv[0] = "oomhero"
    sys.exit(main())
