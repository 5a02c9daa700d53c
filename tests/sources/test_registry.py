"""The wake-up sources behind one interface: what each says of a cgroup that lacks what it
waits on, asked of the cgroup (``offers``), never of its version. Synthetic trees: the real
sources are tested in the guest (tests/real_kernel/test_sources.py)."""

from dataclasses import replace

import pytest

from oomhero.config import WatchSettings
from oomhero.kernel.cgroup import CgroupDir
from oomhero.sources import SOURCES, probe
from tests.helpers import v1_dir, v2_dir

pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")

WITHOUT_EBPF = WatchSettings(sources=("inotify", "psi", "eventfd"))


@pytest.fixture
def opened():
    dirs = []

    def open_dir(path, version):
        dirs.append(CgroupDir.open(str(path), version))
        return dirs[-1]

    yield open_dir
    for cgroup in dirs:
        cgroup.close()


def test_a_v1_cgroup_offers_thresholds_only_and_the_v2_sources_say_why_not(tmp_path, opened):
    cgroup = opened(v1_dir(tmp_path / "cg"), 1)
    assert cgroup.offers("cgroup.event_control") and not cgroup.offers("memory.events")
    active, missing = probe(cgroup, WITHOUT_EBPF)
    # eventfd is tried: this tree has no cgroup.event_control to write (a real one does).
    assert not active and "cgroup.event_control" in missing.pop("eventfd")
    assert missing == {
        "inotify": "cgroup v1 has no memory.events to watch",
        "psi": "cgroup v1 has no per-cgroup memory.pressure",
    }


def test_a_v2_cgroup_has_no_v1_thresholds_and_psi_off_is_said_first(tmp_path, opened):
    cgroup = opened(v2_dir(tmp_path / "cg"), 2)
    active, missing = probe(cgroup, replace(WITHOUT_EBPF, psi=None))
    assert "eventfd" not in active
    assert missing["eventfd"] == "eventfd thresholds are a cgroup v1 feature"
    assert missing["psi"] == "turned off (--psi off)"


def test_every_source_is_found_by_its_name_and_names_its_doctor_line():
    for name, source in SOURCES.items():
        assert source.name == name
        assert source.check  # the doctor line its verdict reads
